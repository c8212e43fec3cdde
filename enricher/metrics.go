package enricher

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Reasons a record is not enriched but dead-lettered, the reason label of
// flowpipeline_enricher_records_invalid_total: pb's framing reasons, the
// names the inserter counts with too.
const (
	ReasonEmpty      = pb.ReasonEmpty
	ReasonBadLength  = pb.ReasonBadLength
	ReasonTooLarge   = pb.ReasonTooLarge
	ReasonTruncated  = pb.ReasonTruncated
	ReasonBadMessage = pb.ReasonBadMessage
)

var allReasons = pb.FrameReasons

// Reason maps a transform error to its metric label.
func Reason(err error) string {
	if r := pb.FrameReason(err); r != "" {
		return r
	}
	return ReasonBadMessage
}

type metrics struct {
	flowsIn, flowsOut *prometheus.CounterVec
	invalid           *prometheus.CounterVec
	dlq               prometheus.Counter
	txns              *prometheus.CounterVec
	lag               *prometheus.GaugeVec
	ready             prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		flowsIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowpipeline_enricher_flows_in_total",
			Help: "Flows read from the input topic (flows of an aborted transaction are read again and counted again)."}, nil),
		flowsOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowpipeline_enricher_flows_out_total",
			Help: "Flows written to the output topic in committed transactions."}, nil),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowpipeline_enricher_records_invalid_total",
			Help: "Input records that do not decode, by reason, in committed transactions; copied to the dead-letter topic when there is one."}, []string{"reason"}),
		dlq: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowpipeline_enricher_dead_letters_total",
			Help: "Records copied to the dead-letter topic in committed transactions."}),
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowpipeline_enricher_transactions_total",
			Help: "Kafka transactions ended, by result: committed, or aborted (rebalance, fencing, produce error)."}, []string{"result"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flowpipeline_enricher_lag_records",
			Help: "Records of the input partition not read yet, at the last fetch."}, []string{"partition"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowpipeline_enricher_ready",
			Help: "1 once the enricher reached Kafka and consumes, 0 otherwise."}),
	}
	for _, r := range allReasons {
		m.invalid.WithLabelValues(r)
	}
	m.txns.WithLabelValues("committed")
	m.txns.WithLabelValues("aborted")
	m.flowsIn.WithLabelValues()
	m.flowsOut.WithLabelValues()
	if reg != nil {
		for _, c := range []prometheus.Collector{m.flowsIn, m.flowsOut, m.invalid, m.dlq, m.txns, m.lag, m.ready} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register enricher metrics: %w", err)
			}
		}
	}
	return m, nil
}

func partLabel(p int32) string { return strconv.Itoa(int(p)) }
