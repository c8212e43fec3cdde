package detector

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// readAlerts reads topic read_committed from the start until want records
// came and two seconds passed without more.
func readAlerts(t *testing.T, brokers []string, topic string, want int) (alerts []Alert, keys []string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadline, quiet := time.Now().Add(time.Minute), time.Time{}
	for {
		if len(alerts) >= want {
			if quiet.IsZero() {
				quiet = time.Now().Add(2 * time.Second)
			} else if time.Now().After(quiet) {
				return alerts, keys
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d alerts after a minute, want %d: %v", topic, len(alerts), want, briefs(t, alerts))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var a Alert
			if err := json.Unmarshal(r.Value, &a); err != nil {
				t.Errorf("alert %q: %v", r.Value, err)
			}
			alerts = append(alerts, a)
			keys = append(keys, string(r.Key))
		})
		cancel()
	}
}

// attackTraffic is two attacks (DNS amplification on .7 from 0 to 20 s,
// a SYN flood on .9 from 5 to 25 s) over background traffic, with the
// alerts the engine decides for it once every step is closed.
func attackTraffic(t *testing.T) ([]flow, []Alert) {
	th := DefaultThresholds()
	syn := flow{dst: "203.0.113.9", src: "192.0.2.1", proto: 6, tcpFlags: 2, packets: 3 * th.Addr[VectorSYN].Pps / 1000, rate: 100, srcAS: 64500, sampler: "192.0.2.3"}
	syn.bytes = syn.packets * 60
	bg := every(flow{dst: "198.51.100.1", src: "192.0.2.9", proto: 6, tcpFlags: 0x18, packets: 1, bytes: 100, rate: 1}, 0, 45, 50)
	all := merge(every(dnsFlow("203.0.113.7", 2*th.Addr[VectorDNS].Pps/1000), 0, 20, 10), every(syn, 5, 25, 10), bg)
	e := newTestEngine(t, testConfig(), th)
	want := feed(t, e, all...)
	e.Tick(wall.Add(time.Hour))
	want = append(want, e.Alerts()...)
	// 2 attacks: start, 3 updates while at full rate, 2 after, end.
	if len(want) != 14 {
		t.Fatalf("the engine alone decided %d alerts, want 14: %v", len(want), briefs(t, want))
	}
	return all, want
}

func sortAlerts(as []Alert) {
	slices.SortStableFunc(as, func(a, b Alert) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(a.Target+a.Vector, b.Target+b.Vector)
	})
}

// runDetector runs the detector until the test ends.
func runDetector(t *testing.T, cfg Config) (*Detector, *prometheus.Registry) {
	t.Helper()
	d, reg, stop := startDetector(t, cfg)
	t.Cleanup(stop)
	return d, reg
}

// startDetector runs the detector until stop.
func startDetector(t *testing.T, cfg Config) (*Detector, *prometheus.Registry, func()) {
	t.Helper()
	reg := prometheus.NewRegistry()
	d, err := New(cfg, testLogger(), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	return d, reg, func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v", err)
			}
		})
	}
}

// checkRun runs the detector over the attack traffic on brokers and
// checks that the alerts topic holds exactly the engine's alerts, once
// each, keyed by target, and the metrics count them.
func checkRun(t *testing.T, brokers []string, in, out string) {
	all, want := attackTraffic(t)
	values := make([][]byte, 0, len(all)+3)
	for i, f := range all {
		values = append(values, record(t, f))
		if i == 100 {
			values = append(values, []byte{}, []byte{0xff}, []byte{5, 1})
		}
	}
	flowtest.Produce(t, brokers, in, values)

	cfg := DefaultConfig()
	cfg.Brokers, cfg.Topic, cfg.AlertsTopic, cfg.TransactionalID = brokers, in, out, "detector-test-"+in
	cfg.Group = "detector-" + in
	cfg.TransactionInterval, cfg.Idle = 200*time.Millisecond, time.Second
	d, reg := runDetector(t, cfg)
	got, keys := readAlerts(t, brokers, out, len(want))
	for i, a := range got {
		if keys[i] != a.Target {
			t.Errorf("alert %d keyed %q, want its target %q", i, keys[i], a.Target)
		}
	}
	sortAlerts(got)
	sortAlerts(want)
	if !slices.EqualFunc(briefs(t, got), briefs(t, want), func(a, b brief) bool { return a == b }) {
		t.Fatalf("alerts on the topic:\n%v\nwant\n%v", briefs(t, got), briefs(t, want))
	}
	for i := range got {
		if got[i].ID != want[i].ID || !slices.Equal(got[i].TopSrcAddr, want[i].TopSrcAddr) {
			t.Errorf("alert %d: id %s sources %v, want %s %v", i, got[i].ID, got[i].TopSrcAddr, want[i].ID, want[i].TopSrcAddr)
		}
	}
	waitMetric := func(name string, c prometheus.Collector, want float64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(c) != want; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%s = %v, want %v", name, testutil.ToFloat64(c), want)
				return
			}
		}
	}
	waitMetric("alerts_total{start,dns-amp}", d.m.alerts.WithLabelValues("start", "dns-amp"), 1)
	waitMetric("alerts_total{end,syn}", d.m.alerts.WithLabelValues("end", "syn"), 1)
	waitMetric("alerts_total{update,syn}", d.m.alerts.WithLabelValues("update", "syn"), 5)
	waitMetric("flows_in_total", d.m.flowsIn, float64(len(all)))
	for _, r := range []string{pb.ReasonEmpty, pb.ReasonBadLength, pb.ReasonTruncated} {
		waitMetric("records_invalid_total{"+r+"}", d.m.invalid.WithLabelValues(r), 1)
	}
	waitMetric("active_attacks{syn}", d.m.active.WithLabelValues("syn"), 0)
	if n := testutil.CollectAndCount(d.m.delay); n != 1 {
		t.Errorf("detection delay histogram: %d series", n)
	}
	if a := d.Active(); len(a) != 0 {
		t.Errorf("active after every end: %v", briefs(t, a))
	}
	_ = reg
}

