package inserter

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Reasons a record is rejected, the reason label of
// flowpipeline_inserter_records_invalid_total.
const (
	// The framing reasons, the same as the enricher's (pb.FrameReason).
	ReasonEmpty      = pb.ReasonEmpty
	ReasonBadLength  = pb.ReasonBadLength
	ReasonTooLarge   = pb.ReasonTooLarge
	ReasonTruncated  = pb.ReasonTruncated
	ReasonBadMessage = pb.ReasonBadMessage

	ReasonInvalidField = "invalid_field" // parses, but a field cannot be stored (see pgsink.ValidateFlow)
	ReasonOutOfRange   = "out_of_range"  // a counter, the sampling rate or a scaled product above its bound
	ReasonTooOld       = "too_old"       // time_received older than -postgres.retention (or before 2000)
	ReasonTooNew       = "too_new"       // time_received further ahead than -flows.max-future
	// ReasonWriteRejected: PostgreSQL refused the record's rows (a data or
	// constraint error validation let through); the rest of its batch is stored.
	ReasonWriteRejected = "write_rejected"
)

// ResetPastEnd is the reason label of offsets_reset_total: the offset
// stored in PostgreSQL was past the partition's newest offset.
const ResetPastEnd = "past_end"

// Reasons a stored flow is not observed in flow_latency_seconds, the
// reason label of flowpipeline_inserter_flow_latency_unobserved_total.
const (
	// LatencyNoTimeReceived: time_received_ns is 0 (validation rejects
	// such flows today; counted should that ever change).
	LatencyNoTimeReceived = "no_time_received"
	// LatencyClockSkew: time_received is after the commit, so the
	// collector's clock is ahead of the inserter's.
	LatencyClockSkew = "clock_skew"
)

// latencyBuckets cover 1 ms to 120 s, finer around the default flush
// interval (1 s), where p50 and p99 usually fall.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 120}

var allReasons = []string{ReasonEmpty, ReasonBadLength, ReasonTooLarge, ReasonTruncated, ReasonBadMessage, ReasonInvalidField,
	ReasonOutOfRange, ReasonTooOld, ReasonTooNew, ReasonWriteRejected}

type metrics struct {
	flowsStored      prometheus.Counter
	recordsConsumed  prometheus.Counter
	recordsInvalid   *prometheus.CounterVec
	recordsSkipped   prometheus.Counter
	zeroSampling     prometheus.Counter
	batchFlows       prometheus.Histogram
	batchSeconds     prometheus.Histogram
	lag              *prometheus.GaugeVec
	pgErrors         *prometheus.CounterVec
	kafkaErrors      prometheus.Counter
	dlqRecords       prometheus.Counter
	dlqErrors        prometheus.Counter
	partitionsDroped prometheus.Counter
	offsetsReset     *prometheus.CounterVec
	ready            prometheus.Gauge
	latency          prometheus.Histogram
	latencySkipped   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "flowpipeline", "inserter"
	m := &metrics{
		flowsStored: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "flows_stored_total",
			Help: "Flows committed to PostgreSQL."}),
		recordsConsumed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_consumed_total",
			Help: "Kafka records read, valid or not."}),
		recordsInvalid: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_invalid_total",
			Help: "Kafka records rejected whole, by reason; none of their flows is stored."}, []string{"reason"}),
		recordsSkipped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_already_stored_total",
			Help: "Records not written because PostgreSQL already held them (a rebalance overlap); proof the duplicate guard worked."}),
		zeroSampling: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "flows_zero_sampling_rate_total",
			Help: "Stored flows whose sampling_rate is 0; queries scale them as 1."}),
		batchFlows: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "batch_size_flows",
			Help: "Flows per committed batch.", Buckets: prometheus.ExponentialBuckets(10, 4, 8)}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "batch_duration_seconds",
			Help: "Time to commit one batch (COPY, rollup, offsets), retries included.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "consumer_lag_records",
			Help: "High water mark minus the next offset committed to PostgreSQL, per owned partition."}, []string{"topic", "partition"}),
		pgErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "postgres_errors_total",
			Help: "Failed PostgreSQL operations, by operation; writes are retried."}, []string{"op"}),
		kafkaErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "kafka_errors_total",
			Help: "Errors from the Kafka consumer group (connection, rebalance); it reconnects."}),
		dlqRecords: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dlq_records_total",
			Help: "Rejected records copied to the dead-letter topic."}),
		dlqErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dlq_errors_total",
			Help: "Failed attempts to copy a rejected record to the dead-letter topic; each is retried, and the partition waits, until it is acknowledged."}),
		partitionsDroped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "partitions_dropped_total",
			Help: "Daily partitions of flows dropped by -postgres.retention."}),
		offsetsReset: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "offsets_reset_total",
			Help: "Partitions whose offset stored in PostgreSQL was reset, by reason: past_end means it was past the topic's newest offset (topic re-created or Kafka data reset) and consumption restarted at the oldest record."},
			[]string{"topic", "reason"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "ready",
			Help: "1 when the schema exists, the consumer group has partitions or is waiting for them, and the last write succeeded."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "flow_latency_seconds",
			Help:    "Per stored flow, the time from its time_received (the collector's stamp) to the commit of the PostgreSQL transaction that stored it.",
			Buckets: latencyBuckets}),
		latencySkipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "flow_latency_unobserved_total",
			Help: "Stored flows left out of flow_latency_seconds, by reason: no_time_received (0), clock_skew (received after the commit: the collector's clock is ahead)."},
			[]string{"reason"}),
	}
	for _, r := range []string{LatencyNoTimeReceived, LatencyClockSkew} {
		m.latencySkipped.WithLabelValues(r)
	}
	for _, r := range allReasons {
		m.recordsInvalid.WithLabelValues(r)
	}
	for _, op := range []string{"connect", "schema", "partition", "write", "offsets", "retention"} {
		m.pgErrors.WithLabelValues(op)
	}
	for _, c := range []prometheus.Collector{m.flowsStored, m.recordsConsumed, m.recordsInvalid, m.recordsSkipped, m.zeroSampling,
		m.batchFlows, m.batchSeconds, m.lag, m.pgErrors, m.kafkaErrors, m.dlqRecords, m.dlqErrors, m.partitionsDroped, m.offsetsReset, m.ready,
		m.latency, m.latencySkipped} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observeLatency observes, for each flow of a transaction that has just
// committed, the time since its time_received_ns. One clock read per
// transaction: the flows committed together.
func (m *metrics) observeLatency(receivedNs []int64, now time.Time) {
	at := now.UnixNano()
	var missing, skew int
	for _, ns := range receivedNs {
		switch {
		case ns <= 0:
			missing++
		case ns > at:
			skew++
		default:
			m.latency.Observe(float64(at-ns) / 1e9)
		}
	}
	if missing > 0 {
		m.latencySkipped.WithLabelValues(LatencyNoTimeReceived).Add(float64(missing))
	}
	if skew > 0 {
		m.latencySkipped.WithLabelValues(LatencyClockSkew).Add(float64(skew))
	}
}
