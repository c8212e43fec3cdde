package inserter

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// latencyHistogram returns flow_latency_seconds from reg: the sample
// count, the sum and the cumulative count per upper bound.
func latencyHistogram(t *testing.T, reg prometheus.Gatherer) (count uint64, sum float64, buckets map[float64]uint64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "flowpipeline_inserter_flow_latency_seconds" {
			continue
		}
		if mf.GetType() != dto.MetricType_HISTOGRAM || len(mf.GetMetric()) != 1 {
			t.Fatalf("flow_latency_seconds is a %s with %d series, want one histogram", mf.GetType(), len(mf.GetMetric()))
		}
		h := mf.GetMetric()[0].GetHistogram()
		buckets = map[float64]uint64{}
		for _, b := range h.GetBucket() {
			buckets[b.GetUpperBound()] = b.GetCumulativeCount()
		}
		return h.GetSampleCount(), h.GetSampleSum(), buckets
	}
	t.Fatal("flowpipeline_inserter_flow_latency_seconds is not registered")
	return 0, 0, nil
}

// TestObserveLatency places known latencies in their buckets (upper
// bounds inclusive, as Prometheus's) and counts the flows it cannot
// observe by reason.
func TestObserveLatency(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	at := now.UnixNano()
	ago := func(d time.Duration) int64 { return at - int64(d) }
	cases := []struct {
		name        string
		received    []int64
		wantBuckets map[float64]uint64 // cumulative
		wantCount   uint64
		wantSum     float64
		missing     int64
		skew        int64
	}{
		{name: "none", wantBuckets: map[float64]uint64{0.001: 0, 1: 0, 120: 0}},
		{name: "same instant", received: []int64{at}, wantBuckets: map[float64]uint64{0.001: 1, 120: 1}, wantCount: 1},
		{name: "on bounds", received: []int64{ago(time.Millisecond), ago(time.Second), ago(2 * time.Second), ago(120 * time.Second)},
			wantBuckets: map[float64]uint64{0.001: 1, 0.75: 1, 1: 2, 1.5: 2, 2: 3, 60: 3, 120: 4}, wantCount: 4, wantSum: 123.001},
		{name: "above the last bound", received: []int64{ago(121 * time.Second), ago(time.Hour)},
			wantBuckets: map[float64]uint64{120: 0}, wantCount: 2, wantSum: 3721},
		{name: "not observable", received: []int64{0, -5, at + 1, ago(300 * time.Millisecond)},
			wantBuckets: map[float64]uint64{0.25: 0, 0.5: 1, 120: 1}, wantCount: 1, wantSum: 0.3, missing: 2, skew: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := newMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			m.observeLatency(c.received, now)
			count, sum, buckets := latencyHistogram(t, reg)
			if count != c.wantCount {
				t.Errorf("count %d, want %d", count, c.wantCount)
			}
			if d := sum - c.wantSum; d > 1e-6 || d < -1e-6 {
				t.Errorf("sum %.9f, want %.9f", sum, c.wantSum)
			}
			if len(buckets) != len(latencyBuckets) {
				t.Errorf("%d buckets, want %d", len(buckets), len(latencyBuckets))
			}
			for le, want := range c.wantBuckets {
				if got, ok := buckets[le]; !ok || got != want {
					t.Errorf("bucket le=%g holds %d (present %v), want %d", le, got, ok, want)
				}
			}
			if got := metric(t, reg, "flowpipeline_inserter_flow_latency_unobserved_total", "reason", LatencyNoTimeReceived); got != c.missing {
				t.Errorf("unobserved{no_time_received} %d, want %d", got, c.missing)
			}
			if got := metric(t, reg, "flowpipeline_inserter_flow_latency_unobserved_total", "reason", LatencyClockSkew); got != c.skew {
				t.Errorf("unobserved{clock_skew} %d, want %d", got, c.skew)
			}
		})
	}
}

// TestFlowLatencyEndToEnd runs the inserter over flows received at known
// times before now: every stored flow is observed once, in the bucket its
// age at commit falls in.
func TestFlowLatencyEndToEnd(t *testing.T) {
	brokers := testenv.FakeKafka(t, 3, "flows")
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	now := time.Now()
	// Each group is 10 µs apart per flow; the margins (20 s and more) cover
	// the time to produce and drain.
	old, totOld := flowtest.Records(1, 3000, 1, now.Add(-2*time.Hour))       // > 120 s: only +Inf
	minute, totMin := flowtest.Records(2, 2000, 4, now.Add(-90*time.Second)) // (60, 120]
	half, totHalf := flowtest.Records(3, 1000, 1, now.Add(-40*time.Second))  // (30, 60]
	flowtest.Produce(t, brokers, "flows", append(append(old, minute...), half...))
	total := totOld.Flows + totMin.Flows + totHalf.Flows

	r := start(t, Config{Brokers: brokers, Group: "g", PostgresDSN: dsn, FlushCount: 1000, FlushInterval: 100 * time.Millisecond})
	r.waitStored(t, uint64(total), time.Minute)
	if time.Since(now) > 20*time.Second {
		t.Fatalf("producing and storing took %s: the buckets below assume less than 20s", time.Since(now))
	}
	r.stop(t)
	flowtest.Check(t, dsn, flowtest.Totals{Flows: total, Bytes: totOld.Bytes + totMin.Bytes + totHalf.Bytes,
		Packets: totOld.Packets + totMin.Packets + totHalf.Packets})

	count, sum, buckets := latencyHistogram(t, r.reg)
	if count != uint64(total) {
		t.Errorf("flow_latency_seconds counted %d flows, want %d (every stored flow once)", count, total)
	}
	if stored := metric(t, r.reg, "flowpipeline_inserter_flows_stored_total"); uint64(stored) != count {
		t.Errorf("flows_stored_total %d, flow_latency_seconds count %d: want equal", stored, count)
	}
	want := map[float64]uint64{30: 0, 60: uint64(totHalf.Flows), 120: uint64(totHalf.Flows + totMin.Flows)}
	for le, w := range want {
		if buckets[le] != w {
			t.Errorf("bucket le=%g holds %d flows, want %d", le, buckets[le], w)
		}
	}
	if lo := float64(totOld.Flows)*7200 + float64(totMin.Flows)*90 + float64(totHalf.Flows)*40; sum < lo || sum > lo+float64(total)*20 {
		t.Errorf("latency sum %.0fs, want between %.0f and %.0f", sum, lo, lo+float64(total)*20)
	}
	for _, reason := range []string{LatencyNoTimeReceived, LatencyClockSkew} {
		if got := metric(t, r.reg, "flowpipeline_inserter_flow_latency_unobserved_total", "reason", reason); got != 0 {
			t.Errorf("unobserved{%s} %d, want 0", reason, got)
		}
	}
}

// BenchmarkObserveLatency is the latency histogram's cost per stored flow
// (a batch of 10,000 flows per op), next to the drain's ~5 µs per flow.
func BenchmarkObserveLatency(b *testing.B) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	recv := make([]int64, 10000)
	for i := range recv {
		recv[i] = now.Add(-time.Duration(i) * 100 * time.Microsecond).UnixNano()
	}
	b.ResetTimer()
	for b.Loop() {
		m.observeLatency(recv, now)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recv)), "ns/flow")
}
