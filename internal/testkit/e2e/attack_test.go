package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/detector"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
)

// The acceptance test of the detector (issue 15), on the real Kafka
// broker: the mocker's normal traffic, ten minutes of event time of it
// alone, then one attack of each vector on its own target at known event
// times, through Kafka to the detector, whose alerts are read back from
// the alerts topic.
const (
	acceptRate   = 1000             // normal flows per second of event time (the mocker's default)
	quietPeriod  = 10 * time.Minute // normal traffic alone: no alert may fire
	attackEvery  = 5 * time.Second  // attacks start one after the other...
	attackLength = 30 * time.Second // ...and last this long
	tailPeriod   = 40 * time.Second // normal traffic after the last attack, so its end is seen
	maxDelay     = 10 * time.Second // a start alert's at, after the attack's first flow
)

// acceptAttacks: one attack per vector, each on a target of its own (at
// the fra1 and nyc1 sites, IPv4 and IPv6), at twice the packet rate of the
// detector's built-in threshold for its vector: well above it, and below
// the total's thresholds for every vector but total.
func acceptAttacks(t *testing.T) []mocker.Attack {
	targets := map[string]string{
		mocker.VectorDNSAmp: "203.0.113.10", mocker.VectorNTPAmp: "2001:db8:300::11", mocker.VectorSSDPAmp: "203.0.113.12",
		mocker.VectorMemcachedAmp: "203.0.113.13", mocker.VectorCLDAPAmp: "2001:db8:200::14", mocker.VectorChargenAmp: "203.0.113.15",
		mocker.VectorSNMPAmp: "100.64.40.16", mocker.VectorUDPFlood: "203.0.113.17", mocker.VectorSYN: "2001:db8:300::18",
		mocker.VectorICMPFlood: "203.0.113.19", mocker.VectorFragment: "100.64.40.20", mocker.VectorTotal: "203.0.113.21",
	}
	th := detector.DefaultThresholds()
	var out []mocker.Attack
	// Total last: the other vectors first, in the mocker's order.
	vectors := append(slices.Clone(mocker.Vectors[1:]), mocker.VectorTotal)
	for i, name := range vectors {
		v, ok := detector.ParseVector(name)
		if !ok || th.Addr[v].Pps == 0 {
			t.Fatalf("the detector has no packet threshold for the mocker's vector %s", name)
		}
		out = append(out, mocker.Attack{Target: netip.MustParseAddr(targets[name]), Vector: name,
			Start: quietPeriod + time.Duration(i)*attackEvery, Duration: attackLength, PPS: 2 * float64(th.Addr[v].Pps)})
	}
	return out
}

// expectedAttackFlows is how many flows the mocker sends for a: one every
// second divided by pps over the plan's largest sampling rate (4096), at
// least one and at most 1000 a second, over its duration.
func expectedAttackFlows(a mocker.Attack) uint64 {
	every := time.Duration(float64(time.Second) / min(max(a.PPS/4096, 1), 1000))
	return uint64(math.Ceil(float64(a.Duration) / float64(every)))
}

