package inserter

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
)

// handler is the sarama ConsumerGroupHandler: one ConsumeClaim goroutine
// per partition decodes records into batches while the writers commit the
// previous ones, so decoding and writing overlap.
type handler struct {
	in     *Inserter
	runCtx context.Context
}

// Setup moves every claimed partition to the offset stored in PostgreSQL
// before its claim starts. sarama's ResetOffset only moves back and
// MarkOffset only forward; calling both makes the stored offset win either
// way. A partition with nothing stored starts at the oldest record.
func (h *handler) Setup(sess sarama.ConsumerGroupSession) error {
	in := h.in
	stored, err := in.sink.StoredOffsets(sess.Context(), in.cfg.Topic)
	if err != nil {
		in.countPGError(err)
		return fmt.Errorf("read the stored offsets from PostgreSQL: %w", err)
	}
	for topic, partitions := range sess.Claims() {
		for _, p := range partitions {
			off, ok := stored[p]
			if !ok || topic != in.cfg.Topic {
				if off, err = in.client.GetOffset(topic, p, sarama.OffsetOldest); err != nil {
					return fmt.Errorf("find the oldest offset of %s/%d: %w", topic, p, err)
				}
			}
			sess.ResetOffset(topic, p, off, "")
			sess.MarkOffset(topic, p, off, "")
		}
	}
	if !in.kafkaUp.Swap(true) {
		in.updateReady()
	}
	in.logger.Info("partitions assigned", "claims", sess.Claims(), "generation", sess.GenerationID())
	return nil
}

// Cleanup runs after every claim returned; their batches are already
// queued or dropped (stored offsets are the truth, nothing is lost).
func (h *handler) Cleanup(sess sarama.ConsumerGroupSession) error {
	for topic, partitions := range sess.Claims() {
		for _, p := range partitions {
			h.in.m.lag.DeleteLabelValues(topic, strconv.Itoa(int(p)))
		}
	}
	return nil
}

// claimState is shared between a claim and the writer.
type claimState struct {
	sess sarama.ConsumerGroupSession
	// restart asks the claim to end its session, so the partition resumes
	// from the offset stored in PostgreSQL.
	restart atomic.Bool
}

// ConsumeClaim decodes a partition's records into batches and queues each
// batch for the writer when it is full or FlushInterval old.
func (h *handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	in := h.in
	topic, part := claim.Topic(), claim.Partition()
	dec := in.newDecoder()
	state := &claimState{sess: sess}
	b := in.getBatch(topic, part)
	b.Start = claim.InitialOffset()
	dropped := false
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	// A batch of junk only has offsets to commit; bound it all the same.
	maxRecords := max(in.cfg.FlushCount, 1000)

	queue := func(final bool) {
		if b.Records() == 0 {
			return
		}
		b.HighWater = claim.HighWaterMarkOffset()
		b.Owner = state
		in.m.recordsConsumed.Add(float64(b.Records()))
		in.m.zeroSampling.Add(float64(dec.ZeroSampling))
		dec.ZeroSampling = 0
		var timeout <-chan time.Time
		var revoked <-chan struct{}
		if final && h.runCtx.Err() == nil {
			// Rebalance: hand the partial batch over if the writer can take
			// it soon; otherwise drop it, the next owner re-reads it.
			timeout = time.After(5 * time.Second)
		} else if !final {
			revoked = sess.Context().Done()
		}
		// On shutdown (final, runCtx done) wait: the writer drains the
		// queue until Run closes it, within ShutdownTimeout.
		end := b.End // b belongs to the writer once sent
		select {
		case in.queueFor(part) <- b:
			b = in.getBatch(topic, part)
			b.Start = end
			return
		case <-revoked:
		case <-timeout:
		}
		// A claim must never queue a batch after dropping one: that batch
		// would skip the dropped records.
		in.logger.Info("dropping an unqueued batch; the partition's next owner re-reads it", "topic", topic, "partition", part, "records", b.Records())
		b.Reset(topic, part)
		dropped = true
	}

	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				queue(true)
				return nil
			}
			if dropped || state.restart.Load() {
				return nil
			}
			if _, err := dec.Decode(msg.Value, msg.Offset, b); err != nil {
				in.reject(msg, err)
			}
			b.SetSource(msg) // for the dead-letter topic if PostgreSQL refuses it
			if b.Records() == 1 {
				timer.Reset(in.cfg.FlushInterval)
			}
			if b.Flows() >= in.cfg.FlushCount || b.Records() >= maxRecords {
				timer.Stop()
				queue(false)
			}
		case <-timer.C:
			queue(false)
			if dropped {
				return nil
			}
		case <-sess.Context().Done():
			queue(true)
			return nil
		}
	}
}

// reject counts a record that will not be stored, logs it at a limited
// rate and copies it to the dead-letter topic if configured.
func (in *Inserter) reject(msg *sarama.ConsumerMessage, err error) {
	reason := Reason(err)
	in.m.recordsInvalid.WithLabelValues(reason).Inc()
	in.invalid.log(reason, "rejected invalid Kafka record", "topic", msg.Topic, "partition", msg.Partition, "offset", msg.Offset,
		"bytes", len(msg.Value), "error", err)
	if in.dlq == nil {
		return
	}
	_, _, perr := in.dlq.SendMessage(&sarama.ProducerMessage{
		Topic: in.cfg.DLQTopic,
		Key:   sarama.ByteEncoder(msg.Key),
		Value: sarama.ByteEncoder(msg.Value),
		Headers: []sarama.RecordHeader{
			{Key: []byte("reason"), Value: []byte(reason)},
			{Key: []byte("error"), Value: []byte(err.Error())},
			{Key: []byte("source_topic"), Value: []byte(msg.Topic)},
			{Key: []byte("source_partition"), Value: []byte(strconv.Itoa(int(msg.Partition)))},
			{Key: []byte("source_offset"), Value: []byte(strconv.FormatInt(msg.Offset, 10))},
		},
	})
	if perr != nil {
		in.m.dlqErrors.Inc()
		in.invalid.log("dlq", "copying a rejected record to the dead-letter topic failed", "topic", in.cfg.DLQTopic, "error", perr)
		return
	}
	in.m.dlqRecords.Inc()
}

// rateLog logs at most one line per key per interval, with the number of
// occurrences since the previous line, so junk cannot flood the log.
type rateLog struct {
	logger   *slog.Logger
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	count    map[string]int
}

func newRateLog(logger *slog.Logger, interval time.Duration) *rateLog {
	return &rateLog{logger: logger, interval: interval, last: map[string]time.Time{}, count: map[string]int{}}
}

func (r *rateLog) log(key, msg string, args ...any) {
	r.mu.Lock()
	r.count[key]++
	now := time.Now()
	if last, ok := r.last[key]; ok && now.Sub(last) < r.interval {
		r.mu.Unlock()
		return
	}
	n := r.count[key]
	r.count[key] = 0
	r.last[key] = now
	r.mu.Unlock()
	r.logger.Warn(msg, append(args, "reason", key, "occurrences_since_last_log", n)...)
}
