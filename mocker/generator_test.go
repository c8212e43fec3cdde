package mocker

import (
	"bytes"
	"math"
	"math/rand/v2"
	"net/netip"
	"sort"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// flowStats summarises a stream of flows for the realism checks, shared with
// the tests that read flows back from Kafka.
type flowStats struct {
	n, v4, v6         int
	srcBytes          map[netip.Addr]uint64
	totalBytes        uint64
	protos            map[uint32]int
	samplers          map[netip.Addr]map[uint64]bool // sampling rates seen per exporter
	lastSeq           map[netip.Addr]uint32
	problems          []string
	seqNotIncreasing  int
	publicAddrs       int
	ports0NonICMP     int
	tcpWithoutFlags   int
	timeOrderProblems int
	// allowed says whether an address belongs to the address plan.
	allowed func(netip.Addr) bool
	plan    string
}

// newFlowStats checks flows of the documentation address plan.
func newFlowStats() *flowStats {
	return &flowStats{
		srcBytes: map[netip.Addr]uint64{}, protos: map[uint32]int{},
		samplers: map[netip.Addr]map[uint64]bool{}, lastSeq: map[netip.Addr]uint32{},
		allowed: allowed, plan: AddressesDocumentation,
	}
}

// newRealisticFlowStats checks flows of the realistic plan with the demo
// files: every address is a demo customer's, a RemoteNetworks prefix's or
// a demo exporter's.
func newRealisticFlowStats(t testing.TB) *flowStats {
	p := demoPlan(t)
	var in []netip.Prefix
	for _, c := range p.Customers {
		in = append(in, c.Prefix)
	}
	for _, n := range RemoteNetworks {
		for _, p := range n.Prefixes {
			in = append(in, p.Prefix)
		}
	}
	for _, e := range p.Exporters {
		in = append(in, netip.PrefixFrom(e.Addr, 32))
	}
	s := newFlowStats()
	s.plan = AddressesRealistic
	s.allowed = func(a netip.Addr) bool {
		for _, p := range in {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return s
}

func demoPlan(t testing.TB) *Plan {
	t.Helper()
	p, err := DemoPlan()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (s *flowStats) problem(format string) {
	if len(s.problems) < 10 {
		s.problems = append(s.problems, format)
	}
}

// documentation/private space the generator must stay inside.
var allowedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("2001:db8::/32"),
}

func allowed(a netip.Addr) bool {
	for _, p := range allowedPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// add checks one flow (given as its fields, so both our type and goflow2's
// can be fed in) and accumulates the statistics.
func (s *flowStats) add(etype uint32, src, dst, sampler, nextHop []byte, bytes_, packets, rate uint64,
	seq uint32, proto, srcPort, dstPort, tcpFlags uint32, start, end, recv uint64) {
	s.n++
	switch etype {
	case etypeIPv4:
		s.v4++
		if len(src) != 4 || len(dst) != 4 || len(nextHop) != 4 {
			s.problem("IPv4 flow with address lengths other than 4")
		}
	case etypeIPv6:
		s.v6++
		if len(src) != 16 || len(dst) != 16 || len(nextHop) != 16 {
			s.problem("IPv6 flow with address lengths other than 16")
		}
	default:
		s.problem("etype neither 0x800 nor 0x86dd")
	}
	// The realistic plan's NetFlow v5 exporters send rate 0: check() checks
	// the rate of each exporter.
	if bytes_ == 0 || packets == 0 || (rate == 0 && s.plan == AddressesDocumentation) {
		s.problem("zero bytes, packets or sampling rate")
	}
	if packets > maxPackets || bytes_ < packets*40 || bytes_ > packets*1500 {
		s.problem("implausible bytes/packets")
	}
	if !(start < end && end <= recv) {
		s.timeOrderProblems++
	}
	srcA, _ := netip.AddrFromSlice(src)
	dstA, _ := netip.AddrFromSlice(dst)
	samp, _ := netip.AddrFromSlice(sampler)
	if !s.allowed(srcA) || !s.allowed(dstA) || !s.allowed(samp) {
		s.publicAddrs++
	}
	s.srcBytes[srcA] += bytes_
	s.totalBytes += bytes_
	s.protos[proto]++
	if s.samplers[samp] == nil {
		s.samplers[samp] = map[uint64]bool{}
	}
	s.samplers[samp][rate] = true
	if last, ok := s.lastSeq[samp]; ok && seq <= last {
		s.seqNotIncreasing++
	}
	s.lastSeq[samp] = seq
	if proto != protoICMP && proto != protoICMPv6 && (srcPort == 0 || dstPort == 0) {
		s.ports0NonICMP++
	}
	if (proto == protoICMP || proto == protoICMPv6) && (srcPort != 0 || dstPort != 0) {
		s.problem("ICMP flow with ports")
	}
	if proto == protoTCP && tcpFlags == 0 {
		s.tcpWithoutFlags++
	}
}

// topShare is the share of bytes carried by the k biggest sources.
func (s *flowStats) topShare(k int) float64 {
	var per []uint64
	for _, b := range s.srcBytes {
		per = append(per, b)
	}
	sort.Slice(per, func(i, j int) bool { return per[i] > per[j] })
	var top uint64
	for i := 0; i < k && i < len(per); i++ {
		top += per[i]
	}
	return float64(top) / float64(s.totalBytes)
}

// check asserts the realism properties every generated stream must have.
// ordered is false for flows read back from several partitions.
func (s *flowStats) check(t *testing.T, ordered bool) {
	t.Helper()
	for _, p := range s.problems {
		t.Error(p)
	}
	if s.timeOrderProblems != 0 {
		t.Errorf("%d flows without time_flow_start_ns < time_flow_end_ns <= time_received_ns", s.timeOrderProblems)
	}
	if s.publicAddrs != 0 {
		t.Errorf("%d flows with addresses outside the %s address plan", s.publicAddrs, s.plan)
	}
	if s.ports0NonICMP != 0 || s.tcpWithoutFlags != 0 {
		t.Errorf("%d TCP/UDP flows with a zero port, %d TCP flows without flags", s.ports0NonICMP, s.tcpWithoutFlags)
	}
	if ordered && s.seqNotIncreasing != 0 {
		t.Errorf("%d flows whose sequence_num did not increase for their exporter", s.seqNotIncreasing)
	}
	v6Share := float64(s.v6) / float64(s.n)
	if s.v4+s.v6 != s.n || v6Share < 0.15 || v6Share > 0.25 {
		t.Errorf("%d IPv4 and %d IPv6 of %d flows; want about 80/20", s.v4, s.v6, s.n)
	}
	for _, p := range []uint32{protoTCP, protoUDP, protoICMP, protoICMPv6} {
		if s.protos[p] == 0 {
			t.Errorf("no flow with IP protocol %d", p)
		}
	}
	if len(s.samplers) != 4 {
		t.Errorf("%d exporters, want 4", len(s.samplers))
	}
	rates := map[uint64]bool{}
	for a, rs := range s.samplers {
		if len(rs) != 1 {
			t.Errorf("exporter %s used %d sampling rates, want 1", a, len(rs))
		}
		for r := range rs {
			rates[r] = true
		}
	}
	if len(rates) != 4 {
		t.Errorf("exporters share sampling rates: %v", rates)
	}
	if s.plan == AddressesRealistic {
		// Each exporter sends the demo file's rate, but NetFlow v5 ones 0.
		for _, e := range demoPlan(t).Exporters {
			want := e.SamplingRate
			if e.Type == pb.FlowMessage_NETFLOW_V5 {
				want = 0
			}
			if rs := s.samplers[e.Addr]; len(rs) != 1 || !rs[want] {
				t.Errorf("exporter %s (%s, %v) sent sampling rates %v, want only %d", e.Addr, e.Name, e.Type, rs, want)
			}
		}
	}
	top1, top10 := s.topShare(1), s.topShare(10)
	t.Logf("%d flows, %d sources; top-1 source carries %.1f%% of bytes, top-10 %.1f%%",
		s.n, len(s.srcBytes), 100*top1, 100*top10)
	if top10 <= 0.20 || top10 >= 0.90 || top1 >= 0.50 {
		t.Errorf("top-10 sources carry %.1f%% of bytes (want 20-90%%), top-1 %.1f%% (want < 50%%)", 100*top10, 100*top1)
	}
	if len(s.srcBytes) < 1000 {
		t.Errorf("only %d distinct sources, want a few thousand", len(s.srcBytes))
	}
}

func (s *flowStats) addPB(m *pb.FlowMessage) {
	s.add(m.Etype, m.SrcAddr, m.DstAddr, m.SamplerAddress, m.NextHop, m.Bytes, m.Packets, m.SamplingRate,
		m.SequenceNum, m.Proto, m.SrcPort, m.DstPort, m.TcpFlags, m.TimeFlowStartNs, m.TimeFlowEndNs, m.TimeReceivedNs)
}

func TestGeneratorRealism(t *testing.T) {
	for _, plan := range []string{AddressesDocumentation, AddressesRealistic} {
		t.Run(plan, func(t *testing.T) {
			g, s := NewGenerator(1), newFlowStats()
			if plan == AddressesRealistic {
				g, s = NewPlanGenerator(1, demoPlan(t)), newRealisticFlowStats(t)
			}
			checkRealism(t, g, s)
		})
	}
}

func checkRealism(t *testing.T, g *Generator, s *flowStats) {
	var m pb.FlowMessage
	now := time.Unix(1_800_000_000, 0)
	for i := 0; i < 200_000; i++ {
		now = now.Add(time.Microsecond)
		g.Next(&m, now)
		if m.TimeReceivedNs != uint64(now.UnixNano()) {
			t.Fatalf("time_received_ns %d, want now = %d", m.TimeReceivedNs, now.UnixNano())
		}
		s.addPB(&m)
	}
	s.check(t, true)
}

func withoutTimes(m *pb.FlowMessage) *pb.FlowMessage {
	c := proto.Clone(m).(*pb.FlowMessage)
	c.TimeReceivedNs, c.TimeFlowStartNs, c.TimeFlowEndNs = 0, 0, 0
	return c
}

func TestGeneratorDeterministic(t *testing.T) {
	t.Run(AddressesDocumentation, func(t *testing.T) {
		checkDeterministic(t, NewGenerator(7), NewGenerator(7), NewGenerator(8))
	})
	t.Run(AddressesRealistic, func(t *testing.T) {
		p := demoPlan(t)
		checkDeterministic(t, NewPlanGenerator(7, p), NewPlanGenerator(7, p), NewPlanGenerator(8, p))
	})
}

func checkDeterministic(t *testing.T, a, b, c *Generator) {
	var ma, mb, mc pb.FlowMessage
	t0 := time.Unix(1_800_000_000, 0)
	differ := 0
	for i := 0; i < 10_000; i++ {
		a.Next(&ma, t0)
		b.Next(&mb, t0.Add(time.Duration(i)*time.Second)) // times differ, nothing else may
		c.Next(&mc, t0)
		if !proto.Equal(withoutTimes(&ma), withoutTimes(&mb)) {
			t.Fatalf("flow %d differs with the same seed:\n%v\n%v", i, &ma, &mb)
		}
		if mb.TimeReceivedNs-ma.TimeReceivedNs != uint64(i)*uint64(time.Second) ||
			mb.TimeFlowEndNs-ma.TimeFlowEndNs != uint64(i)*uint64(time.Second) {
			t.Fatalf("flow %d: times do not follow now", i)
		}
		if !bytes.Equal(ma.SrcAddr, mc.SrcAddr) || ma.Bytes != mc.Bytes {
			differ++
		}
	}
	if differ < 9000 {
		t.Errorf("seeds 7 and 8 gave %d different flows of 10000, want nearly all", differ)
	}
}

// TestGeneratorReuse: a reused message carries nothing over from the last
// flow (an ICMP flow after a TCP one has no ports or TCP flags).
func TestGeneratorReuse(t *testing.T) {
	t.Run(AddressesDocumentation, func(t *testing.T) { checkReuse(t, NewGenerator(3), NewGenerator(3)) })
	t.Run(AddressesRealistic, func(t *testing.T) {
		p := demoPlan(t)
		checkReuse(t, NewPlanGenerator(3, p), NewPlanGenerator(3, p))
	})
}

func checkReuse(t *testing.T, g1, g2 *Generator) {
	var reused pb.FlowMessage
	for i := 0; i < 5000; i++ {
		var fresh pb.FlowMessage
		now := time.Unix(1_800_000_000, int64(i))
		g1.Next(&reused, now)
		g2.Next(&fresh, now)
		if !proto.Equal(&reused, &fresh) {
			t.Fatalf("flow %d: reused message differs from a fresh one:\n%v\n%v", i, &reused, &fresh)
		}
	}
	allocs := testing.AllocsPerRun(1000, func() { g1.Next(&reused, time.Unix(1_800_000_000, 0)) })
	if allocs != 0 {
		t.Errorf("Next allocates %.1f times per flow with a reused message, want 0", allocs)
	}
}

// TestZipfTable: draws follow P(k) ∝ 1/(k+1)^s and stay in range.
func TestZipfTable(t *testing.T) {
	const n, s, draws = 1000, 1.1, 2_000_000
	z := newZipfTable(n, s)
	if got := z.draw(0); got != 0 {
		t.Errorf("draw(0) = %d, want rank 0", got)
	}
	if got := z.draw(math.MaxUint64); got != n-1 {
		t.Errorf("draw(max) = %d, want rank %d", got, n-1)
	}
	var total float64
	for k := 0; k < n; k++ {
		total += math.Pow(float64(k+1), -s)
	}
	counts := make([]int, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < draws; i++ {
		counts[z.draw(r.Uint64())]++
	}
	for _, k := range []int{0, 1, 2, 9, 99} {
		want := math.Pow(float64(k+1), -s) / total * draws
		if math.Abs(float64(counts[k])-want) > 5*math.Sqrt(want) {
			t.Errorf("rank %d drawn %d times, want %.0f ± %.0f", k, counts[k], want, 5*math.Sqrt(want))
		}
	}
}