func TestAttacksDetected(t *testing.T) {
	k := testenv.SharedKafka(t)
	name := testenv.UniqueName(t)
	flowsTopic, alertsTopic := name+"-flows", name+"-alerts"
	k.CreateTopic(t, flowsTopic, 6)
	k.CreateTopic(t, alertsTopic, 1)
	logger := testLogger(t)

	// The detector first, so it waits for the flows like a live one.
	dcfg := detector.DefaultConfig()
	dcfg.Brokers, dcfg.Topic, dcfg.AlertsTopic = k.Brokers(), flowsTopic, alertsTopic
	dcfg.Group, dcfg.TransactionalID = name, name
	dreg := prometheus.NewRegistry()
	det, err := detector.New(dcfg, logger, dreg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	detDone := make(chan error, 1)
	dctx, dstop := context.WithCancel(ctx)
	go func() { detDone <- det.Run(dctx) }()
	defer func() {
		dstop()
		if err := <-detDone; err != nil {
			t.Errorf("detector Run: %v", err)
		}
	}()

	// The mocker: event time from two hours ago (within the detector's
	// MaxFuture, whatever the clock), as fast as it goes.
	attacks := acceptAttacks(t)
	last := attacks[len(attacks)-1]
	normal := uint64((last.Start + last.Duration + tailPeriod).Seconds() * acceptRate)
	count := normal
	for _, a := range attacks {
		count += expectedAttackFlows(a)
	}
	t0 := time.Now().UTC().Truncate(time.Minute).Add(-2 * time.Hour)
	m, err := mocker.New(mocker.Config{Brokers: k.Brokers(), Topic: flowsTopic, KafkaVersion: k.Version(),
		Rate: acceptRate, Count: count, Seed: 15, FlowsPerRecord: 10, SimulateStart: t0, Attacks: attacks,
		ProgressInterval: -1}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("mocker: %d flows (%d normal, %s of event time) in %s", count, normal,
		time.Duration(float64(normal)/acceptRate*float64(time.Second)), time.Since(began).Round(time.Millisecond))
	sums := m.AttackSummaries()
	for i, s := range sums {
		wantStart := t0.Add(attacks[i].Start).Format(time.RFC3339Nano)
		if s.Flows != expectedAttackFlows(attacks[i]) || s.Start != wantStart {
			t.Fatalf("attack %d injected %d flows from %s, want %d from %s", i, s.Flows, s.Start, expectedAttackFlows(attacks[i]), wantStart)
		}
	}

	// Every attack's end comes 10 s (EndAfter) or so after it stops,
	// before the traffic does: wait for an end alert per attack, then a
	// little more for any extra alert.
	alerts := readAlerts(t, ctx, k.Brokers(), alertsTopic, len(attacks), 5*time.Minute)
	// What the detector counted, for the log: a flow dropped is traffic
	// the thresholds never saw.
	mfs, err := dreg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var counted []string
	for _, mf := range mfs {
		switch mf.GetName() {
		case "flowpipeline_detector_flows_in_total", "flowpipeline_detector_flows_dropped_total",
			"flowpipeline_detector_target_evictions_total", "flowpipeline_detector_targets_full_total":
			for _, m := range mf.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				counted = append(counted, fmt.Sprintf("%s{%s} %.0f", mf.GetName(), strings.Join(labels, ","), m.GetCounter().GetValue()))
				// Watermark alignment keeps the partitions of the fast
				// replay together: no flow may be dropped as late.
				if mf.GetName() == "flowpipeline_detector_flows_dropped_total" && slices.Contains(labels, "reason=late") && m.GetCounter().GetValue() != 0 {
					t.Errorf("%.0f flows dropped as late, want 0", m.GetCounter().GetValue())
				}
			}
		}
	}
	t.Logf("detector: %s", strings.Join(counted, "; "))

	type key struct{ target, vector string }
	starts, ends := map[key][]detector.Alert{}, map[key][]detector.Alert{}
	injected := map[key]int{}
	for i, a := range attacks {
		injected[key{a.Target.String(), a.Vector}] = i
	}
	for _, a := range alerts {
		k := key{a.Target, a.Vector}
		if _, ok := injected[k]; !ok {
			t.Errorf("alert for %s %s, which was not attacked: %+v", a.Target, a.Vector, a)
			continue
		}
		if a.At.Before(t0.Add(quietPeriod)) {
			t.Errorf("alert at %s, during the first %s of normal traffic alone: %+v", a.At, quietPeriod, a)
		}
		switch a.Event {
		case detector.EventStart:
			starts[k] = append(starts[k], a)
		case detector.EventEnd:
			ends[k] = append(ends[k], a)
		}
	}
	var report []string
	for i, a := range attacks {
		k := key{a.Target.String(), a.Vector}
		began, _ := time.Parse(time.RFC3339Nano, sums[i].Start)
		stopped, _ := time.Parse(time.RFC3339Nano, sums[i].End)
		if len(starts[k]) != 1 || len(ends[k]) != 1 {
			t.Errorf("%s on %s: %d start and %d end alerts, want one each", a.Vector, k.target, len(starts[k]), len(ends[k]))
			continue
		}
		delay := starts[k][0].At.Sub(began)
		if delay < 0 || delay > maxDelay {
			t.Errorf("%s on %s: start alert at %s, %s after the attack began at %s; want within %s",
				a.Vector, k.target, starts[k][0].At.Format(time.RFC3339Nano), delay, sums[i].Start, maxDelay)
		}
		if end := ends[k][0]; end.At.Before(stopped) || end.ID != starts[k][0].ID {
			t.Errorf("%s on %s: end alert %s (id %s) before the attack's last flow at %s, or not the start's id %s",
				a.Vector, k.target, end.At.Format(time.RFC3339Nano), end.ID, sums[i].End, starts[k][0].ID)
		}
		report = append(report, fmt.Sprintf("%s %s", a.Vector, delay))
	}
	t.Logf("detection delays (event time, attack start to start alert): %s", strings.Join(report, ", "))
}

// readAlerts reads the alerts topic (read_committed) until it holds
// wantEnds end alerts, then 3 s more, or fails after timeout.
func readAlerts(t *testing.T, ctx context.Context, brokers []string, topic string, wantEnds int, timeout time.Duration) []detector.Alert {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []detector.Alert
	ends := 0
	deadline := time.Now().Add(timeout)
	var quietUntil time.Time
	for {
		if !quietUntil.IsZero() && time.Now().After(quietUntil) {
			return out
		}
		if time.Now().After(deadline) {
			t.Errorf("%d end alerts after %s, want %d (the checks below say which)", ends, timeout, wantEnds)
			return out
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			var a detector.Alert
			if err := json.Unmarshal(r.Value, &a); err != nil {
				t.Errorf("alert record %q: %v", r.Value, err)
				return
			}
			if string(r.Key) != a.Target {
				t.Errorf("alert keyed %q, want its target %q", r.Key, a.Target)
			}
			out = append(out, a)
			if a.Event == detector.EventEnd {
				ends++
			}
		})
		if ends >= wantEnds && quietUntil.IsZero() {
			quietUntil = time.Now().Add(3 * time.Second)
		}
	}
}
