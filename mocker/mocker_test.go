package mocker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/goflow2test"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
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

// expectedIDs are the (exporter, sequence) pairs of the first n flows of
// seed, in the default (realistic, demo files) address plan.
func expectedIDs(seed int64, n int) map[flowID]bool {
	p, err := DemoPlan()
	if err != nil {
		panic(err)
	}
	return generatedIDs(NewPlanGenerator(seed, p), n)
}

func generatedIDs(g *Generator, n int) map[flowID]bool {
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
	rb := readBackRecords(t, brokers, topic)
	for n, c := range rb.recordsByFlows {
		if n != 1 {
			t.Fatalf("%d records hold %d flows, want 1 each (goflow2 -format=bin)", c, n)
		}
	}
	return rb.ids, rb.perPartition, rb.stats
}

// readBackResult is what readBackRecords found on a topic.
type readBackResult struct {
	ids            map[flowID]int // flow -> times seen
	perPartition   map[int32]int  // partition -> records
	recordsByFlows map[int]int    // flows in a record -> records
	records        int
	valueBytes     int // sum of the record values' lengths
	stats          *flowStats
}

// readBackRecords reads the topic and decodes every frame of every record
// with goflow2's package, whatever the number of flows per record.
func readBackRecords(t *testing.T, brokers []string, topic string) readBackResult {
	t.Helper()
	recs := goflow2test.ReadTopic(t, brokers, topic, 2*time.Minute)
	rb := readBackResult{ids: make(map[flowID]int, len(recs)), perPartition: map[int32]int{},
		recordsByFlows: map[int]int{}, records: len(recs), stats: newRealisticFlowStats(t)}
	for _, r := range recs {
		flows, err := goflow2test.Decode(r.Value)
		if err != nil {
			t.Fatalf("record %d@%d does not decode with goflow2's FlowMessage: %v", r.Offset, r.Partition, err)
		}
		rb.recordsByFlows[len(flows)]++
		rb.perPartition[r.Partition]++
		rb.valueBytes += len(r.Value)
		for _, f := range flows {
			rb.ids[flowID{string(f.SamplerAddress), f.SequenceNum}]++
			rb.stats.add(f.Etype, f.SrcAddr, f.DstAddr, f.SamplerAddress, f.NextHop, f.Bytes, f.Packets, f.SamplingRate,
				f.SequenceNum, f.Proto, f.SrcPort, f.DstPort, f.TcpFlags, f.TimeFlowStartNs, f.TimeFlowEndNs, f.TimeReceivedNs)
		}
	}
	return rb
}

// checkExactlyOnce fails unless ids holds exactly the first n flows of seed,
// each once.
func checkExactlyOnce(t *testing.T, ids map[flowID]int, seed int64, n int) {
	t.Helper()
	want := expectedIDs(seed, n)
	for id := range want {
		if ids[id] != 1 {
			t.Fatalf("flow %v is on the topic %d times, want once", id, ids[id])
		}
	}
	if len(ids) != len(want) {
		t.Fatalf("%d distinct flows on the topic, want %d", len(ids), len(want))
	}
}