// TestRunExactlyOnceFake: on kfake, one partition.
func TestRunExactlyOnceFake(t *testing.T) {
	brokers := testenv.FakeKafka(t, 1, "flows-enriched", "alerts")
	checkRun(t, brokers, "flows-enriched", "alerts")
}

// TestRunExactlyOnceKafka: on the real broker, three partitions read by
// one detector: the watermark waits for the slowest partition.
func TestRunExactlyOnceKafka(t *testing.T) {
	k := testenv.SharedKafka(t)
	in, out := "detector-in-"+t.Name(), "detector-alerts-"+t.Name()
	k.CreateTopic(t, in, 3)
	k.CreateTopic(t, out, 3)
	checkRun(t, k.Brokers(), in, out)
}

// TestRunResumesAfterRestart: a detector stopped in the middle of two
// attacks, and started again, continues them from the alerts topic: one
// start and one end each, every alert of an attack with the same id, and
// the end's duration that of a run without the restart.
func TestRunResumesAfterRestart(t *testing.T) {
	brokers := testenv.FakeKafka(t, 1, "flows-enriched", "alerts")
	all, want := attackTraffic(t)
	cut := 0
	for cut < len(all) && all[cut].at < 12*time.Second {
		cut++
	}
	produce := func(fs []flow) {
		values := make([][]byte, 0, len(fs))
		for _, f := range fs {
			values = append(values, record(t, f))
		}
		flowtest.Produce(t, brokers, "flows-enriched", values)
	}
	cfg := DefaultConfig()
	cfg.Brokers, cfg.TransactionalID = brokers, "detector-resume"
	cfg.TransactionInterval, cfg.Idle = 200*time.Millisecond, time.Second

	produce(all[:cut])
	_, _, stop := startDetector(t, cfg)
	// Both attacks started (at 3 s and 8 s of event time) before the stop.
	readAlerts(t, brokers, "alerts", 3)
	stop()
	produce(all[cut:])
	runDetector(t, cfg)
	got, _ := readAlerts(t, brokers, "alerts", 8)
	type key struct{ target, vector string }
	starts, ends, ids := map[key]int{}, map[key]Alert{}, map[key]map[string]bool{}
	for _, a := range got {
		k := key{a.Target, a.Vector}
		if ids[k] == nil {
			ids[k] = map[string]bool{}
		}
		ids[k][a.ID] = true
		switch a.Event {
		case EventStart:
			starts[k]++
		case EventEnd:
			ends[k] = a
		}
	}
	for _, w := range want {
		if w.Event != EventEnd {
			continue
		}
		k := key{w.Target, w.Vector}
		if starts[k] != 1 || len(ids[k]) != 1 || !ids[k][w.ID] {
			t.Errorf("%v: %d starts, ids %v; want 1 start and the id %s", k, starts[k], ids[k], w.ID)
		}
		if e, ok := ends[k]; !ok || e.DurationS != w.DurationS || e.Started != w.Started || e.At != w.At {
			t.Errorf("%v: end %+v, want duration %v from %s at %s", k, e, w.DurationS, w.Started, w.At)
		}
	}
	if len(starts) != 2 || len(ends) != 2 {
		t.Errorf("attacks with a start %v, with an end %v; want the two", starts, ends)
	}
}
