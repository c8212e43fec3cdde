package mocker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spendletonliveaction/flow-pipeline/internal/testenv"
	"github.com/spendletonliveaction/flow-pipeline/mocker/goflow2test"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func newMocker(t testing.TB, cfg Config) (*Mocker, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(cfg, testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

type flowID struct {
	sampler string
	seq     uint32
}

// expectedIDs are the (exporter, sequence) pairs of the first n flows of seed.
func expectedIDs(seed int64, n int) map[flowID]bool {
	g := NewGenerator(seed)
	var m pb.FlowMessage
	ids := make(map[flowID]bool, n)
	for i := 0; i < n; i++ {
		g.Next(&m, time.Now())
		ids[flowID{string(m.SamplerAddress), m.SequenceNum}] = true
	}
	return ids
}

// readBack reads the topic, decodes every record with goflow2's package and
// checks each holds exactly one flow. It returns the flows' IDs with how
// many times each was seen, records per partition and the flow statistics.
func readBack(t *testing.T, brokers []string, topic string) (map[flowID]int, map[int32]int, *flowStats) {
	t.Helper()
	recs := goflow2test.ReadTopic(t, brokers, topic, 2*time.Minute)
	ids := make(map[flowID]int, len(recs))
	perPartition := map[int32]int{}
	stats := newFlowStats()
	for _, r := range recs {
		flows, err := goflow2test.Decode(r.Value)
		if err != nil {
			t.Fatalf("record %d@%d does not decode with goflow2's FlowMessage: %v", r.Offset, r.Partition, err)
		}
		if len(flows) != 1 {
			t.Fatalf("record %d@%d holds %d flows, want 1 (goflow2 -format=bin)", r.Offset, r.Partition, len(flows))
		}
		f := flows[0]
		ids[flowID{string(f.SamplerAddress), f.SequenceNum}]++
		perPartition[r.Partition]++
		stats.add(f.Etype, f.SrcAddr, f.DstAddr, f.SamplerAddress, f.NextHop, f.Bytes, f.Packets, f.SamplingRate,
			f.SequenceNum, f.Proto, f.SrcPort, f.DstPort, f.TcpFlags, f.TimeFlowStartNs, f.TimeFlowEndNs, f.TimeReceivedNs)
	}
	return ids, perPartition, stats
}

func TestProduceKfake(t *testing.T) {
	const n, partitions = 100_000, 6
	brokers := testenv.FakeKafka(t, partitions, "flows")
	m, reg := newMocker(t, Config{Brokers: brokers, Count: n, Seed: 7})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Produced() != n || m.Sent() != n {
		t.Fatalf("produced %d, sent %d; want %d each", m.Produced(), m.Sent(), n)
	}
	if got := testutil.ToFloat64(m.metrics.produced); got != n {
		t.Fatalf("flowpipeline_mocker_flows_produced_total = %v, want %d", got, n)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}

	ids, perPartition, stats := readBack(t, brokers, "flows")
	if stats.n != n {
		t.Fatalf("topic holds %d records, want %d", stats.n, n)
	}
	want := expectedIDs(7, n)
	if len(ids) != n {
		t.Fatalf("%d distinct flows on the topic, want %d", len(ids), n)
	}
	for id, c := range ids {
		if !want[id] || c != 1 {
			t.Fatalf("flow %v seen %d times (generated: %v)", id, c, want[id])
		}
	}
	if len(perPartition) != partitions {
		t.Fatalf("records on %d partitions, want all %d: %v", len(perPartition), partitions, perPartition)
	}
	for p, c := range perPartition {
		if c < n/partitions*8/10 || c > n/partitions*12/10 {
			t.Errorf("partition %d holds %d records; want about %d (round robin)", p, c, n/partitions)
		}
	}
	stats.check(t, false)
}

// TestStopFlushes: cancelling Run stops production, and every flow handed
// to the producer is acknowledged and on the topic.
func TestStopFlushes(t *testing.T) {
	brokers := testenv.FakeKafka(t, 3, "flows")
	m, _ := newMocker(t, Config{Brokers: brokers, Rate: 5000})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	time.Sleep(time.Second)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of cancel")
	}
	if m.Produced() == 0 || m.Produced() != m.Sent() {
		t.Fatalf("produced %d of %d sent flows", m.Produced(), m.Sent())
	}
	recs := goflow2test.ReadTopic(t, brokers, "flows", time.Minute)
	if uint64(len(recs)) != m.Produced() {
		t.Fatalf("topic holds %d records, produced %d", len(recs), m.Produced())
	}
}

// TestRate checks the limiter: the last of count flows at rate is due at
// (count-1)/rate seconds; acks add a few milliseconds.
func TestRate(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		count uint64
	}{{2000, 4000}, {50000, 75000}} {
		t.Run(fmt.Sprint(tc.rate), func(t *testing.T) {
			brokers := testenv.FakeKafka(t, 3, "flows")
			m, _ := newMocker(t, Config{Brokers: brokers, Rate: tc.rate, Count: tc.count})
			// Time from the first ack to the last, so connecting to Kafka
			// does not count.
			firstAck := make(chan time.Time, 1)
			go func() {
				for m.Produced() == 0 {
					time.Sleep(100 * time.Microsecond)
				}
				firstAck <- time.Now()
			}()
			if err := m.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			elapsed := time.Since(<-firstAck)
			want := time.Duration(float64(tc.count-1) / tc.rate * float64(time.Second))
			t.Logf("%d flows at %v/s took %s (schedule %s): %.0f flows/s",
				tc.count, tc.rate, elapsed.Round(time.Millisecond), want, float64(tc.count)/elapsed.Seconds())
			// Generous upper bound: this is a shared 2-core machine.
			if elapsed < want*95/100 || elapsed > want*12/10+100*time.Millisecond {
				t.Errorf("took %s, want %s to %s", elapsed, want*95/100, want*12/10+100*time.Millisecond)
			}
		})
	}
}