// TestDocumentationPlan: Config.Addresses = documentation sends the
// documentation plan's flows, all inside documentation and private space.
func TestDocumentationPlan(t *testing.T) {
	const n = 20_000
	brokers := testenv.FakeKafka(t, 3, "flows")
	m, _ := newMocker(t, Config{Brokers: brokers, Count: n, Seed: 4, Addresses: AddressesDocumentation})
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := goflow2test.ReadTopic(t, brokers, "flows", 2*time.Minute)
	want := generatedIDs(NewGenerator(4), n)
	s := newFlowStats()
	seen := map[flowID]bool{}
	for _, r := range recs {
		flows, err := goflow2test.Decode(r.Value)
		if err != nil || len(flows) != 1 {
			t.Fatalf("record %d@%d: %d flows, %v", r.Offset, r.Partition, len(flows), err)
		}
		f := flows[0]
		id := flowID{string(f.SamplerAddress), f.SequenceNum}
		if !want[id] || seen[id] {
			t.Fatalf("flow %v: generated by the documentation plan %v, seen before %v", id, want[id], seen[id])
		}
		seen[id] = true
		s.add(f.Etype, f.SrcAddr, f.DstAddr, f.SamplerAddress, f.NextHop, f.Bytes, f.Packets, f.SamplingRate,
			f.SequenceNum, f.Proto, f.SrcPort, f.DstPort, f.TcpFlags, f.TimeFlowStartNs, f.TimeFlowEndNs, f.TimeReceivedNs)
	}
	if len(seen) != n || s.publicAddrs != 0 {
		t.Fatalf("%d distinct flows of %d, %d with addresses outside documentation/private space", len(seen), n, s.publicAddrs)
	}
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

// TestFlowsPerRecord: with FlowsPerRecord = 10 and a Count that is not a
// multiple of it, exactly Count flows are acked and on the topic, 10 per
// record but the last, each once, readable with goflow2's package.
func TestFlowsPerRecord(t *testing.T) {
	const n, per, partitions = 10_005, 10, 3
	brokers := testenv.FakeKafka(t, partitions, "flows")
	m, _ := newMocker(t, Config{Brokers: brokers, Count: n, Seed: 9, FlowsPerRecord: per})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Produced() != n || m.Sent() != n {
		t.Fatalf("produced %d, sent %d flows; want %d each", m.Produced(), m.Sent(), n)
	}
	if got := testutil.ToFloat64(m.metrics.produced); got != n {
		t.Fatalf("flowpipeline_mocker_flows_produced_total = %v, want %d", got, n)
	}
	if m.inFlight.Load() != 0 {
		t.Fatalf("%d flows still counted in flight", m.inFlight.Load())
	}

	rb := readBackRecords(t, brokers, "flows")
	if rb.records != n/per+1 || rb.recordsByFlows[per] != n/per || rb.recordsByFlows[n%per] != 1 || len(rb.recordsByFlows) != 2 {
		t.Fatalf("%d records, by flows per record %v; want %d of %d flows and one of %d",
			rb.records, rb.recordsByFlows, n/per, per, n%per)
	}
	if rb.stats.n != n {
		t.Fatalf("topic holds %d flows, want %d", rb.stats.n, n)
	}
	checkExactlyOnce(t, rb.ids, 9, n)
	if got := testutil.ToFloat64(m.metrics.bytes); got != float64(rb.valueBytes) {
		t.Fatalf("flowpipeline_mocker_produced_bytes_total = %v, the topic's record values hold %d bytes", got, rb.valueBytes)
	}
	// Round robin per record.
	for p := int32(0); p < partitions; p++ {
		if c := rb.perPartition[p]; c < rb.records/partitions-1 || c > rb.records/partitions+1 {
			t.Errorf("partition %d holds %d of %d records; want an equal share (round robin): %v",
				p, c, rb.records, rb.perPartition)
		}
	}
	rb.stats.check(t, false)
}

// TestMaxFlowBytes: maxFlowBytes, which bounds a record's size for
// CheckFlowsPerRecord, holds for a flow with every field the generator sets
// at its widest encoding.
func TestMaxFlowBytes(t *testing.T) {
	g := NewGenerator(3)
	var f pb.FlowMessage
	set := map[protoreflect.FieldNumber]protoreflect.FieldDescriptor{}
	var buf []byte
	largest := 0
	for range 100_000 {
		g.Next(&f, time.Now())
		buf, _ = pb.AppendDelimited(buf[:0], &f)
		largest = max(largest, len(buf))
		f.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			set[fd.Number()] = fd
			return true
		})
	}
	worst := (&pb.FlowMessage{}).ProtoReflect()
	for _, fd := range set {
		var v protoreflect.Value
		switch fd.Kind() {
		case protoreflect.Uint64Kind:
			v = protoreflect.ValueOfUint64(math.MaxUint64)
		case protoreflect.Uint32Kind:
			v = protoreflect.ValueOfUint32(math.MaxUint32)
		case protoreflect.BytesKind:
			v = protoreflect.ValueOfBytes(make([]byte, 16)) // an IPv6 address
		case protoreflect.EnumKind:
			v = protoreflect.ValueOfEnum(-1) // the longest varint
		default:
			t.Fatalf("field %s has kind %s: extend this test", fd.Name(), fd.Kind())
		}
		worst.Set(fd, v)
	}
	buf, err := pb.AppendDelimited(buf[:0], worst.Interface().(*pb.FlowMessage))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d fields set; largest generated flow %d bytes, worst case %d, bound %d", len(set), largest, len(buf), maxFlowBytes)
	if len(buf) > maxFlowBytes || largest > len(buf) {
		t.Fatalf("worst-case flow is %d bytes (largest generated %d), over maxFlowBytes = %d", len(buf), largest, maxFlowBytes)
	}
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

