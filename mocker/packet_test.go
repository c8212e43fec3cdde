package mocker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/goflow2test"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// received is what a collector got from one sampler address.
type received struct {
	Counts
	types map[pb.FlowMessage_FlowType]int
	rates map[uint64]int
	srcs  map[netip.Addr]bool // datagrams' source addresses
}

// udpCollector receives datagrams on 127.0.0.1 and decodes them with
// goflow2's decoders, tallying what goflow2 would store per sampler address.
type udpCollector struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  map[string]*received
	errs []error
	n    uint64 // datagrams
	done chan struct{}
}

func newUDPCollector(t *testing.T) *udpCollector {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadBuffer(8 << 20)
	c := &udpCollector{conn: conn, got: map[string]*received{}, done: make(chan struct{})}
	gf := goflow2test.NewCollector(t)
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for {
			n, src, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			flows, err := gf.Receive(append([]byte(nil), buf[:n]...), src, time.Now())
			c.mu.Lock()
			c.n++
			if err != nil {
				c.errs = append(c.errs, err)
			}
			for _, f := range flows {
				a, _ := netip.AddrFromSlice(f.SamplerAddress)
				r := c.got[a.String()]
				if r == nil {
					r = &received{types: map[pb.FlowMessage_FlowType]int{}, rates: map[uint64]int{}, srcs: map[netip.Addr]bool{}}
					c.got[a.String()] = r
				}
				r.addFlow(f.Bytes, f.Packets, f.SamplingRate)
				r.types[pb.FlowMessage_FlowType(f.Type)]++
				r.rates[f.SamplingRate]++
				r.srcs[src.Addr().Unmap()] = true
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-c.done })
	return c
}

// waitDatagrams waits until n datagrams have arrived.
func (c *udpCollector) waitDatagrams(t *testing.T, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c.mu.Lock()
		got := c.n
		c.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector received %d datagrams, the summary says %d were sent", got, n)
		}
	}
}

// generated tallies the first n flows of the demo plan's generator by
// exporter (the generator's sampler address), with its flow type, scaling
// each flow by rate(flow, the plan's rate of its exporter).
func generated(seed int64, n int, rate func(f *pb.FlowMessage, planRate uint64) uint64) map[string]*ExporterSummary {
	p, err := DemoPlan()
	if err != nil {
		panic(err)
	}
	rates := map[netip.Addr]uint64{}
	for _, e := range p.Exporters {
		rates[e.Addr] = e.SamplingRate
	}
	g := NewPlanGenerator(seed, p)
	out := map[string]*ExporterSummary{}
	var f pb.FlowMessage
	for range n {
		g.Next(&f, time.Now())
		a, _ := netip.AddrFromSlice(f.SamplerAddress)
		e := out[a.String()]
		if e == nil {
			e = &ExporterSummary{Address: a.String(), Type: f.Type.String()}
			out[a.String()] = e
		}
		e.addFlow(f.Bytes, f.Packets, rate(&f, rates[a]))
	}
	return out
}

