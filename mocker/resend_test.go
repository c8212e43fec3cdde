package mocker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestFailedDeliveriesAreResent makes the broker reject a few produce
// requests with an error sarama does not retry itself: the mocker must count
// each failed flow and re-send it, so Count flows still end up acked, each
// exactly once on the topic.
func TestFailedDeliveriesAreResent(t *testing.T) {
	const n, rejects = 20_000, 3
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "flows"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rejected atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if rejected.Load() >= rejects {
			return nil, nil, false // let the broker handle it
		}
		rejected.Add(1)
		preq := req.(*kmsg.ProduceRequest)
		resp := preq.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range preq.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.PolicyViolation.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})

	brokers := c.ListenAddrs()
	m, _ := newMocker(t, Config{Brokers: brokers, Count: n, Seed: 5, Rate: 20_000})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Run gave up at the timeout with %d of %d flows acked", m.Produced(), n)
	}
	failed := testutil.ToFloat64(m.metrics.failed.WithLabelValues(reasonOther))
	resent := testutil.ToFloat64(m.metrics.resent)
	t.Logf("%d produce requests rejected; %.0f flows failed (reason other), %.0f re-sent", rejected.Load(), failed, resent)
	if rejected.Load() != rejects || failed == 0 || resent != failed {
		t.Fatalf("rejected %d requests, %v failed flows, %v re-sent; want %d requests and every failure re-sent",
			rejected.Load(), failed, resent, rejects)
	}
	if m.Produced() != n {
		t.Fatalf("produced %d, want %d", m.Produced(), n)
	}
	ids, _, stats := readBack(t, brokers, "flows")
	want := expectedIDs(5, n)
	for id := range want {
		if ids[id] != 1 {
			t.Fatalf("flow %v is on the topic %d times, want once", id, ids[id])
		}
	}
	if stats.n != n {
		t.Fatalf("topic holds %d records, want %d", stats.n, n)
	}
}
