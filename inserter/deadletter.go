package inserter

import (
	"context"
	"errors"
	"fmt"
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

// maxLetterBytes bounds the rejected record values a claim holds before it
// queues its batch (and so sends them): junk records can be large.
const maxLetterBytes = 8 << 20

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
	for {
		// One round trip for the whole set; on failure only the messages
		// sarama reports as failed are sent again.
		err := in.dlq.SendMessages(pending)
		if err == nil {
			in.m.dlqRecords.Add(float64(len(pending)))
			return nil
		}
		var perrs sarama.ProducerErrors
		if errors.As(err, &perrs) && len(perrs) > 0 {
			failed := make([]*sarama.ProducerMessage, 0, len(perrs))
			for _, pe := range perrs {
				failed = append(failed, pe.Msg)
			}
			in.m.dlqRecords.Add(float64(len(pending) - len(failed)))
			pending = failed
			err = perrs[0].Err
		}
		in.m.dlqErrors.Add(float64(len(pending)))
		in.invalid.log("dlq", "copying rejected records to the dead-letter topic failed; retrying, the partition waits (check the topic exists and the broker is up)",
			"topic", in.cfg.DLQTopic, "records", len(pending), "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d rejected records not copied to the dead-letter topic %q before the partition's claim ended: %w", len(pending), in.cfg.DLQTopic, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, in.cfg.RetryMax)
	}
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
