package detector

import (
	"context"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// driftTraffic is traffic on two partitions of very different density: a
// SYN flood on .9 (40-70 s) over light background on partition 0 (2
// flows a second: a fetch of a few hundred records spans minutes of
// event time), a DNS amplification on .7 (10-40 s) over heavy background
// on partition 1 (dense flows a second).
func driftTraffic(dense int) []flow {
	th := DefaultThresholds()
	syn := flow{dst: "203.0.113.9", src: "192.0.2.1", proto: 6, tcpFlags: 2, packets: th.Addr[VectorSYN].Pps / 100, rate: 100, srcAS: 64500}
	syn.bytes = syn.packets * 60
	bg := flow{dst: "198.51.100.1", src: "192.0.2.9", proto: 6, tcpFlags: 0x18, packets: 1, bytes: 100, rate: 1}
	bg1 := bg
	bg1.dst, bg1.part = "198.51.100.2", 1
	dns := dnsFlow("203.0.113.7", 2*th.Addr[VectorDNS].Pps/1000)
	dns.part = 1
	return merge(every(bg, 0, 150, 2), every(syn, 40, 70, 2), every(bg1, 0, 150, dense), every(dns, 10, 40, 10))
}

// replayChunks reads fs as a consumer catching up does: each round, a
// chunk of up to chunk records from every partition not paused (and, as a
// fetch already in flight, one more chunk from a partition just paused),
// through an aligner of the given bound; extra partitions are assigned
// and never carry a flow. The wall clock moves 100 ms a round.
func replayChunks(t *testing.T, fs []flow, chunk int, bound time.Duration, extra int32) ([]Alert, Counts, int) {
	t.Helper()
	e := newTestEngine(t, testConfig(), DefaultThresholds())
	recs := map[int32][]*kgo.Record{}
	parts := int32(0)
	for _, f := range fs {
		recs[f.part] = append(recs[f.part], &kgo.Record{Partition: f.part, Value: record(t, f)})
		parts = max(parts, f.part+1)
	}
	now := wall
	for p := range parts + extra {
		e.Assign(p, now)
	}
	al := newAligner(bound)
	paused, inFlight := map[int32]bool{}, map[int32]bool{}
	maxPaused := 0
	var msg pb.FlowMessage
	var out []Alert
	count := func(r *kgo.Record) {
		if err := pb.UnmarshalRecord(r.Value, &msg, func(m *pb.FlowMessage) error { e.Add(m, r.Partition, now); return nil }); err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Alerts()...)
	}
	for round := 0; ; round++ {
		if round > 10000 {
			t.Fatalf("no progress after %d rounds: %d records held, paused %v", round, al.heldRecords(), paused)
		}
		var f kgo.FetchTopic
		for p := range parts {
			if (paused[p] && !inFlight[p]) || len(recs[p]) == 0 {
				continue
			}
			delete(inFlight, p)
			n := min(chunk, len(recs[p]))
			f.Partitions = append(f.Partitions, kgo.FetchPartition{Partition: p, Records: recs[p][:n]})
			recs[p] = recs[p][n:]
		}
		if len(f.Partitions) == 0 && al.heldRecords() == 0 {
			break
		}
		al.add(kgo.Fetches{{Topics: []kgo.FetchTopic{f}}})
		al.feed(e, now, false, count)
		n := al.reconcile(func(ps []int32) {
			for _, p := range ps {
				paused[p], inFlight[p] = true, true
			}
		}, func(ps []int32) {
			for _, p := range ps {
				delete(paused, p)
			}
		})
		maxPaused = max(maxPaused, n)
		e.Tick(now)
		out = append(out, e.Alerts()...)
		now = now.Add(100 * time.Millisecond)
	}
	e.Tick(now.Add(time.Hour))
	return append(out, e.Alerts()...), e.Take(), maxPaused
}

