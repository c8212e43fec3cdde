package inserter

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
)

// The alerts consumer: beside the flows, the inserter stores the
// detector's alerts (topic Config.AlertsTopic, JSON records) in the
// alerts table, for the dashboards.
//
// Exactly once, without offsets in PostgreSQL: each alert carries its own
// identity (id, event, at), the table's primary key. Records are stored
// (ON CONFLICT DO NOTHING) before their offsets are committed to Kafka, so
// a crash in between re-delivers them and the second copy changes nothing.
// Alerts are a few records per attack, so one transaction per poll is
// cheap, and the flows' partition-exact bookkeeping is not needed.

// alertsGroupSuffix names the alerts' consumer group after the flows' one
// (Config.Group + "-alerts"): a group of its own, so the flows' offsets in
// PostgreSQL and the alerts' in Kafka never mix.
const alertsGroupSuffix = "-alerts"

// maxAlertsPerTx bounds one transaction when a backlog of alerts waits.
const maxAlertsPerTx = 500

type alertMetrics struct {
	stored    prometheus.Counter
	duplicate prometheus.Counter
	invalid   *prometheus.CounterVec
}

func newAlertMetrics(reg prometheus.Registerer) (*alertMetrics, error) {
	const ns, sub = "flowpipeline", "inserter"
	m := &alertMetrics{
		stored: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "alerts_stored_total",
			Help: "Alerts (detector events) committed to the alerts table."}),
		duplicate: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "alerts_already_stored_total",
			Help: "Alert records delivered again (after a crash or a rebalance) and left out: the table already held them."}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "alerts_invalid_total",
			Help: "Alert records refused, by reason: bad_message (not an alert in JSON), invalid_field, out_of_range."}, []string{"reason"}),
	}
	for _, r := range []string{ReasonBadMessage, ReasonInvalidField, ReasonOutOfRange} {
		m.invalid.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.stored, m.duplicate, m.invalid} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// AlertsStored is the number of alerts this inserter stored.
func (in *Inserter) AlertsStored() uint64 { return in.alertsStored.Load() }

// runAlerts consumes Config.AlertsTopic until ctx ends. Kafka being away,
// or the topic not existing yet (the detector's stack may create it
// later), is retried with backoff and logged, never fatal: the flows go on.
func (in *Inserter) runAlerts(ctx context.Context) {
	group := in.cfg.Group + alertsGroupSuffix
	backoff := in.cfg.RetryMin
	var cg sarama.ConsumerGroup
	var client sarama.Client
	for cg == nil {
		// A client of its own: sarama clients are not shared between
		// consumer groups.
		var err error
		client, err = sarama.NewClient(in.cfg.Brokers, in.saramaConfig())
		if err == nil {
			if cg, err = sarama.NewConsumerGroupFromClient(group, client); err != nil {
				client.Close()
			}
		}
		if err != nil {
			in.m.kafkaErrors.Inc()
			in.logger.Warn("cannot start the alerts consumer; retrying", "topic", in.cfg.AlertsTopic, "error", err, "retry_in", backoff)
			sleep(ctx, backoff)
			if ctx.Err() != nil {
				return
			}
			backoff = min(backoff*2, in.cfg.RetryMax)
		}
	}
	// The group does not close a client it was given.
	defer func() { cg.Close(); client.Close() }()
	go func() {
		for err := range cg.Errors() {
			in.m.kafkaErrors.Inc()
			in.logger.Warn("alerts consumer error; sarama retries", "error", err)
		}
	}()
	h := &alertsHandler{in: in}
	backoff = in.cfg.RetryMin
	var lastWarn time.Time
	for ctx.Err() == nil {
		err := cg.Consume(ctx, []string{in.cfg.AlertsTopic}, h)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			in.m.kafkaErrors.Inc()
			if time.Since(lastWarn) > time.Minute {
				lastWarn = time.Now()
				in.logger.Warn("the alerts consumer cannot consume; retrying (create the topic, or set Config.AlertsTopic empty to store no alerts)",
					"topic", in.cfg.AlertsTopic, "group", group, "error", err)
			}
			sleep(ctx, backoff)
			backoff = min(backoff*2, in.cfg.RetryMax)
			continue
		}
		backoff = in.cfg.RetryMin
	}
}

type alertsHandler struct{ in *Inserter }

func (h *alertsHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *alertsHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim stores what the claim holds, up to maxAlertsPerTx records a
// transaction, and marks their offsets once committed. A failed
// transaction is retried with backoff, forever: PostgreSQL being away
// must not lose alerts, and a record it refuses was already sorted out
// by ValidateAlert.
func (h *alertsHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	in := h.in
	ctx := sess.Context()
	msgs := claim.Messages()
	for {
		var first *sarama.ConsumerMessage
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			first = m
		}
		batch := []*sarama.ConsumerMessage{first}
	more:
		for len(batch) < maxAlertsPerTx {
			select {
			case m, ok := <-msgs:
				if !ok {
					break more
				}
				batch = append(batch, m)
			default:
				break more
			}
		}
		alerts := in.decodeAlerts(batch)
		backoff := in.cfg.RetryMin
		for len(alerts) > 0 {
			n, err := in.sink.StoreAlerts(ctx, alerts)
			if err == nil {
				in.alertsStored.Add(uint64(n))
				in.am.stored.Add(float64(n))
				in.am.duplicate.Add(float64(int64(len(alerts)) - n))
				break
			}
			if ctx.Err() != nil {
				return nil // not marked: read again by the next owner
			}
			in.countPGError(err)
			in.logger.Warn("storing alerts failed; retrying", "error", err, "retry_in", backoff)
			sleep(ctx, backoff)
			backoff = min(backoff*2, in.cfg.RetryMax)
		}
		last := batch[len(batch)-1]
		sess.MarkOffset(last.Topic, last.Partition, last.Offset+1, "")
	}
}

// decodeAlerts returns the alerts of msgs that can be stored; the others
// are counted by reason and logged (at most once per reason per 10 s).
func (in *Inserter) decodeAlerts(msgs []*sarama.ConsumerMessage) []pgsink.Alert {
	out := make([]pgsink.Alert, 0, len(msgs))
	for _, m := range msgs {
		var a pgsink.Alert
		err := json.Unmarshal(m.Value, &a)
		reason := ReasonBadMessage
		if err == nil {
			if err = pgsink.ValidateAlert(&a); errors.Is(err, pgsink.ErrOutOfRange) {
				reason = ReasonOutOfRange
			} else {
				reason = ReasonInvalidField
			}
		}
		if err != nil {
			in.am.invalid.WithLabelValues(reason).Inc()
			in.invalid.log("alert_"+reason, "alert record refused", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "error", err)
			continue
		}
		out = append(out, a)
	}
	return out
}