func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestUnreachableKafka(t *testing.T) {
	addr := closedPort(t)
	m, _ := newMocker(t, Config{Brokers: []string{addr}, ConnectTimeout: time.Second})
	start := time.Now()
	err := m.Run(context.Background())
	if err == nil {
		t.Fatal("Run succeeded without Kafka")
	}
	if want := "cannot reach Kafka at " + addr; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("took %s to give up, want about 1s", elapsed)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Brokers: []string{"127.0.0.1:9092"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, "no Kafka brokers"},
		{"old version", func(c *Config) { c.KafkaVersion = "2.0.0" }, "at least 2.1.0"},
		{"bad version", func(c *Config) { c.KafkaVersion = "banana" }, "-kafka.version"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "-rate"},
		{"bad compression", func(c *Config) { c.Compression = "brotli" }, "-kafka.compression"},
		{"negative timeout", func(c *Config) { c.ConnectTimeout = -time.Second }, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if _, err := New(c, testLogger(t), prometheus.NewRegistry()); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

func TestFailureReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{sarama.ErrNotLeaderForPartition, reasonBrokerUnavailable},
		{fmt.Errorf("wrapped: %w", sarama.ErrOutOfBrokers), reasonBrokerUnavailable},
		{sarama.ErrRequestTimedOut, reasonTimeout},
		{sarama.ErrMessageSizeTooLarge, reasonTooLarge},
		{sarama.ErrUnknownTopicOrPartition, reasonUnknownTopic},
		{sarama.ErrOutOfOrderSequenceNumber, reasonSequence},
		{&net.OpError{Op: "dial", Err: errors.New("refused")}, reasonNetwork},
		{io.ErrUnexpectedEOF, reasonOther},
	} {
		if got := failureReason(tc.err); got != tc.want {
			t.Errorf("failureReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