// TestAlignment: partition 0 read a chunk of 400 records at a time spans
// its whole 150 s in one fetch, partition 1 about 18 s. Without alignment
// partition 1 falls more than Config.MaxSkew behind and loses its flows as
// late, and the DNS attack on it is missed; with it (and with an extra
// partition that never carries a flow, which must not stall detection),
// not one flow is late and the alerts are those of the flows read in time
// order, ids included.
func TestAlignment(t *testing.T) {
	fs := driftTraffic(20)
	e := newTestEngine(t, testConfig(), DefaultThresholds())
	e.Assign(0, wall)
	e.Assign(1, wall)
	ref := feed(t, e, fs...)
	e.Tick(wall.Add(time.Hour))
	ref = append(ref, e.Alerts()...)
	if c := e.Take(); c.Dropped[dropLate] != 0 || c.Flows != uint64(len(fs)) {
		t.Fatalf("in time order: %d flows counted, %d late; want %d, 0", c.Flows, c.Dropped[dropLate], len(fs))
	}
	if len(ref) != 18 {
		t.Fatalf("in time order: %d alerts, want 18 (2 attacks: start, 6 updates, end each): %v", len(ref), briefs(t, ref))
	}

	got, c, _ := replayChunks(t, fs, 400, time.Duration(math.MaxInt64), 0)
	if c.Dropped[dropLate] != 2380 || c.Flows != uint64(len(fs))-2380 {
		t.Errorf("without alignment: %d flows counted, %d late; want %d, 2380", c.Flows, c.Dropped[dropLate], len(fs)-2380)
	}
	if reflect.DeepEqual(briefs(t, got), briefs(t, ref)) {
		t.Errorf("without alignment: the alerts of the time-ordered run, want the late flows to change them")
	}

	for _, extra := range []int32{0, 1} {
		got, c, paused := replayChunks(t, fs, 400, testConfig().alignBound(), extra)
		if c.Dropped[dropLate] != 0 || c.Flows != uint64(len(fs)) {
			t.Errorf("aligned, %d empty partition(s): %d flows counted, %d late; want %d, 0", extra, c.Flows, c.Dropped[dropLate], len(fs))
		}
		// Partition 0 runs ahead; an empty partition holds both others
		// back until it is idle (Config.Idle).
		if paused != 1+int(extra) {
			t.Errorf("aligned, %d empty partition(s): at most %d partitions paused at once, want %d", extra, paused, 1+extra)
		}
		if !reflect.DeepEqual(briefs(t, got), briefs(t, ref)) {
			t.Errorf("aligned, %d empty partition(s): alerts\n%v\nwant\n%v", extra, briefs(t, got), briefs(t, ref))
		}
		for i := range min(len(got), len(ref)) {
			if got[i].ID != ref[i].ID {
				t.Errorf("alert %d id %s, want %s", i, got[i].ID, ref[i].ID)
			}
		}
	}
}