// TestRate checks the limiter, which paces flows whatever the number per
// record: the last of count flows at rate is due at (count-1)/rate seconds;
// acks add a few milliseconds.
func TestRate(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		count uint64
		per   int // flows per record
	}{{2000, 4000, 1}, {50000, 75000, 1}, {20000, 40000, 10}} {
		t.Run(fmt.Sprintf("%v/flows_per_record=%d", tc.rate, tc.per), func(t *testing.T) {
			brokers := testenv.FakeKafka(t, 3, "flows")
			m, _ := newMocker(t, Config{Brokers: brokers, Rate: tc.rate, Count: tc.count, FlowsPerRecord: tc.per})
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
			// The first record goes when its last flow is due, at
			// (per-1)/rate; the last record at (count-1)/rate.
			want := time.Duration(float64(tc.count-uint64(tc.per)) / tc.rate * float64(time.Second))
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
	// Generous: this checks that ConnectTimeout bounds the wait (rather than
	// the producer retrying forever), not how fast a loaded machine is.
	if elapsed := time.Since(start); elapsed > 20*time.Second {
		t.Fatalf("took %s to give up with a 1s ConnectTimeout", elapsed)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Brokers: []string{"127.0.0.1:9092"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	// Zero fields take DefaultConfig's values, except those whose zero means something.
	filled, def := ok.withDefaults(), DefaultConfig()
	filled.Rate, filled.Seed = def.Rate, def.Seed
	if !reflect.DeepEqual(filled, def) {
		t.Errorf("zero Config with defaults = %+v\nDefaultConfig() = %+v", filled, def)
	}
	for _, n := range []int{0, 1, 10, MaxFlowsPerRecord} { // 0 is the default, 1
		c := ok
		c.FlowsPerRecord = n
		if err := c.Validate(); err != nil {
			t.Fatalf("FlowsPerRecord %d: %v", n, err)
		}
	}
	if err := CheckFlowsPerRecord(0); err == nil {
		t.Fatal("CheckFlowsPerRecord(0) accepted 0")
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, "Config.Brokers is empty"},
		{"old version", func(c *Config) { c.KafkaVersion = "2.0.0" }, "at least 2.1.0"},
		{"bad version", func(c *Config) { c.KafkaVersion = "banana" }, "Config.KafkaVersion"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "Config.Rate"},
		{"bad compression", func(c *Config) { c.Compression = "brotli" }, "Config.Compression"},
		{"negative timeout", func(c *Config) { c.ConnectTimeout = -time.Second }, "Config.ConnectTimeout -1s: must not be negative"},
		{"negative flows per record", func(c *Config) { c.FlowsPerRecord = -1 }, "Config.FlowsPerRecord -1: want 1 to 1000"},
		{"too many flows per record", func(c *Config) { c.FlowsPerRecord = MaxFlowsPerRecord + 1 }, "Config.FlowsPerRecord 1001"},
		{"unknown address plan", func(c *Config) { c.Addresses = "rfc1918" }, `Config.Addresses "rfc1918"`},
		{"files with the documentation plan", func(c *Config) { c.Addresses, c.ExportersFile = AddressesDocumentation, "e.yml" },
			"Config.NetworksFile and Config.ExportersFile are for the realistic address plan"},
		{"unknown output", func(c *Config) { c.Output = "netflow5" }, `Config.Output "netflow5": want kafka, netflow9, ipfix or sflow`},
		{"collector without port", func(c *Config) { c.Output, c.Collector = OutputIPFIX, "goflow2" }, `Config.Collector "goflow2": want host:port`},
		{"collector with kafka", func(c *Config) { c.Collector = "127.0.0.1:2055" }, "Config.Collector \"127.0.0.1:2055\" is for the router protocols"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("got %v, want an ErrInvalidConfig containing %q", err, tc.want)
			}
			if _, err := New(c, testLogger(t), prometheus.NewRegistry()); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New accepted an invalid config: %v", err)
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
