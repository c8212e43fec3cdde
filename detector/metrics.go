package detector

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Results of a webhook delivery, the result label of
// flowpipeline_detector_webhook_alerts_total.
const (
	WebhookDelivered = "delivered" // answered 2xx
	WebhookFailed    = "failed"    // every retry failed
	WebhookDropped   = "dropped"   // the queue was full
)

type metrics struct {
	flowsIn       prometheus.Counter
	dropped       [numDrops]prometheus.Counter
	invalid       *prometheus.CounterVec
	zeroRate      prometheus.Counter
	evictions     prometheus.Counter
	targetsFull   prometheus.Counter
	active        *prometheus.GaugeVec
	alerts        *prometheus.CounterVec
	delay         prometheus.Histogram
	txns          *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	webhook       *prometheus.CounterVec
	webhookErrors prometheus.Counter
	eventTime     prometheus.Gauge
	paused        prometheus.Gauge
	ready         prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "flowpipeline", "detector"
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "flows_dropped_total",
		Help: "Decoded flows not counted, by reason: late (before the oldest open step), future (time_received after the wall clock plus the allowed skew), no_time, bad_address."}, []string{"reason"})
	m := &metrics{
		flowsIn: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "flows_in_total",
			Help: "Flows counted, in committed transactions (an aborted transaction's flows are read again and counted once)."}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_invalid_total",
			Help: "Input records that do not frame or decode, by reason (the flows before the bad frame count)."}, []string{"reason"}),
		zeroRate: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "flows_zero_sampling_rate_total",
			Help: "Flows with sampling_rate 0, counted as sampled 1:1."}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "target_evictions_total",
			Help: "Tracked destinations replaced by a heavier one because the table (Config.Targets) was full."}),
		targetsFull: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "targets_full_total",
			Help: "Destinations not tracked because every sampled tracked one was in an attack."}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "active_attacks",
			Help: "Attacks in progress, by vector."}, []string{"vector"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "alerts_total",
			Help: "Alerts written in committed transactions, by event (start, update, end) and vector."}, []string{"event", "vector"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "detection_delay_seconds",
			Help:    "Wall-clock time of the commit of a start alert minus the event time the attack began (the start of its first step above the threshold).",
			Buckets: []float64{1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 60, 120, 300}}),
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "transactions_total",
			Help: "Kafka transactions ended, by result: committed or aborted."}, []string{"result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "reloads_total",
			Help: "Loads of the thresholds file, by result (ok, error); on error the previous thresholds stay."}, []string{"result"}),
		webhook: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "webhook_alerts_total",
			Help: "Alerts for the webhook, by result: delivered, failed (every retry failed), dropped (queue full)."}, []string{"result"}),
		webhookErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "webhook_errors_total",
			Help: "Webhook POSTs that failed (each retry counts)."}),
		eventTime: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "closed_step_timestamp_seconds",
			Help: "Event time up to which steps are decided (Unix seconds)."}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "paused_partitions",
			Help: "Partitions not fetched because they ran ahead of the others in event time (watermark alignment); their records already read wait."}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "ready",
			Help: "1 once the detector reached Kafka and consumes, 0 otherwise."}),
	}
	for i, r := range DropReasons {
		m.dropped[i] = dropped.WithLabelValues(r)
	}
	for _, r := range pb.FrameReasons {
		m.invalid.WithLabelValues(r)
	}
	for _, v := range vectorNames {
		m.active.WithLabelValues(v)
		for _, ev := range []string{EventStart, EventUpdate, EventEnd} {
			m.alerts.WithLabelValues(ev, v)
		}
	}
	for _, r := range []string{"committed", "aborted"} {
		m.txns.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.reloads.WithLabelValues(r)
	}
	for _, r := range []string{WebhookDelivered, WebhookFailed, WebhookDropped} {
		m.webhook.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.flowsIn, dropped, m.invalid, m.zeroRate, m.evictions, m.targetsFull,
			m.active, m.alerts, m.delay, m.txns, m.reloads, m.webhook, m.webhookErrors, m.eventTime, m.paused, m.ready} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register the detector metrics: %w", err)
			}
		}
	}
	return m, nil
}

// addCounts adds an engine's counts.
func (m *metrics) addCounts(c Counts) {
	m.flowsIn.Add(float64(c.Flows))
	for i, n := range c.Dropped {
		if n > 0 {
			m.dropped[i].Add(float64(n))
		}
	}
	m.zeroRate.Add(float64(c.ZeroSamplingRate))
	m.evictions.Add(float64(c.Evictions))
	m.targetsFull.Add(float64(c.TargetsFull))
}