// TestRunAlignsPartitions: the same traffic, 200 background flows a
// second on partition 1, on kfake, produced before the detector starts (a
// backlog, in small batches so fetches take 256 KiB of a partition each):
// Run reads partition 0 whole in its first fetch, about 12 s of partition
// 1, and counts every flow, none late, with the alerts of the time-ordered
// run, once each. (Without the alignment, 5,807 of the 30,660 flows were
// dropped as late.)
func TestRunAlignsPartitions(t *testing.T) {
	brokers := testenv.FakeKafka(t, 2, "flows-enriched", "alerts")
	fs := driftTraffic(200)
	e := newTestEngine(t, testConfig(), DefaultThresholds())
	e.Assign(0, wall)
	e.Assign(1, wall)
	want := feed(t, e, fs...)
	e.Tick(wall.Add(time.Hour))
	want = append(want, e.Alerts()...)

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchMaxBytes(4<<10), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	var rs []*kgo.Record
	for _, f := range fs {
		rs = append(rs, &kgo.Record{Topic: "flows-enriched", Partition: f.part, Value: record(t, f)})
	}
	if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	cfg := DefaultConfig()
	cfg.Brokers, cfg.TransactionalID = brokers, "detector-align"
	cfg.TransactionInterval, cfg.Idle = 200*time.Millisecond, time.Second
	d, _ := runDetector(t, cfg)
	got, _ := readAlerts(t, brokers, "alerts", len(want))
	sortAlerts(got)
	sortAlerts(want)
	if !slices.Equal(briefs(t, got), briefs(t, want)) {
		t.Fatalf("alerts on the topic:\n%v\nwant\n%v", briefs(t, got), briefs(t, want))
	}
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(d.m.flowsIn) != float64(len(fs)); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			break
		}
	}
	if in, late := testutil.ToFloat64(d.m.flowsIn), testutil.ToFloat64(d.m.dropped[dropLate]); in != float64(len(fs)) || late != 0 {
		t.Errorf("flows_in_total %v, dropped late %v; want %d, 0", in, late, len(fs))
	}
	if p := testutil.ToFloat64(d.m.paused); p != 0 {
		t.Errorf("paused_partitions %v after the backlog, want 0", p)
	}
}

// TestAlignerAbort: the records held at a commit come back when a later
// transaction aborts, those polled after it do not (the client reads them
// again), and the pause state follows what is held, not the commit.
func TestAlignerAbort(t *testing.T) {
	e := newTestEngine(t, testConfig(), DefaultThresholds())
	e.Assign(0, wall)
	e.Assign(1, wall)
	rec := func(p int32, at time.Duration) *kgo.Record {
		return &kgo.Record{Partition: p, Value: record(t, flow{at: at, dst: "198.51.100.1", src: "192.0.2.9", proto: 6, part: p})}
	}
	poll := func(rs ...*kgo.Record) kgo.Fetches {
		var f kgo.FetchTopic
		for _, r := range rs {
			f.Partitions = append(f.Partitions, kgo.FetchPartition{Partition: r.Partition, Records: []*kgo.Record{r}})
		}
		return kgo.Fetches{{Topics: []kgo.FetchTopic{f}}}
	}
	al := newAligner(10 * time.Second)
	var fed []time.Duration
	var paused []int32
	step := func() {
		al.feed(e, wall, false, func(r *kgo.Record) {
			fed = append(fed, time.Duration(firstTime(r.Value)-uint64(t0.UnixNano())))
			var m pb.FlowMessage
			if err := pb.UnmarshalRecord(r.Value, &m, func(m *pb.FlowMessage) error { e.Add(m, r.Partition, wall); return nil }); err != nil {
				t.Fatal(err)
			}
		})
		al.reconcile(func(ps []int32) { paused = append(paused, ps...) }, func(ps []int32) {
			paused = slices.DeleteFunc(paused, func(p int32) bool { return slices.Contains(ps, p) })
		})
	}
	// Partition 1 at 1 s; partition 0 gives 2 s and 30 s: 30 s waits.
	al.add(poll(rec(0, 2*time.Second), rec(1, time.Second), rec(0, 30*time.Second)))
	step()
	if !slices.Equal(fed, []time.Duration{time.Second, 2 * time.Second}) || !slices.Equal(paused, []int32{0}) || al.heldRecords() != 1 {
		t.Fatalf("fed %v, paused %v, %d held; want [1s 2s], [0], 1", fed, paused, al.heldRecords())
	}
	snap := newTestEngine(t, testConfig(), DefaultThresholds())
	al.save() // a commit, as Detector.end does
	e.copyTo(snap)
	// Partition 1 reaches 25 s: 30 s is within 10 s of it.
	al.add(poll(rec(1, 25*time.Second)))
	step()
	if !slices.Equal(fed[2:], []time.Duration{25 * time.Second, 30 * time.Second}) || len(paused) != 0 || al.heldRecords() != 0 {
		t.Fatalf("fed %v, paused %v, %d held; want [.. 25s 30s], [], 0", fed, paused, al.heldRecords())
	}
	al.restore() // the transaction aborts: 30 s is held again
	snap.copyTo(e)
	if al.heldRecords() != 1 || al.qs[0].part != 0 || al.qs[0].key != uint64(t0.Add(30*time.Second).UnixNano()) {
		t.Fatalf("after restore: %d held, first queue %d key %d; want 1, partition 0, 30 s", al.heldRecords(), al.qs[0].part, al.qs[0].key)
	}
	fed = fed[:0]
	step()
	if len(fed) != 0 || !slices.Equal(paused, []int32{0}) {
		t.Fatalf("after restore: fed %v, paused %v; want nothing fed (the engine is where it was), [0] paused", fed, paused)
	}
}

