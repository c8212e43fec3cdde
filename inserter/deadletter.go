package inserter

import (
	"context"
	"strconv"

	"github.com/IBM/sarama"
)

// deadLetter is a rejected record on its way to the dead-letter topic.
type deadLetter struct {
	msg    *sarama.ConsumerMessage // Topic, Partition, Offset, Key, Value
	reason string                  // the records_invalid_total reason
	err    error
}

// sendDeadLetters copies letters to the dead-letter topic, if one is set,
// and returns once every copy is acknowledged, retrying with backoff;
// it returns an error only when ctx ends first.
func (in *Inserter) sendDeadLetters(ctx context.Context, letters []deadLetter) error {
	if in.dlq == nil {
		return nil
	}
	for _, l := range letters {
		backoff := in.cfg.RetryMin
		for {
			_, _, err := in.dlq.SendMessage(&sarama.ProducerMessage{
				Topic: in.cfg.DLQTopic,
				Key:   sarama.ByteEncoder(l.msg.Key),
				Value: sarama.ByteEncoder(l.msg.Value),
				Headers: []sarama.RecordHeader{
					{Key: []byte("reason"), Value: []byte(l.reason)},
					{Key: []byte("error"), Value: []byte(l.err.Error())},
					{Key: []byte("source_topic"), Value: []byte(l.msg.Topic)},
					{Key: []byte("source_partition"), Value: []byte(strconv.Itoa(int(l.msg.Partition)))},
					{Key: []byte("source_offset"), Value: []byte(strconv.FormatInt(l.msg.Offset, 10))},
				},
			})
			if err == nil {
				in.m.dlqRecords.Inc()
				break
			}
			in.m.dlqErrors.Inc()
			in.invalid.log("dlq", "copying a rejected record to the dead-letter topic failed; retrying", "topic", in.cfg.DLQTopic, "error", err, "retry_in", backoff)
			sleep(ctx, backoff)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			backoff = min(backoff*2, in.cfg.RetryMax)
		}
	}
	return nil
}
