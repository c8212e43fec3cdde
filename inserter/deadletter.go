package inserter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/IBM/sarama"
)

// deadLetter is a rejected record on its way to the dead-letter topic.
type deadLetter struct {
	msg    *sarama.ConsumerMessage // Topic, Partition, Offset, Key, Value
	reason string                  // the records_invalid_total reason
	err    error
}

// maxHeldBytes bounds the record bytes a claim's batch holds (rejected
// records waiting for the dead-letter topic, sources of its flows) before
// it is queued: records can be large.
const maxHeldBytes = 8 << 20

// sendDeadLetters copies letters to the dead-letter topic, if one is set,
// and returns once every copy is acknowledged, retrying with backoff;
// it returns an error only when ctx ends first.
//
// Callers must not let the partition's offset pass a letter's record until
// this returned nil: that is what makes the dead-letter copy at least once.
func (in *Inserter) sendDeadLetters(ctx context.Context, letters []deadLetter) error {
	if in.dlq == nil || len(letters) == 0 {
		return nil
	}
	pending := make([]*sarama.ProducerMessage, len(letters))
	for i, l := range letters {
		pending[i] = in.deadLetterMessage(l)
	}
	backoff := in.cfg.RetryMin
	// A request of several letters can exceed what the topic accepts
	// although each letter fits: after a "too large", letters go one per
	// request, and only a letter refused alone is truncated.
	single := false
	for {
		var failed []*sarama.ProducerMessage
		var lastErr error
		truncated, switched := false, false
		if single {
			for _, pm := range pending {
				if _, _, err := in.dlq.SendMessage(pm); err != nil {
					if tooLarge(err) {
						truncated = truncate(pm) || truncated
					}
					failed, lastErr = append(failed, pm), err
				}
			}
		} else if err := in.dlq.SendMessages(pending); err != nil {
			// One round trip for the whole set; on failure only the
			// messages sarama reports as failed are sent again.
			var perrs sarama.ProducerErrors
			if !errors.As(err, &perrs) || len(perrs) == 0 {
				failed, lastErr = pending, err
			}
			for _, pe := range perrs {
				if tooLarge(pe.Err) {
					single, switched = true, true
				}
				failed, lastErr = append(failed, pe.Msg), pe.Err
			}
		}
		in.m.dlqRecords.Add(float64(len(pending) - len(failed)))
		if len(failed) == 0 {
			return nil
		}
		pending = failed
		in.m.dlqErrors.Add(float64(len(pending)))
		if (truncated || switched) && ctx.Err() == nil {
			continue // progress without waiting: smaller letters, or one per request
		}
		in.invalid.log("dlq", "copying rejected records to the dead-letter topic failed; retrying, the partition waits (check the topic exists and the broker is up)",
			"topic", in.cfg.DLQTopic, "records", len(pending), "error", lastErr, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d rejected records not copied to the dead-letter topic %q before the partition's claim ended: %w", len(pending), in.cfg.DLQTopic, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, in.cfg.RetryMax)
	}
}

// tooLarge reports a letter refused for its size, by the broker or by
// sarama before sending (above Producer.MaxMessageBytes).
func tooLarge(err error) bool {
	var local sarama.ConfigurationError
	return errors.Is(err, sarama.ErrMessageSizeTooLarge) || errors.As(err, &local)
}

// truncatedSize is the most that is kept of a rejected record too large
// for the dead-letter topic.
const truncatedSize = 64 << 10

// truncate halves a dead-letter message's value (at most truncatedSize),
// each time the topic refuses it as too large, and records the original
// size in a "truncated" header. It reports whether the value shrank.
func truncate(pm *sarama.ProducerMessage) bool {
	v, _ := pm.Value.Encode()
	if len(v) == 0 {
		return false
	}
	if !slices.ContainsFunc(pm.Headers, func(h sarama.RecordHeader) bool { return string(h.Key) == "truncated" }) {
		pm.Headers = append(pm.Headers, sarama.RecordHeader{Key: []byte("truncated"), Value: []byte(strconv.Itoa(len(v)))})
	}
	pm.Value = sarama.ByteEncoder(v[:min(len(v)/2, truncatedSize)])
	return true
}

func (in *Inserter) deadLetterMessage(l deadLetter) *sarama.ProducerMessage {
	msg := l.msg
	errText := l.reason
	if l.err != nil {
		errText = l.err.Error()
	}
	return &sarama.ProducerMessage{
		Topic: in.cfg.DLQTopic,
		Key:   sarama.ByteEncoder(msg.Key),
		Value: sarama.ByteEncoder(msg.Value),
		Headers: []sarama.RecordHeader{
			{Key: []byte("reason"), Value: []byte(l.reason)},
			{Key: []byte("error"), Value: []byte(errText)},
			{Key: []byte("source_topic"), Value: []byte(msg.Topic)},
			{Key: []byte("source_partition"), Value: []byte(strconv.Itoa(int(msg.Partition)))},
			{Key: []byte("source_offset"), Value: []byte(strconv.FormatInt(msg.Offset, 10))},
		},
	}
}

// detach copies what a dead letter needs of msg. The consumer's key and
// value point into the whole decompressed batch they came from, which
// would otherwise stay in memory while the letter waits for its batch.
func detach(msg *sarama.ConsumerMessage) *sarama.ConsumerMessage {
	return &sarama.ConsumerMessage{Topic: msg.Topic, Partition: msg.Partition, Offset: msg.Offset,
		Key: bytes.Clone(msg.Key), Value: bytes.Clone(msg.Value)}
}
