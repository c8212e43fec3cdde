package mocker

import (
	"context"
	"fmt"
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
// each failed flow and re-send it (a whole record's flows at once), so Count
// flows still end up acked, each exactly once on the topic.
func TestFailedDeliveriesAreResent(t *testing.T) {
	for _, per := range []int{1, 10} {
		t.Run(fmt.Sprintf("flows_per_record=%d", per), func(t *testing.T) { testResend(t, per) })
	}
}

func testResend(t *testing.T, per int) {
	const n, rejects = 20_005, 3
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
	m, _ := newMocker(t, Config{Brokers: brokers, Count: n, Seed: 5, Rate: 20_000, FlowsPerRecord: per})
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
	rb := readBackRecords(t, brokers, "flows")
	checkExactlyOnce(t, rb.ids, 5, n)
	if rb.stats.n != n || rb.records != (n+per-1)/per {
		t.Fatalf("topic holds %d flows in %d records, want %d in %d", rb.stats.n, rb.records, n, (n+per-1)/per)
	}
	if per > 1 && int(failed)%per != 0 {
		t.Fatalf("%v flows failed: not whole records of %d (the last record of %d flows went through)", failed, per, n%per)
	}
}
