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
//
// A stored offset past the partition's newest offset means the topic was
// deleted and re-created, or Kafka's data was reset: the stored offsets
// belong to a log that no longer exists. Writing would then skip every new
// record below the stale offset as "already stored". Such a partition is
// logged, counted in offsets_reset_total, and restarted from its oldest
// record, its stored offset moved back in PostgreSQL first.
func (h *handler) Setup(sess sarama.ConsumerGroupSession) error {
	in := h.in
	ctx := sess.Context()
	stored, err := in.sink.StoredOffsets(ctx, in.cfg.Topic)
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
			} else if off, err = in.checkStale(ctx, topic, p, off); err != nil {
				return err
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

// checkStale returns where partition p should resume given its stored
// offset: the stored offset itself, or the partition's oldest offset when
// the stored one is past the newest (see Setup).
func (in *Inserter) checkStale(ctx context.Context, topic string, p int32, stored int64) (int64, error) {
	newest, err := in.client.GetOffset(topic, p, sarama.OffsetNewest)
	if err != nil {
		return 0, fmt.Errorf("find the newest offset of %s/%d: %w", topic, p, err)
	}
	if stored <= newest {
		return stored, nil
	}
	oldest, err := in.client.GetOffset(topic, p, sarama.OffsetOldest)
	if err != nil {
		return 0, fmt.Errorf("find the oldest offset of %s/%d: %w", topic, p, err)
	}
	applied, err := in.sink.ResetOffset(ctx, topic, p, stored, oldest)
	if err != nil {
		in.countPGError(err)
		return 0, err
	}
	if !applied {
		// Another inserter moved it meanwhile: start the session again and
		// look at the new value.
		return 0, fmt.Errorf("the stored offset of %s/%d changed while resetting it; rejoining", topic, p)
	}
	in.m.offsetsReset.WithLabelValues(topic, ResetPastEnd).Inc()
	in.logger.Error("the offset stored in PostgreSQL is past the end of the Kafka partition: the topic was deleted and re-created, or Kafka's data was reset. "+
		"Resuming from the partition's oldest record and storing that offset; check that no other cluster or topic was meant",
		"topic", topic, "partition", p, "stored_next_offset", stored, "newest_offset", newest, "resume_offset", oldest, "group", in.cfg.Group)
	return oldest, nil
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
	// Rejected records of the current batch, sent to the dead-letter topic
	// before the batch (and so its offset) reaches the writer.
	var letters []deadLetter
	// letterBytes and the batch's RawBytes count the record bytes the claim
	// holds: large records close the batch early, so memory stays bounded
	// whatever their size.
	letterBytes := 0
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
		if len(letters) > 0 {
			lctx := sess.Context()
			if final {
				// The session is over (rebalance or shutdown): a short
				// last try, then the next owner re-reads the batch.
				var cancel context.CancelFunc
				lctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
			}
			err := in.sendDeadLetters(lctx, letters)
			clear(letters) // let the record values go
			letters, letterBytes = letters[:0], 0
			if err != nil {
				in.logger.Warn("dropping a batch whose rejected records could not be copied to the dead-letter topic; the partition's next owner re-reads it",
					"topic", topic, "partition", part, "records", b.Records(), "error", err)
				b.Reset(topic, part)
				dropped = true
				return
			}
		}
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
			if n, err := dec.Decode(msg.Value, msg.Offset, b); err != nil {
				if l, keep := in.reject(msg, err); keep {
					letters = append(letters, l)
					letterBytes += len(msg.Value) + len(msg.Key)
				}
			} else if n > 0 {
				b.SetRaw(msg.Key, msg.Value) // for the dead-letter topic if PostgreSQL refuses it
			}
			if b.Records() == 1 {
				timer.Reset(in.cfg.FlushInterval)
			}
			if b.Flows() >= in.cfg.FlushCount || b.Records() >= maxRecords || letterBytes+b.RawBytes() >= maxHeldBytes {
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

// reject counts a record that will not be stored and logs it at a limited
// rate. With a dead-letter topic it returns the letter to send (keep true);
// the caller sends it before the record's offset can be committed.
func (in *Inserter) reject(msg *sarama.ConsumerMessage, err error) (l deadLetter, keep bool) {
	reason := Reason(err)
	in.m.recordsInvalid.WithLabelValues(reason).Inc()
	in.invalid.log(reason, "rejected invalid Kafka record", "topic", msg.Topic, "partition", msg.Partition, "offset", msg.Offset,
		"bytes", len(msg.Value), "error", err)
	if in.cfg.DLQTopic == "" {
		return deadLetter{}, false
	}
	return deadLetter{msg: detach(msg), reason: reason, err: err}, true
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
