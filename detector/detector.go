// Package detector finds volumetric attacks in the flows: it consumes the
// enriched flows, measures each destination address (and each network of
// the thresholds file) per step of event time (time_received), split by
// attack vector and scaled by the sampling rate, and writes an alert when
// a threshold holds for Config.StartSteps steps, updates while the attack
// lasts and an end when it has stayed below for Config.EndAfter. The
// alerts and the consumed offsets commit in one Kafka transaction, so a
// read_committed reader sees each alert once.
//
// Event time: a step closes once the watermark, the least of the
// partitions' newest time_received (partitions idle for Config.Idle left
// out, never more than Config.MaxSkew behind the newest flow), is
// Config.Lateness past its end; flows of a closed step are dropped
// (counted, reason late). A consumer catching up reads each partition a
// fetch at a time, so the partitions would drift apart: watermark
// alignment pauses a partition more than MaxSkew/2 ahead of the slowest
// and holds its records already read until the others catch up (see
// aligner). When no flow arrives for Config.Idle, the watermark advances
// with the wall clock, so attacks end when the traffic stops. Nothing else
// depends on the wall clock: a replay gives the same alerts, with the
// same ids.
//
// One instance: the flows of a target are spread over every partition, so
// one detector must read them all. Run one instance per consumer group.
package detector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/internal/kafka"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Detector is the consume-detect-produce loop.
type Detector struct {
	cfg    Config
	logger *slog.Logger
	m      *metrics
	th     *thresholdsLoader
	eng    *Engine // the live state
	snap   *Engine // the state at the last commit
	hook   *webhook
	ready  atomic.Bool
	// assigned hands the partitions assigned (a client goroutine) to the loop.
	assigned atomic.Pointer[map[string][]int32]
	mu       sync.Mutex
	active   []Alert
}

// New validates cfg and loads the thresholds file (an error if it does not
// load: there is nothing to fall back on); nothing connects before Run.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	th, err := newThresholdsLoader(cfg.ThresholdsFile, cfg.PollInterval, logger, func(ok bool) {
		if ok {
			m.reloads.WithLabelValues("ok").Inc()
		} else {
			m.reloads.WithLabelValues("error").Inc()
		}
	})
	if err != nil {
		return nil, err
	}
	d := &Detector{cfg: cfg, logger: logger, m: m, th: th}
	if d.eng, err = NewEngine(cfg, th.current()); err != nil {
		return nil, err
	}
	if d.snap, err = NewEngine(cfg, th.current()); err != nil {
		return nil, err
	}
	if cfg.Webhook != "" {
		d.hook = newWebhook(cfg.Webhook, m, logger)
	}
	return d, nil
}

// Ready reports whether the detector reached Kafka and consumes.
func (d *Detector) Ready() bool { return d.ready.Load() }

// Active returns the attacks in progress as of the last committed
// transaction (event update, figures of the last closed step).
func (d *Detector) Active() []Alert {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Alert(nil), d.active...)
}

// dtxn is the open transaction.
type dtxn struct {
	open       bool
	start      time.Time
	records    int
	invalid    map[string]int
	alerts     []Alert
	produceErr atomic.Pointer[error]
}

// maxTxnRecords commits sooner at this many input records.
const maxTxnRecords = 50000

