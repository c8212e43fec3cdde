package detector

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

func dnsFlow(dst string, packets uint64) flow {
	return flow{dst: dst, src: "192.0.2.1", proto: 17, sport: 53, dport: 40000, packets: packets, bytes: packets * 100, rate: 100,
		srcAS: 15169, country: "US", net: "customer-a", exporter: "edge1.par1"}
}

// TestNetworkThresholds: five addresses of customer-a each get 20k pps of
// DNS answers, far below the per-address limits; the network's limit
// (50k pps in total) fires once for the network, no address alert.
func TestNetworkThresholds(t *testing.T) {
	th, err := ParseThresholds([]byte("networks:\n  customer-a: {pps: 50000}\n  customer-b: {pps: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var lists [][]flow
	for i := range 5 {
		// 10 flows/s × 20 packets × 1:100 = 20k pps each.
		lists = append(lists, every(dnsFlow("198.51.100."+string(rune('1'+i)), 20), 0, 10, 10))
	}
	lists = append(lists, background())
	e := newTestEngine(t, testConfig(), th)
	got := feed(t, e, merge(lists...)...)
	const pps = 100000
	want := []brief{
		{event: EventStart, target: "customer-a", net: "customer-a", vector: "total", at: 3 * time.Second, bps: pps * 800, pps: pps, flows: 50},
		{event: EventUpdate, target: "customer-a", net: "customer-a", vector: "total", at: 8 * time.Second, bps: pps * 800, pps: pps, flows: 50, peakPps: pps},
		// The mean over the last 10 s: 7 then 2 steps of the attack.
		{event: EventUpdate, target: "customer-a", net: "customer-a", vector: "total", at: 13 * time.Second, bps: pps * 7 / 10 * 800, pps: pps * 7 / 10, flows: 35, peakPps: pps},
		{event: EventUpdate, target: "customer-a", net: "customer-a", vector: "total", at: 18 * time.Second, bps: pps * 2 / 10 * 800, pps: pps * 2 / 10, flows: 10, peakPps: pps},
		{event: EventEnd, target: "customer-a", net: "customer-a", vector: "total", at: 20 * time.Second, bps: pps * 800, pps: pps, flows: 50, peakPps: pps, duration: 10},
	}
	diff(t, got, want)
}

// TestHysteresis: after 10 s at twice the threshold, 15 s at 0.9 of it
// keep the attack going (not below 0.8); it ends 10 s after the rate falls
// to 0.7 of the threshold, which is below 0.8 and so ends it though the
// traffic goes on.
func TestHysteresis(t *testing.T) {
	th := DefaultThresholds()
	tp := th.Addr[VectorDNS].Pps // 10 flows/s × p × 100
	hi := every(dnsFlow("203.0.113.7", 2*tp/1000), 0, 10, 10)
	mid := every(dnsFlow("203.0.113.7", 9*tp/10000), 10, 25, 10)
	lo := every(dnsFlow("203.0.113.7", 7*tp/10000), 25, 45, 10)
	c := testConfig()
	c.UpdateEvery = time.Minute // no updates: the test is about start and end
	e := newTestEngine(t, c, th)
	got := feed(t, e, merge(hi, mid, lo, every(flow{dst: "198.51.100.1", src: "192.0.2.9", proto: 6, packets: 1, bytes: 100, rate: 1}, 0, 50, 1))...)
	peak := 2 * tp
	// Mean over the 25 s not below: 10 s at 2 tp and 15 s at 0.9 tp.
	mean := (10*2*tp + 15*9*tp/10) / 25
	want := []brief{
		{event: EventStart, target: "203.0.113.7", net: "customer-a", vector: "dns-amp", at: 3 * time.Second, bps: peak * 800, pps: peak, flows: 10},
		{event: EventEnd, target: "203.0.113.7", net: "customer-a", vector: "dns-amp", at: 35 * time.Second, bps: mean * 800, pps: mean, flows: 10, peakPps: peak, duration: 25},
	}
	diff(t, got, want)
}

// TestLateness: flows up to Config.Lateness behind the newest count, older
// ones are dropped as late, and future and malformed ones are dropped
// with their reasons.
func TestLateness(t *testing.T) {
	e := newTestEngine(t, testConfig(), nil)
	f := flow{dst: "203.0.113.7", src: "192.0.2.1", proto: 6, packets: 1, bytes: 100, rate: 1}
	at := func(d time.Duration) flow { g := f; g.at = d; return g }
	feed(t, e,
		at(20*time.Second),
		at(15*time.Second),         // 5 s behind: step 15 is still open
		at(14*time.Second+999*1e6), // step 14 closed when the watermark reached 20 s
		at(30*time.Second),         // closes up to step 24
		at(25*time.Second),         // open
		at(24*time.Second+500*1e6), // late
		at(0),                      // late
		at(48*time.Hour),           // future: a day after the wall clock
	)
	bad := f
	bad.at = 31 * time.Second
	m := bad.msg()
	m.DstAddr = []byte{1, 2, 3}
	e.Add(m, 0, wall)
	m = bad.msg()
	m.TimeReceivedNs = 0
	e.Add(m, 0, wall)
	got := e.Take()
	want := Counts{Flows: 4}
	want.Dropped[dropLate] = 3
	want.Dropped[dropFuture] = 1
	want.Dropped[dropBadAddress] = 1
	want.Dropped[dropNoTime] = 1
	if got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
}

// TestReplayOrder: the same flows split over 6 "partitions" read in
// random interleavings (each partition in order, partitions up to a few
// seconds apart) give the same alerts, ids included, as the flows in time
// order.
func TestReplayOrder(t *testing.T) {
	th := DefaultThresholds()
	tp := th.Addr[VectorSYN].Pps
	syn := flow{dst: "203.0.113.9", src: "192.0.2.1", proto: 6, tcpFlags: 2, packets: 3 * tp / 1000, rate: 100, srcAS: 64500}
	syn.bytes = syn.packets * 60
	all := merge(every(syn, 2, 30, 10), every(dnsFlow("203.0.113.7", 2*th.Addr[VectorDNS].Pps/1000), 5, 22, 10), background())
	// Every step closed at the end: the partitions end at different times.
	run := func(fs []flow) ([]Alert, *Engine) {
		e := newTestEngine(t, testConfig(), th)
		for p := range int32(6) {
			e.Assign(p, wall) // as Run does on assignment
		}
		out := feed(t, e, fs...)
		e.Tick(wall.Add(time.Hour))
		return append(out, e.Alerts()...), e
	}
	ref, _ := run(all)
	if len(ref) < 4 {
		t.Fatalf("reference run gave %d alerts, want both attacks", len(ref))
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for range 5 {
		parts := make([][]flow, 6)
		for _, f := range all {
			p := rng.IntN(6)
			f.part = int32(p)
			parts[p] = append(parts[p], f)
		}
		// Interleave: take a run of flows from a random partition, as
		// fetches do, keeping the partitions within 12 s of each other
		// (more than the 5 s lateness, less than the 20 s Config.MaxSkew).
		var order []flow
		for {
			var live []int
			lo := time.Duration(1 << 62)
			for _, p := range parts {
				if len(p) > 0 {
					lo = min(lo, p[0].at)
				}
			}
			for i, p := range parts {
				if len(p) > 0 && p[0].at <= lo+10*time.Second {
					live = append(live, i)
				}
			}
			if len(live) == 0 {
				break
			}
			p := live[rng.IntN(len(live))]
			for n := 1 + rng.IntN(20); n > 0 && len(parts[p]) > 0 && parts[p][0].at <= lo+12*time.Second; n-- {
				order = append(order, parts[p][0])
				parts[p] = parts[p][1:]
			}
		}
		got, e := run(order)
		if c := e.Take(); c.Dropped[dropLate] != 0 {
			t.Fatalf("%d flows late; the interleaving is wider than the lateness", c.Dropped[dropLate])
		}
		if !reflect.DeepEqual(briefs(t, got), briefs(t, ref)) {
			t.Fatalf("alerts differ from the time-ordered run:\n got %v\nwant %v", briefs(t, got), briefs(t, ref))
		}
		for i := range got {
			if got[i].ID != ref[i].ID {
				t.Errorf("alert %d id %s, want %s", i, got[i].ID, ref[i].ID)
			}
		}
	}
}

// TestIdleEnds: when the flows stop, Tick advances event time with the
// wall clock after Config.Idle, and the attack ends.
func TestIdleEnds(t *testing.T) {
	th := DefaultThresholds()
	e := newTestEngine(t, testConfig(), th)
	p := 2 * th.Addr[VectorDNS].Pps // 10 flows/s × p/1000 packets × 1:100
	m := dnsFlow("203.0.113.7", p/1000)
	got := feed(t, e, every(m, 0, 10, 10)...)
	// The last flow, at 9.9 s, closed the steps up to 3.
	if len(got) != 1 || got[0].Event != EventStart {
		t.Fatalf("got %v, want a start", briefs(t, got))
	}
	// Idle + lateness + end.after + the last step, in wall time.
	e.Tick(wall.Add(4 * time.Second))
	if a := e.Alerts(); len(a) != 0 {
		t.Fatalf("before Config.Idle: %v", briefs(t, a))
	}
	e.Tick(wall.Add(5*time.Second + 5*time.Second + 10*time.Second + time.Second))
	got = append(got, e.Alerts()...)
	want := []brief{
		{event: EventStart, target: "203.0.113.7", net: "customer-a", vector: "dns-amp", at: 3 * time.Second, bps: p * 800, pps: p, flows: 10},
		{event: EventUpdate, target: "203.0.113.7", net: "customer-a", vector: "dns-amp", at: 8 * time.Second, bps: p * 800, pps: p, flows: 10, peakPps: p},
		{event: EventUpdate, target: "203.0.113.7", net: "customer-a", vector: "dns-amp", at: 13 * time.Second, bps: 7 * p * 800 / 10, pps: 7 * p / 10, flows: 7, peakPps: p},
		{event: EventUpdate, target: "203.0.113.7", net: "customer-a", vector: "dns-amp", at: 18 * time.Second, bps: 2 * p * 800 / 10, pps: 2 * p / 10, flows: 2, peakPps: p},
		{event: EventEnd, target: "203.0.113.7", net: "customer-a", vector: "dns-amp", at: 20 * time.Second, bps: p * 800, pps: p, flows: 10, peakPps: p, duration: 10},
	}
	diff(t, got, want)
}

// TestAbortRestores: the detector's copy of the state at the last commit
// makes a transaction's records, read again after an abort, count once:
// the alerts are those of a run without the abort.
func TestAbortRestores(t *testing.T) {
	th := DefaultThresholds()
	all := merge(every(dnsFlow("203.0.113.7", 2*th.Addr[VectorDNS].Pps/1000), 0, 20, 10), background())
	ref := feed(t, newTestEngine(t, testConfig(), th), all...)

	e, snap := newTestEngine(t, testConfig(), th), newTestEngine(t, testConfig(), th)
	var got []Alert
	// Commit after every 37 flows; abort every third transaction and
	// read its flows again.
	for i, n := 0, 0; i < len(all); n++ {
		j := min(i+37, len(all))
		out := feed(t, e, all[i:j]...)
		if n%3 == 2 {
			snap.copyTo(e)
			continue // the same flows again
		}
		got = append(got, out...)
		e.copyTo(snap)
		i = j
	}
	if !reflect.DeepEqual(briefs(t, got), briefs(t, ref)) {
		t.Fatalf("with aborts:\n got %v\nwant %v", briefs(t, got), briefs(t, ref))
	}
}
