package detector

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// brief is the part of an alert a test compares.
type brief struct {
	event, target, net, vector string
	at                         time.Duration // after t0
	bps, pps, flows            uint64
	started                    time.Duration
	peakPps                    uint64
	duration                   float64
}

func (b brief) String() string {
	return fmt.Sprintf("%s %s/%s %s at+%s bps=%d pps=%d flows=%d started+%s peak_pps=%d dur=%g",
		b.event, b.target, b.net, b.vector, b.at, b.bps, b.pps, b.flows, b.started, b.peakPps, b.duration)
}

func briefs(t *testing.T, as []Alert) []brief {
	t.Helper()
	out := make([]brief, 0, len(as))
	for _, a := range as {
		b := brief{event: a.Event, target: a.Target, net: a.TargetNet, vector: a.Vector, at: a.At.Sub(t0),
			bps: a.Bps, pps: a.Pps, flows: a.Flows, peakPps: a.PeakPps, duration: a.DurationS}
		if a.Started != "" {
			st, err := time.Parse(time.RFC3339Nano, a.Started)
			if err != nil {
				t.Fatalf("started %q: %v", a.Started, err)
			}
			b.started = st.Sub(t0)
		}
		out = append(out, b)
	}
	return out
}

func diff(t *testing.T, got []Alert, want []brief) {
	t.Helper()
	g := briefs(t, got)
	if !reflect.DeepEqual(g, want) {
		var sb strings.Builder
		for _, x := range g {
			fmt.Fprintf(&sb, "  got  %v\n", x)
		}
		for _, x := range want {
			fmt.Fprintf(&sb, "  want %v\n", x)
		}
		t.Errorf("alerts differ:\n%s", sb.String())
	}
	ids := map[string]string{}
	for _, a := range got {
		k := a.Target + "/" + a.Vector
		if ids[k] == "" && a.Event == EventStart {
			ids[k] = a.ID
		}
		if a.ID == "" || ids[k] != a.ID {
			t.Errorf("%s %s: id %q, want the start's %q", a.Event, k, a.ID, ids[k])
		}
	}
}

// background keeps event time moving: one small flow a second to another
// address, from 0 to 45 s.
func background() []flow {
	return every(flow{dst: "198.51.100.1", src: "192.0.2.9", proto: 6, tcpFlags: 0x18, packets: 1, bytes: 100, rate: 1}, 0, 45, 1)
}

// TestVectors: for every vector, an attack at twice the built-in pps
// threshold for 20 s gives one start (3 steps in), updates every 5 s,
// one end 10 s after it stopped, with the exact figures and sources.
func TestVectors(t *testing.T) {
	base := flow{dst: "203.0.113.7", src: "192.0.2.1", rate: 100, srcAS: 15169, country: "US", net: "customer-c", exporter: "edge1.fra1"}
	with := func(f func(*flow)) flow { g := base; f(&g); return g }
	cases := []struct {
		vector Vector
		f      flow
	}{
		{VectorUDP, with(func(f *flow) { f.proto, f.sport, f.dport = 17, 40000, 80 })},
		{VectorDNS, with(func(f *flow) { f.proto, f.sport, f.dport = 17, 53, 40000 })},
		{VectorNTP, with(func(f *flow) { f.proto, f.sport = 17, 123 })},
		{VectorSSDP, with(func(f *flow) { f.proto, f.sport = 17, 1900 })},
		{VectorMemcached, with(func(f *flow) { f.proto, f.sport = 17, 11211 })},
		{VectorCLDAP, with(func(f *flow) { f.proto, f.sport = 17, 389 })},
		{VectorChargen, with(func(f *flow) { f.proto, f.sport = 17, 19 })},
		{VectorSNMP, with(func(f *flow) { f.proto, f.sport = 17, 161 })},
		{VectorSYN, with(func(f *flow) { f.proto, f.tcpFlags, f.dport = 6, 0x02, 443 })},
		{VectorICMP, with(func(f *flow) { f.proto = 1 })},
		{VectorICMP, with(func(f *flow) { f.proto, f.dst, f.src = 58, "2001:db8:200::7", "2001:db8:ffff::1" })},
		{VectorFragment, with(func(f *flow) { f.proto, f.ipFlags, f.sport = 17, 1, 53 })},
		{VectorTotal, with(func(f *flow) { f.proto, f.tcpFlags, f.dport = 6, 0x10, 443 })},
	}
	for _, c := range cases {
		t.Run(c.vector.String()+"/"+c.f.dst, func(t *testing.T) {
			th := DefaultThresholds()
			tp := th.Addr[c.vector].Pps
			// 10 flows a second at 1:100, twice the threshold.
			f := c.f
			f.packets = 2 * tp / 1000
			f.bytes = f.packets * 100
			pps := 10 * f.packets * 100
			bps := pps * 100 * 8
			// Three sources: 5, 3 and 2 flows of every 10.
			var attack []flow
			for i, g := range every(f, 0, 20, 10) {
				switch i % 10 {
				case 5, 6, 7:
					g.src, g.srcAS, g.country = "198.18.0.2", 3320, "DE"
				case 8, 9:
					g.src, g.srcAS, g.country = "198.18.0.3", 4134, "CN"
				}
				attack = append(attack, g)
			}
			e := newTestEngine(t, testConfig(), th)
			got := feed(t, e, merge(attack, background())...)
			tg, v := f.dst, c.vector.String()
			at := func(s int) time.Duration { return time.Duration(s) * time.Second }
			upd := func(s int, frac uint64) brief {
				return brief{event: EventUpdate, target: tg, net: "customer-c", vector: v, at: at(s), bps: bps * frac / 10, pps: pps * frac / 10, flows: frac, started: 0, peakPps: pps}
			}
			want := []brief{
				{event: EventStart, target: tg, net: "customer-c", vector: v, at: at(3), bps: bps, pps: pps, flows: 10, started: 0},
				upd(8, 10), upd(13, 10), upd(18, 10), upd(23, 7), upd(28, 2),
				{event: EventEnd, target: tg, net: "customer-c", vector: v, at: at(30), bps: bps, pps: pps, flows: 10, peakPps: pps, duration: 20},
			}
			diff(t, got, want)
			if len(got) == 0 {
				return
			}
			a := got[0]
			src := "192.0.2.1"
			if strings.Contains(f.dst, ":") {
				src = "2001:db8:ffff::1"
			}
			wantTop := Alert{TopSrcAddr: []string{src, "198.18.0.2", "198.18.0.3"}, TopSrcAS: []uint32{15169, 3320, 4134},
				TopSrcCountry: []string{"US", "DE", "CN"}, Exporters: []string{"edge1.fra1"}}
			gotTop := Alert{TopSrcAddr: a.TopSrcAddr, TopSrcAS: a.TopSrcAS, TopSrcCountry: a.TopSrcCountry, Exporters: a.Exporters}
			if !reflect.DeepEqual(gotTop, wantTop) {
				t.Errorf("start alert sources %+v, want %+v", gotTop, wantTop)
			}
			if c := e.Take(); c.Flows != uint64(len(attack)+45) || c.Dropped != [numDrops]uint64{} {
				t.Errorf("counts %+v, want %d flows and no drop", c, len(attack)+45)
			}
		})
	}
}
