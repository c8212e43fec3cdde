// Package enricher consumes flow messages from Kafka, adds who the traffic
// is (countries, AS names, networks, exporter and interface metadata; see
// Enrich) and produces the enriched messages to another topic, exactly
// once: the produced records and the consumed offsets commit in one Kafka
// transaction (franz-go's GroupTransactSession, KIP-447 fencing), so
// read_committed readers see each input flow once whatever crashes or
// rebalances.
//
// Partitioning: an output record keeps its input record's key and goes to
// the output partition with the input partition's number, modulo the
// output topic's partition count. With at least as many output partitions
// as input ones, each input partition maps to its own output partition and
// the order of its flows (and so of each exporter's, when the collector
// keys by exporter) is kept.
package enricher

import (
	"context"
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

// Transformer turns an input record value into the output record value.
// It is used by one goroutine.
type Transformer interface {
	// Transform appends the output for value to dst and returns it with
	// the number of flows. An error (wrapping a pb sentinel error) rejects
	// the record whole: it is dead-lettered, nothing of it is produced.
	Transform(dst, value []byte) (out []byte, flows int, err error)
	// EndBatch is called after each transaction, so a transformer can
	// publish counts it batches.
	EndBatch()
}

// Passthrough is the transformer with enrichment off: it decodes every
// message, so it dead-letters exactly the records enrichment would, and
// copies the record value unchanged.
type Passthrough struct{ m pb.FlowMessage }

// Transform implements Transformer.
func (p *Passthrough) Transform(dst, value []byte) ([]byte, int, error) {
	n := 0
	if err := pb.ForEachFrame(value, func(f []byte) error { n++; return p.m.DecodeWire(f) }); err != nil {
		return dst, 0, err
	}
	return append(dst, value...), n, nil
}

// EndBatch implements Transformer.
func (*Passthrough) EndBatch() {}

// Pipeline is the consume-transform-produce loop.
type Pipeline struct {
	cfg    Config
	tr     Transformer
	logger *slog.Logger
	m      *metrics
	ready  atomic.Bool
}

// NewPipeline validates cfg; nothing connects before Run.
func NewPipeline(cfg Config, tr Transformer, logger *slog.Logger, reg prometheus.Registerer) (*Pipeline, error) {
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
	return &Pipeline{cfg: cfg, tr: tr, logger: logger, m: m}, nil
}

// Ready reports whether the pipeline reached Kafka and consumes.
func (p *Pipeline) Ready() bool { return p.ready.Load() }

// txn is the state of the open transaction.
type txn struct {
	open           bool
	start          time.Time
	records, bytes int
	flows          int
	invalid        map[string]int
	dead           int
	produceErr     atomic.Pointer[error]
	arena          []byte // output values of this transaction, reused after it ends
	slab           recordSlab
}

// recordSlab hands out kgo.Records from fixed chunks reused across
// transactions: no allocation per record once warm, and no record moves
// while the client holds a pointer to it.
type recordSlab struct {
	chunks [][]kgo.Record
	n      int
}

const slabChunk = 1024

func (s *recordSlab) get() *kgo.Record {
	c := s.n / slabChunk
	if c == len(s.chunks) {
		s.chunks = append(s.chunks, make([]kgo.Record, slabChunk))
	}
	r := &s.chunks[c][s.n%slabChunk]
	*r = kgo.Record{}
	s.n++
	return r
}

// Run consumes until ctx ends, then commits the open transaction (within
// Config.ShutdownTimeout) and leaves the group. It returns an error when
// the transaction state is lost (fenced by another instance with the same
// Config.TransactionalID, or Kafka unreachable beyond retries): the caller
// should exit and be restarted; nothing is lost or duplicated.
func (p *Pipeline) Run(ctx context.Context) error {
	cfg := p.cfg
	opts := kafka.TransactOptions(kafka.TransactSettings{
		ClientID:           "flowpipeline-enricher",
		Brokers:            cfg.Brokers,
		Topic:              cfg.Topic,
		Group:              cfg.Group,
		TransactionalID:    cfg.TransactionalID,
		TransactionTimeout: cfg.TransactionTimeout,
		SessionTimeout:     cfg.SessionTimeout,
	})
	// A partition that moved to another instance has no lag here.
	opts = append(opts, kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
		for _, part := range revoked[cfg.Topic] {
			p.m.lag.DeleteLabelValues(partLabel(part))
		}
	}))
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return fmt.Errorf("create the Kafka transactional client (check Config.Brokers): %w", err)
	}
	defer sess.Close()
	if err := kafka.WaitReachable(ctx, sess.Client(), p.cfg.Brokers, p.logger); err != nil {
		return err
	}
	p.ready.Store(true)
	p.m.ready.Set(1)
	defer func() { p.ready.Store(false); p.m.ready.Set(0) }()
	p.logger.Info("enricher consuming", "topic", cfg.Topic, "group", cfg.Group, "out", cfg.OutTopic, "transactional_id", cfg.TransactionalID)

	t := &txn{invalid: map[string]int{}}
	// Records outlive ctx: a shutdown commits what was produced.
	prodCtx := context.WithoutCancel(ctx)
	var promiseOnce sync.Once
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			t.produceErr.CompareAndSwap(nil, &err)
			promiseOnce.Do(func() { p.logger.Warn("produce failed; the transaction will abort", "error", err) })
		}
	}
	for ctx.Err() == nil {
		wait := cfg.TransactionInterval
		if t.open {
			wait = max(time.Until(t.start.Add(cfg.TransactionInterval)), time.Millisecond)
		}
		pollCtx, cancel := context.WithTimeout(ctx, wait)
		fetches := sess.PollRecords(pollCtx, cfg.TransactionRecords)
		cancel()
		if fetches.IsClientClosed() {
			return errors.New("the Kafka client closed")
		}
		fetches.EachError(func(topic string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				p.logger.Warn("fetch failed; retrying", "topic", topic, "partition", part, "error", err)
			}
		})
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if n := len(fp.Records); n > 0 {
				end := fp.LastStableOffset
				if end <= 0 {
					end = fp.HighWatermark
				}
				p.m.lag.WithLabelValues(partLabel(fp.Partition)).Set(float64(max(end-fp.Records[n-1].Offset-1, 0)))
			}
		})
		var ferr error
		fetches.EachRecord(func(r *kgo.Record) {
			if ferr != nil {
				return
			}
			if !t.open {
				if ferr = sess.Begin(); ferr != nil {
					return
				}
				t.open, t.start = true, time.Now()
			}
			p.process(t, r, func(rec *kgo.Record) { sess.Produce(prodCtx, rec, promise) })
		})
		if ferr != nil {
			return fmt.Errorf("begin a Kafka transaction: %w", ferr)
		}
		if t.open && (time.Since(t.start) >= cfg.TransactionInterval || t.records >= cfg.TransactionRecords || t.bytes >= cfg.TransactionBytes) {
			// Not cut short by a shutdown: a half-ended transaction is
			// worse than a commit that finishes (bounded by its timeout).
			ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.TransactionTimeout)
			err := p.end(ectx, sess, t)
			cancel()
			if err != nil {
				return err
			}
		}
	}
	if t.open {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		if err := p.end(sctx, sess, t); err != nil {
			return fmt.Errorf("commit the last transaction on shutdown: %w", err)
		}
	}
	return nil
}