// sentMetric reads flowpipeline_mocker_sent_<what>_total{exporter, protocol}.
func sentMetric(t *testing.T, reg *prometheus.Registry, what, exporter, protocol string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	name := "flowpipeline_mocker_sent_" + what + "_total"
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["exporter"] == exporter && labels["protocol"] == protocol {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{exporter=%q, protocol=%q}", name, exporter, protocol)
	return 0
}

// TestPacketOutputs sends each router protocol to a UDP socket decoded with
// goflow2's decoders: every datagram decodes, each exporter sends from its
// own address (sFlow: carries its own), and what goflow2 would store per
// exporter equals the Summary and the metrics, which equal what the
// generator made.
func TestPacketOutputs(t *testing.T) {
	const n, seed = 4000, 5
	for _, tc := range []struct {
		output string
		typ    pb.FlowMessage_FlowType
	}{
		{OutputNetFlowV9, pb.FlowMessage_NETFLOW_V9},
		{OutputIPFIX, pb.FlowMessage_IPFIX},
		{OutputSFlow, pb.FlowMessage_SFLOW_5},
	} {
		t.Run(tc.output, func(t *testing.T) {
			col := newUDPCollector(t)
			m, reg := newMocker(t, Config{Output: tc.output, Collector: col.conn.LocalAddr().String(),
				Count: n, Seed: seed, Rate: 40000})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := m.Run(ctx); err != nil {
				t.Fatal(err)
			}
			s := m.Summary()
			col.waitDatagrams(t, s.Totals.Datagrams)
			col.mu.Lock()
			defer col.mu.Unlock()
			if len(col.errs) > 0 {
				t.Fatalf("%d datagrams goflow2 cannot decode, first: %v", len(col.errs), col.errs[0])
			}
			if s.Output != tc.output || s.Collector != col.conn.LocalAddr().String() || s.Seed != seed ||
				!s.Ended.After(s.Started) || s.Totals.Flows != n || m.Produced() != n {
				t.Fatalf("summary %+v (produced %d), want output %s, collector %s, seed %d, %d flows",
					s, m.Produced(), tc.output, col.conn.LocalAddr(), seed, n)
			}
			plan, _ := DemoPlan()
			// NetFlow v9 and IPFIX announce the exporters file's rate.
			want := generated(seed, n, func(_ *pb.FlowMessage, planRate uint64) uint64 { return planRate })
			if len(s.Exporters) != len(plan.Exporters) || len(col.got) != len(plan.Exporters) {
				t.Fatalf("%d exporters in the summary, %d seen by the collector, want %d", len(s.Exporters), len(col.got), len(plan.Exporters))
			}
			var total Counts
			for i, e := range s.Exporters {
				pe := plan.Exporters[i]
				wantAddr := fmt.Sprintf("127.0.0.%d", 2+i)
				if tc.output == OutputSFlow {
					wantAddr = pe.Addr.String()
				}
				if e.Address != wantAddr || e.Name != pe.Name || e.Type != tc.typ.String() {
					t.Errorf("exporter %d: %s %s %s, want %s %s %s", i, e.Address, e.Name, e.Type, wantAddr, pe.Name, tc.typ)
				}
				r := col.got[e.Address]
				if r == nil {
					t.Fatalf("the collector got nothing from %s", e.Address)
				}
				got := r.Counts
				got.Datagrams = e.Datagrams // counted per datagram below
				if got != e.Counts {
					t.Errorf("%s: goflow2 would store %+v, the summary says %+v", e.Address, got, e.Counts)
				}
				if r.types[tc.typ] != int(e.Flows) || r.rates[pe.SamplingRate] != int(e.Flows) {
					t.Errorf("%s: types %v, sampling rates %v; want all %d flows %s at %d", e.Address, r.types, r.rates, e.Flows, tc.typ, pe.SamplingRate)
				}
				if src := netip.MustParseAddr(fmt.Sprintf("127.0.0.%d", 2+i)); len(r.srcs) != 1 || !r.srcs[src] {
					t.Errorf("%s: datagrams from %v, want from %s only", e.Address, r.srcs, src)
				}
				// The generator's flows by exporter; sFlow counts one sampled
				// packet of the flow's average size each, so only flows match.
				g := want[pe.Addr.String()]
				if g == nil || g.Flows != e.Flows || (tc.output != OutputSFlow && (g.Bytes != e.Bytes || g.ScaledBytes != e.ScaledBytes || g.Packets != e.Packets)) {
					t.Errorf("%s: the generator made %+v through %s, the summary says %+v", e.Address, g, pe.Addr, e.Counts)
				}
				if tc.output == OutputSFlow && e.Packets != e.Flows {
					t.Errorf("%s: sFlow: %d packets for %d flow samples", e.Address, e.Packets, e.Flows)
				}
				for what, v := range map[string]uint64{"flows": e.Flows, "bytes": e.Bytes, "packets": e.Packets, "datagrams": e.Datagrams} {
					if got := sentMetric(t, reg, what, e.Address, e.Type); got != float64(v) {
						t.Errorf("flowpipeline_mocker_sent_%s_total{exporter=%q} = %v, summary %d", what, e.Address, got, v)
					}
				}
				total.add(e.Counts)
			}
			if total != s.Totals || col.n != s.Totals.Datagrams {
				t.Errorf("totals %+v, sum of exporters %+v; datagrams received %d", s.Totals, total, col.n)
			}
		})
	}
}

// TestKafkaSummary: with the Kafka output, the summary counts the flows
// Kafka acknowledged, per exporter with its own address and flow type,
// scaled by the rate each flow carries (NetFlow v5's 0 as 1).
func TestKafkaSummary(t *testing.T) {
	const n, seed = 20_000, 3
	brokers := testenv.FakeKafka(t, 3, "flows")
	m, reg := newMocker(t, Config{Brokers: brokers, Count: n, Seed: seed, FlowsPerRecord: 7})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	s := m.Summary()
	p, _ := DemoPlan()
	want := generated(seed, n, func(f *pb.FlowMessage, _ uint64) uint64 { return f.SamplingRate })
	if s.Output != OutputKafka || s.Collector != "" || s.Totals.Flows != n || s.Totals.Datagrams != 0 || len(s.Exporters) != len(want) {
		t.Fatalf("summary %+v, want kafka, %d flows, %d exporters", s, n, len(want))
	}
	for i, e := range s.Exporters {
		w := want[e.Address]
		if w == nil {
			t.Fatalf("exporter %s in the summary, not in the generated flows", e.Address)
		}
		w.Name = p.Exporters[i].Name
		if e != *w {
			t.Errorf("exporter %s: summary %+v, generated %+v", e.Address, e, w)
		}
		if got := sentMetric(t, reg, "flows", e.Address, e.Type); got != float64(e.Flows) {
			t.Errorf("flowpipeline_mocker_sent_flows_total{exporter=%q} = %v, want %d", e.Address, got, e.Flows)
		}
	}
}