// Run consumes until ctx ends, then commits the open transaction (within
// Config.ShutdownTimeout) and leaves the group. It returns an error when
// the transaction state is lost (fenced by another instance with the same
// Config.TransactionalID, or Kafka unreachable): the caller should exit and
// be restarted.
func (d *Detector) Run(ctx context.Context) error {
	cfg := d.cfg
	go d.th.run(ctx)
	if d.hook != nil {
		go d.hook.run(ctx)
	}
	opts := kafka.TransactOptions(kafka.TransactSettings{
		ClientID:           "flowpipeline-detector",
		Brokers:            cfg.Brokers,
		Topic:              cfg.Topic,
		Group:              cfg.Group,
		TransactionalID:    cfg.TransactionalID,
		TransactionTimeout: cfg.TransactionTimeout,
		SessionTimeout:     cfg.SessionTimeout,
	})
	// Alerts are keyed by target: Kafka's usual key hash picks the
	// partition, so one target's alerts stay in order.
	opts = append(opts, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		// Small fetches per partition: a consumer catching up reads each
		// partition a few seconds of event time at a time, and holds
		// (aligner) little of what runs ahead.
		kgo.FetchMaxPartitionBytes(256<<10),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
			d.assigned.Store(&assigned)
		}))
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return fmt.Errorf("create the Kafka transactional client (check Config.Brokers): %w", err)
	}
	defer sess.Close()
	if err := kafka.WaitReachable(ctx, sess.Client(), d.cfg.Brokers, d.logger); err != nil {
		return err
	}
	n, err := d.resume(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		d.logger.Info("resumed the attacks in progress from the alerts topic", "attacks", n)
	}
	d.eng.copyTo(d.snap)
	d.publish()
	d.ready.Store(true)
	d.m.ready.Set(1)
	defer func() { d.ready.Store(false); d.m.ready.Set(0) }()
	d.logger.Info("detector consuming", "topic", cfg.Topic, "group", cfg.Group, "alerts", cfg.AlertsTopic, "transactional_id", cfg.TransactionalID)

	t := &dtxn{invalid: map[string]int{}}
	prodCtx := context.WithoutCancel(ctx)
	var msg pb.FlowMessage
	al := newAligner(cfg.alignBound())
	client := sess.Client()
	pause := func(parts []int32) { client.PauseFetchPartitions(map[string][]int32{cfg.Topic: parts}) }
	resume := func(parts []int32) { client.ResumeFetchPartitions(map[string][]int32{cfg.Topic: parts}) }
	count := func(r *kgo.Record, now time.Time) {
		t.records++
		if err := pb.UnmarshalRecord(r.Value, &msg, func(m *pb.FlowMessage) error {
			d.eng.Add(m, r.Partition, now)
			return nil
		}); err != nil {
			reason := pb.FrameReason(err)
			if reason == "" {
				reason = pb.ReasonBadMessage
			}
			t.invalid[reason]++
		}
	}
	produce := func() error {
		for _, a := range d.eng.Alerts() {
			t.alerts = append(t.alerts, a)
			body, err := json.Marshal(a)
			if err != nil {
				return fmt.Errorf("encode an alert: %w", err)
			}
			sess.Produce(prodCtx, &kgo.Record{Topic: cfg.AlertsTopic, Key: []byte(a.Target), Value: body}, func(_ *kgo.Record, err error) {
				if err != nil {
					t.produceErr.CompareAndSwap(nil, &err)
				}
			})
		}
		return nil
	}
	for ctx.Err() == nil {
		wait := cfg.TransactionInterval
		if t.open {
			wait = max(time.Until(t.start.Add(cfg.TransactionInterval)), time.Millisecond)
		}
		pollCtx, cancel := context.WithTimeout(ctx, wait)
		fetches := sess.PollRecords(pollCtx, maxTxnRecords)
		cancel()
		if fetches.IsClientClosed() {
			return errors.New("the Kafka client closed")
		}
		fetches.EachError(func(topic string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				d.logger.Warn("fetch failed; retrying", "topic", topic, "partition", part, "error", err)
			}
		})
		d.eng.SetThresholds(d.th.current())
		now := time.Now()
		if a := d.assigned.Swap(nil); a != nil {
			for _, p := range (*a)[cfg.Topic] {
				d.eng.Assign(p, now)
			}
		}
		var berr error
		begin := func() {
			if !t.open && berr == nil {
				if berr = sess.Begin(); berr == nil {
					t.open, t.start = true, time.Now()
				}
			}
		}
		// Records of a partition running ahead wait (and it is paused)
		// until the others catch up: see aligner.
		if fetches.NumRecords() > 0 {
			begin()
		}
		al.add(fetches)
		al.feed(d.eng, now, false, func(r *kgo.Record) { count(r, now) })
		d.m.paused.Set(float64(al.reconcile(pause, resume)))
		d.eng.Tick(now)
		if len(d.eng.out) > 0 {
			begin()
		}
		if err := produce(); err != nil {
			return err
		}
		if berr != nil {
			return fmt.Errorf("begin a Kafka transaction: %w", berr)
		}
		if t.open && (time.Since(t.start) >= cfg.TransactionInterval || t.records >= maxTxnRecords) {
			ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.TransactionTimeout)
			err := d.end(ectx, sess, t, al)
			cancel()
			if err != nil {
				return err
			}
		}
	}
	if al.heldRecords() > 0 {
		// The held records' offsets are committed: count them now, or a
		// restart would never read them again.
		if !t.open {
			if err := sess.Begin(); err != nil {
				return fmt.Errorf("begin the last Kafka transaction on shutdown: %w", err)
			}
			t.open, t.start = true, time.Now()
		}
		now := time.Now()
		al.feed(d.eng, now, true, func(r *kgo.Record) { count(r, now) })
		if err := produce(); err != nil {
			return err
		}
	}
	if t.open {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		if err := d.end(sctx, sess, t, al); err != nil {
			return fmt.Errorf("commit the last transaction on shutdown: %w", err)
		}
	}
	return nil
}

// end commits the open transaction, or aborts it; on abort the engine goes
// back to the state of the last commit (the records are read again).
func (d *Detector) end(ctx context.Context, sess *kgo.GroupTransactSession, t *dtxn, al *aligner) error {
	commit := sess.Client().Flush(ctx) == nil && t.produceErr.Load() == nil
	committed, err := sess.End(ctx, kgo.TransactionEndTry(commit))
	counts := d.eng.Take()
	if committed {
		now := time.Now()
		d.m.txns.WithLabelValues("committed").Inc()
		d.m.addCounts(counts)
		for r, n := range t.invalid {
			d.m.invalid.WithLabelValues(r).Add(float64(n))
		}
		for _, a := range t.alerts {
			d.m.alerts.WithLabelValues(a.Event, a.Vector).Inc()
			if a.Event == EventStart {
				d.m.delay.Observe(now.Sub(a.first).Seconds())
			}
			if d.hook != nil {
				body, _ := json.Marshal(a)
				d.hook.enqueue(body)
			}
		}
		d.eng.copyTo(d.snap)
		al.save()
		d.publish()
	} else {
		d.m.txns.WithLabelValues("aborted").Inc()
		d.logger.Info("transaction aborted; its records are read again from the last committed state", "records", t.records, "alerts", len(t.alerts), "error", err)
		d.snap.copyTo(d.eng)
		al.restore()
	}
	t.open, t.records = false, 0
	t.alerts = t.alerts[:0]
	clear(t.invalid)
	t.produceErr.Store(nil)
	if err != nil {
		return fmt.Errorf("end the Kafka transaction (another instance with Config.TransactionalID %q, or Kafka unreachable?): %w", d.cfg.TransactionalID, err)
	}
	return nil
}

// publish refreshes Active and the gauges from the committed state.
func (d *Detector) publish() {
	active := d.eng.Active()
	n := d.eng.ActiveCount()
	for v := range NumVectors {
		d.m.active.WithLabelValues(Vector(v).String()).Set(float64(n[v]))
	}
	if d.eng.started {
		d.m.eventTime.Set(float64(d.eng.closed*d.eng.stepNs) / 1e9)
	}
	d.mu.Lock()
	d.active = active
	d.mu.Unlock()
}
