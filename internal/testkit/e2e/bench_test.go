package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/inserter"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
)

// Settings of the collect benchmark (make bench-collect).
const (
	benchPartitions = 6 // the compose stacks' KAFKA_PARTITIONS
	stepDuration    = 10 * time.Second
	// maxDrain is how soon after the last datagram every flow must be
	// stored for a rate to count as kept up: a pipeline slower than the
	// rate ends a step with a backlog that takes longer to clear.
	maxDrain       = 2 * time.Second
	latencyRate    = 20_000
	latencyTime    = 10 * time.Second
	lowLatencyNote = "the stacks' goflow2 flags, inserter -flush.dur=100ms"
)

// benchRates are the steps of the search for the highest loss-free rate.
var benchRates = []float64{5_000, 10_000, 20_000, 30_000, 40_000, 60_000, 80_000, 100_000, 130_000, 160_000, 200_000}

// pipeline is one measured path: a source (goflow2 fed by the mocker's
// IPFIX, or the mocker writing to Kafka) into a topic, and an inserter
// storing it into PostgreSQL.
type pipeline struct {
	b       *testing.B
	kafka   *testenv.Kafka
	topic   string
	g       *goflow2Proc // nil: the mocker writes to Kafka
	ins     *inserter.Inserter
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
	sent    uint64 // flows sent so far
	seed    int64
	collect bool
}

func newPipeline(b *testing.B, kafka *testenv.Kafka, pg *testenv.Postgres, collect bool, goflow2Flags []string, flush time.Duration) *pipeline {
	b.Helper()
	p := &pipeline{b: b, kafka: kafka, topic: testenv.UniqueName(b), collect: collect, reg: prometheus.NewRegistry()}
	kafka.CreateTopic(b, p.topic, benchPartitions)
	if collect {
		p.g = startGoflow2(b, goflow2Binary(b), kafka.Brokers()[0], p.topic, goflow2Flags...)
	}
	var err error
	p.ins, err = inserter.New(inserter.Config{Brokers: kafka.Brokers(), Topic: p.topic, Group: p.topic,
		KafkaVersion: kafka.Version(), PostgresDSN: pg.CreateDB(b, p.topic), FlushInterval: flush},
		testLogger(b), p.reg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan error, 1)
	go func() { p.done <- p.ins.Run(ctx) }()
	b.Cleanup(p.stop)
	return p
}

func (p *pipeline) stop() {
	if p.cancel != nil {
		p.cancel()
		if err := <-p.done; err != nil {
			p.b.Errorf("inserter: %v", err)
		}
		p.cancel = nil
	}
}

// stepResult is one run of the source at a rate.
type stepResult struct {
	rate, achieved float64
	flows          uint64
	datagrams      uint64
	lost           string // why flows were lost, or ""
	drain          time.Duration
	stored         bool
}

func (r stepResult) ok() bool {
	return r.lost == "" && r.stored && r.drain <= maxDrain && r.achieved >= 0.97*r.rate
}

// send runs the mocker at rate for d, then waits until every flow sent so
// far is stored (or maxWait passes).
func (p *pipeline) send(rate float64, d time.Duration, maxWait time.Duration) stepResult {
	b := p.b
	r := stepResult{rate: rate}
	count := uint64(rate * d.Seconds())
	p.seed++
	cfg := mocker.Config{Count: count, Rate: rate, Seed: p.seed, ProgressInterval: -1}
	var before udpDrops
	var receivedBefore float64
	if p.collect {
		cfg.Output, cfg.Collector = mocker.OutputIPFIX, fmt.Sprintf("127.0.0.1:%d", p.g.ports["netflow"])
		before = readUDPDrops(b, p.g.ports["netflow"])
		receivedBefore = metricSum(httpBody(b, "http://"+p.g.httpAddr+"/metrics"), "goflow2_flow_traffic_packets_total")
	} else {
		cfg.Brokers, cfg.Topic, cfg.KafkaVersion = p.kafka.Brokers(), p.topic, p.kafka.Version()
	}
	m, err := mocker.New(cfg, testLogger(b), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := m.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	end := time.Now()
	s := m.Summary()
	r.flows, r.datagrams = s.Totals.Flows, s.Totals.Datagrams
	busy := end.Sub(start)
	if p.collect {
		busy -= 100 * time.Millisecond // the templates' warm-up pause
	}
	r.achieved = float64(r.flows) / busy.Seconds()
	p.sent += r.flows

	if p.collect {
		var received float64
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			received = metricSum(httpBody(b, "http://"+p.g.httpAddr+"/metrics"), "goflow2_flow_traffic_packets_total") - receivedBefore
			if received >= float64(r.datagrams) {
				break
			}
		}
		after := readUDPDrops(b, p.g.ports["netflow"])
		var why []string
		if n := after.sockets - before.sockets; n > 0 {
			why = append(why, fmt.Sprintf("kernel dropped %d datagrams", n))
		}
		if received != float64(r.datagrams) {
			why = append(why, fmt.Sprintf("goflow2 read %v of %d datagrams", received, r.datagrams))
		}
		if n := metricSum(httpBody(b, "http://"+p.g.httpAddr+"/metrics"), "goflow2_flow_dropped_packets_total"); n > 0 {
			why = append(why, fmt.Sprintf("goflow2 dropped %v datagrams (queue full)", n))
		}
		r.lost = strings.Join(why, ", ")
	}
	for deadline := end.Add(maxWait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if p.ins.Stored() >= p.sent {
			r.stored, r.drain = true, time.Since(end)
			break
		}
	}
	if !r.stored {
		r.drain = time.Since(end)
		if r.lost == "" {
			r.lost = fmt.Sprintf("%d of %d flows stored after %s", p.ins.Stored(), p.sent, maxWait)
		}
		p.sent = p.ins.Stored() // the next step starts from what is there
	}
	return r
}

