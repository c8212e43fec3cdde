// Package goflow2test reads flows back from Kafka the way a consumer of
// goflow2 would: with goflow2's own generated package
// (github.com/netsampler/goflow2/v2/pb), so tests prove that what we write
// is what goflow2's users read.
package goflow2test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	flowpb "github.com/netsampler/goflow2/v2/pb"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protodelim"
)

// Record is one Kafka record read back from a topic.
type Record struct {
	Partition int32
	Offset    int64
	Value     []byte
}

// ReadTopic reads every record of topic up to its end offsets at the time of
// the call, failing the test if they cannot all be read within timeout.
func ReadTopic(t testing.TB, brokers []string, topic string, timeout time.Duration) []Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(64<<20))
	if err != nil {
		t.Fatalf("kafka client for %v: %v", brokers, err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		t.Fatalf("end offsets of %q: %v", topic, errors.Join(err, ends.Error()))
	}
	end := map[int32]int64{}
	var want int64
	ends.Each(func(o kadm.ListedOffset) {
		end[o.Partition] = o.Offset
		want += o.Offset
	})
	out := make([]Record, 0, want)
	for int64(len(out)) < want {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %q before the %s timeout", len(out), want, topic, timeout)
		}
		fetches.EachError(func(tp string, p int32, err error) {
			t.Fatalf("fetch %s[%d]: %v", tp, p, err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset < end[r.Partition] {
				out = append(out, Record{Partition: r.Partition, Offset: r.Offset, Value: r.Value})
			}
		})
	}
	return out
}

// Decode reads every length-delimited message of a record value with
// goflow2's FlowMessage and the standard protodelim reader.
func Decode(value []byte) ([]*flowpb.FlowMessage, error) {
	r := bufio.NewReader(bytes.NewReader(value))
	var out []*flowpb.FlowMessage
	for {
		m := &flowpb.FlowMessage{}
		err := protodelim.UnmarshalFrom(r, m)
		if err == io.EOF {
			if len(out) == 0 {
				return nil, errors.New("empty record")
			}
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("message %d: %w", len(out), err)
		}
		out = append(out, m)
	}
}