// TestRunAlignsAcrossRebalance: partition 0 is produced whole, partition 1
// only up to 20 s, so Run holds partition 0's records and pauses it (the
// partitions never go idle: Config.Idle is a minute); then a second member
// joins the group, takes a partition without reading it, and leaves, and
// the rest of partition 1 comes. Every flow counts once, none late, and
// the alerts are those of the flows in time order, once each: the held
// records and the pause survive the revocation and reassignment.
func TestRunAlignsAcrossRebalance(t *testing.T) {
	brokers := testenv.FakeKafka(t, 2, "flows-enriched", "alerts")
	fs := driftTraffic(20)
	e := newTestEngine(t, testConfig(), DefaultThresholds())
	e.Assign(0, wall)
	e.Assign(1, wall)
	want := feed(t, e, fs...)
	e.Tick(wall.Add(time.Hour))
	want = append(want, e.Alerts()...)

	produce := func(keep func(flow) bool) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		var rs []*kgo.Record
		for _, f := range fs {
			if keep(f) {
				rs = append(rs, &kgo.Record{Topic: "flows-enriched", Partition: f.part, Value: record(t, f)})
			}
		}
		if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	early := func(f flow) bool { return f.part == 0 || f.at < 20*time.Second }
	produce(early)

	cfg := DefaultConfig()
	cfg.Brokers, cfg.TransactionalID, cfg.Group = brokers, "detector-align-rebalance", "detector-align-rebalance"
	cfg.TransactionInterval, cfg.Idle = 200*time.Millisecond, time.Minute
	d, _ := runDetector(t, cfg)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after 30 s", what)
			}
		}
	}
	waitFor("partition 0 paused", func() bool { return testutil.ToFloat64(d.m.paused) == 1 })

	got := make(chan struct{}, 1)
	other, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup(cfg.Group), kgo.ConsumeTopics(cfg.Topic),
		kgo.DisableAutoCommit(), kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			if len(a[cfg.Topic]) > 0 {
				select {
				case got <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	other.PollFetches(canceled()) // joins the group
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the second member got no partition in 30 s")
	}
	other.Close() // leaves the group: the detector gets both partitions back
	produce(func(f flow) bool { return !early(f) })

	alerts, _ := readAlerts(t, brokers, "alerts", len(want))
	sortAlerts(alerts)
	sortAlerts(want)
	if !slices.Equal(briefs(t, alerts), briefs(t, want)) {
		t.Fatalf("alerts on the topic:\n%v\nwant\n%v", briefs(t, alerts), briefs(t, want))
	}
	waitFor("every flow counted", func() bool { return testutil.ToFloat64(d.m.flowsIn) >= float64(len(fs)) })
	if in, late := testutil.ToFloat64(d.m.flowsIn), testutil.ToFloat64(d.m.dropped[dropLate]); in != float64(len(fs)) || late != 0 {
		t.Errorf("flows_in_total %v, dropped late %v; want %d, 0", in, late, len(fs))
	}
	if p := testutil.ToFloat64(d.m.paused); p != 0 {
		t.Errorf("paused_partitions %v at the end, want 0", p)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