// latencyBuckets reads the inserter's latency histogram: bucket upper
// bounds and cumulative counts.
func latencyBuckets(b *testing.B, reg *prometheus.Registry) (bounds []float64, counts []uint64) {
	fams, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "flowpipeline_inserter_flow_latency_seconds" {
			for _, bk := range f.GetMetric()[0].GetHistogram().GetBucket() {
				bounds = append(bounds, bk.GetUpperBound())
				counts = append(counts, bk.GetCumulativeCount())
			}
		}
	}
	if len(bounds) == 0 {
		b.Fatal("the inserter exports no flowpipeline_inserter_flow_latency_seconds")
	}
	return bounds, counts
}

// quantile is histogram_quantile over the observations counted since
// base (cumulative bucket counts of an earlier read; nil: all).
func quantile(bounds []float64, counts, base []uint64, q float64) float64 {
	n := func(i int) float64 {
		if base == nil {
			return float64(counts[i])
		}
		return float64(counts[i] - base[i])
	}
	total := 0.0
	if len(counts) > 0 {
		total = n(len(counts) - 1)
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i, upper := range bounds {
		if cum := n(i); cum >= rank && cum > 0 {
			if math.IsInf(upper, 1) {
				return lower
			}
			return lower + (upper-lower)*(rank-below)/(cum-below)
		} else {
			lower, below = upper, cum
		}
	}
	return math.Inf(1) // +Inf bucket included, so only without observations
}

// BenchmarkCollect is make bench-collect: the highest rate at which
// goflow2 → Kafka → inserter → PostgreSQL keeps up with no datagram lost
// (stepping the rate), and the latency from the collector's time_received
// to the commit at 20,000 flows/s, with the default settings and with the
// low-latency ones; each next to the Kafka-direct mocker at the same rate.
func BenchmarkCollect(b *testing.B) {
	kafka := testenv.SharedKafka(b)
	pg := testenv.SharedPostgres(b)
	goflow2Binary(b) // skip (or fail) early without it
	for range b.N {
		var out strings.Builder
		loadavg, _ := os.ReadFile("/proc/loadavg")
		fmt.Fprintf(&out, "\n== Collect path: goflow2 v2.2.6 (IPFIX) → Kafka (%d partitions) → inserter → PostgreSQL, on this machine (%d CPUs, load average %s) ==\n",
			benchPartitions, runtime.NumCPU(), strings.Join(strings.Fields(string(loadavg))[:3], " "))
		fmt.Fprintf(&out, "Highest rate kept up: every flow stored, within %s of the last datagram, none lost; %s per step\n", maxDrain, stepDuration)
		best := map[bool]float64{}
		for _, collect := range []bool{true, false} {
			name := "Kafka-direct mocker"
			if collect {
				name = "goflow2 (IPFIX)"
			}
			p := newPipeline(b, kafka, pg, collect, stackGoflow2Flags, 0)
			for _, rate := range benchRates {
				r := p.send(rate, stepDuration, 30*time.Second)
				verdict := "kept up"
				switch {
				case r.achieved < 0.97*rate:
					verdict = fmt.Sprintf("the mocker reached only %.0f flows/s: the load generator is the limit", r.achieved)
				case r.lost != "":
					verdict = "LOST: " + r.lost
				case r.drain > maxDrain:
					verdict = "fell behind"
				}
				fmt.Fprintf(&out, "  %-20s %7.0f flows/s: sent %d flows (%d datagrams) at %.0f/s, all stored %s after the last: %s\n",
					name, rate, r.flows, r.datagrams, r.achieved, r.drain.Round(time.Millisecond), verdict)
				if !r.ok() {
					break
				}
				best[collect] = rate
			}
			p.stop()
		}
		fmt.Fprintf(&out, "LOSS-FREE RATE: goflow2 → Kafka → inserter → PostgreSQL %.0f flows/s; Kafka-direct mocker → inserter → PostgreSQL %.0f flows/s\n",
			best[true], best[false])
		b.ReportMetric(best[true], "collect_flows/s")
		b.ReportMetric(best[false], "kafka_direct_flows/s")

		fmt.Fprintf(&out, "Latency at %d flows/s for %s after a 2 s warm-up, time_received → commit (inserter histogram flowpipeline_inserter_flow_latency_seconds, interpolated in its buckets):\n",
			latencyRate, latencyTime)
		for _, v := range []struct {
			name    string
			collect bool
			flags   []string
			flush   time.Duration
			metric  string
		}{
			{"goflow2 (IPFIX), defaults", true, stackGoflow2Flags, 0, "collect"},
			{"Kafka-direct mocker, defaults", false, nil, 0, "kafka_direct"},
			{"goflow2 (IPFIX), goflow2's 5 s flush", true, nil, 0, "collect_goflow2_flush"},
			{"goflow2 (IPFIX), low latency", true, stackGoflow2Flags, 100 * time.Millisecond, "collect_low"},
			{"Kafka-direct mocker, low latency", false, nil, 100 * time.Millisecond, "kafka_direct_low"},
		} {
			p := newPipeline(b, kafka, pg, v.collect, v.flags, v.flush)
			// Warm up first (consumer group join, goflow2's producer and
			// templates), and count only what comes after.
			p.send(latencyRate, 2*time.Second, time.Minute)
			bounds, base := latencyBuckets(b, p.reg)
			r := p.send(latencyRate, latencyTime, time.Minute)
			_, counts := latencyBuckets(b, p.reg)
			p50, p99 := quantile(bounds, counts, base, 0.5), quantile(bounds, counts, base, 0.99)
			p.stop()
			note := ""
			if r.lost != "" || !r.stored {
				note = " (LOST: " + r.lost + ")"
			}
			fmt.Fprintf(&out, "  %-38s p50 %6.3f s  p99 %6.3f s  (%d flows)%s\n", v.name, p50, p99, r.flows, note)
			b.ReportMetric(p50, v.metric+"_p50_s")
			b.ReportMetric(p99, v.metric+"_p99_s")
		}
		fmt.Fprintf(&out, "  defaults: the collect stacks' goflow2 flags (%s), the mocker's and the inserter's defaults (-flush.dur=1s); goflow2's 5 s flush: without -transport.kafka.flushfreq; low latency: %s\n",
			strings.Join(stackGoflow2Flags, " "), lowLatencyNote)
		fmt.Print(out.String())
	}
}

// TestQuantile: the benchmark's quantiles are histogram_quantile's, over
// the observations since a base read.
func TestQuantile(t *testing.T) {
	bounds := []float64{0.5, 1, 2, math.Inf(1)}
	base := []uint64{10, 10, 10, 10}     // 10 observations under 0.5 s before
	counts := []uint64{10, 60, 110, 110} // then 50 in (0.5, 1] and 50 in (1, 2]
	for _, tc := range []struct{ q, want float64 }{
		{0.5, 1},     // rank 50: the top of (0.5, 1]
		{0.25, 0.75}, // rank 25: half way through (0.5, 1]
		{0.99, 1.98}, // rank 99: 49/50 of (1, 2]
	} {
		if got := quantile(bounds, counts, base, tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("quantile %v = %v, want %v", tc.q, got, tc.want)
		}
	}
	// Without the base, the 10 early ones count: rank 60 of 110 is the top of (0.5, 1].
	if got := quantile(bounds, counts, nil, 60.0/110); math.Abs(got-1) > 1e-9 {
		t.Errorf("quantile without base = %v, want 1", got)
	}
	// Past the last finite bound: its value, as histogram_quantile.
	if got := quantile(bounds, []uint64{0, 0, 0, 5}, nil, 0.5); got != 2 {
		t.Errorf("quantile in +Inf = %v, want 2", got)
	}
}