// process transforms one input record and produces its output, or its
// dead-letter copy, into the open transaction.
func (p *Pipeline) process(t *txn, r *kgo.Record, produce func(*kgo.Record)) {
	start := len(t.arena)
	out, flows, err := p.tr.Transform(t.arena, r.Value)
	t.records++
	if err != nil {
		t.arena = t.arena[:start]
		reason := Reason(err)
		t.invalid[reason]++
		if p.cfg.DLQTopic == "" {
			return
		}
		t.dead++
		rec := t.slab.get()
		rec.Topic, rec.Key, rec.Value, rec.Partition = p.cfg.DLQTopic, r.Key, r.Value, r.Partition
		rec.Headers = append(rec.Headers[:0],
			kgo.RecordHeader{Key: "reason", Value: []byte(reason)},
			kgo.RecordHeader{Key: "source", Value: fmt.Appendf(nil, "%s/%d/%d", r.Topic, r.Partition, r.Offset)})
		t.bytes += len(r.Value)
		produce(rec)
		return
	}
	p.m.flowsIn.WithLabelValues().Add(float64(flows))
	t.arena = out
	t.flows += flows
	t.bytes += len(out) - start
	rec := t.slab.get()
	rec.Topic, rec.Key, rec.Value, rec.Partition = p.cfg.OutTopic, r.Key, out[start:len(out):len(out)], r.Partition
	produce(rec)
}

// end commits the open transaction, or aborts it when a record failed to
// produce; the session itself aborts when the group rebalanced meanwhile.
// It returns only the errors that leave the transaction state unusable.
func (p *Pipeline) end(ctx context.Context, sess *kgo.GroupTransactSession, t *txn) error {
	commit := true
	if err := sess.Client().Flush(ctx); err != nil {
		commit = false
	}
	if t.produceErr.Load() != nil {
		commit = false
	}
	committed, err := sess.End(ctx, kgo.TransactionEndTry(commit))
	p.tr.EndBatch()
	if committed {
		p.m.txns.WithLabelValues("committed").Inc()
		p.m.flowsOut.WithLabelValues().Add(float64(t.flows))
		for r, n := range t.invalid {
			p.m.invalid.WithLabelValues(r).Add(float64(n))
		}
		p.m.dlq.Add(float64(t.dead))
	} else {
		p.m.txns.WithLabelValues("aborted").Inc()
		p.logger.Info("transaction aborted; its records are read again", "records", t.records, "flows", t.flows, "error", err)
	}
	t.open, t.records, t.bytes, t.flows, t.dead = false, 0, 0, 0, 0
	clear(t.invalid)
	t.produceErr.Store(nil)
	t.arena = t.arena[:0]
	t.slab.n = 0
	if err != nil {
		return fmt.Errorf("end the Kafka transaction (another instance with Config.TransactionalID %q, or Kafka unreachable?): %w", p.cfg.TransactionalID, err)
	}
	return nil
}
