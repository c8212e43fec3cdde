// Package mocker produces realistic synthetic flows to Kafka, standing in
// for goflow2: one length-delimited FlowMessage per record on the "flows"
// topic (goflow2 -format=bin), or several per record (Config.FlowsPerRecord).
package mocker

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Host-population shape. A few thousand hosts with Zipf-distributed
// popularity make the top talkers carry a clearly skewed share of traffic
// (roughly 40% for the top 10) without one host dominating.
const (
	numHostsV4 = 3200
	numHostsV6 = 800
	zipfS      = 1.1 // Zipf exponent: P(rank k) ∝ 1/(k+1)^s
	ipv6Share  = 0.2
	maxPackets = 1000
)

const (
	etypeIPv4    = 0x800
	etypeIPv6    = 0x86dd
	protoICMP    = 1
	protoTCP     = 6
	protoUDP     = 17
	protoICMPv6  = 58
	forwarded    = 64 // forwarding_status "forwarded, unknown reason" (RFC 7270)
	ephemeralLow = 32768
)

// network is one autonomous system with the prefixes its hosts live in.
// Everything stays inside documentation or private space: ASNs 64496-64511
// (RFC 5398) and 65000-65010 (private), IPv4 192.0.2.0/24, 198.51.100.0/24,
// 203.0.113.0/24 (RFC 5737) and 10.0.0.0/8, IPv6 2001:db8::/32 (RFC 3849).
type network struct {
	asn       uint32
	v4        [4]byte // first address of the IPv4 prefix
	v4Len     uint32  // prefix length announced for hosts
	v4Subnets int     // number of /24s hosts are spread over
	v6        [16]byte
	nextHopV4 [4]byte
	nextHopV6 [16]byte
}

type host struct {
	addr   [16]byte
	v6     bool
	net    uint32 // prefix length
	asn    uint32
	nextV4 [4]byte // router in front of this host, for next_hop
	nextV6 [16]byte
}

// exporter is one router sending flows, with its own sampling rate, flow
// protocol and sequence counter.
type exporter struct {
	addr   [4]byte
	typ    pb.FlowMessage_FlowType
	rate   uint64
	seq    uint32
	weight float64
	ifaces uint32 // interfaces are numbered 1..ifaces
}

// service is one entry of the protocol/port mix.
type service struct {
	proto  uint32 // protoICMP means ICMP or ICMPv6 by family
	port   uint32
	weight float64
	minPkt uint64 // average packet size range, bytes
	maxPkt uint64
}

var services = []service{
	{protoTCP, 443, 38, 60, 1500},
	{protoTCP, 80, 12, 60, 1500},
	{protoTCP, 22, 4, 52, 900},
	{protoTCP, 25, 3, 60, 1400},
	{protoUDP, 53, 15, 60, 300},
	{protoUDP, 443, 14, 80, 1350},
	{protoUDP, 123, 6, 76, 90},
	{protoICMP, 0, 8, 40, 120},
}

// TCP flag combinations as flow exporters report them (OR of the flow's
// packets): SYN, ACK, SYN+ACK, PSH+ACK, FIN+PSH+ACK, FIN+SYN+PSH+ACK, RST+ACK.
var tcpFlagSets = []uint32{0x02, 0x10, 0x12, 0x18, 0x19, 0x1b, 0x14}

var ttls = []uint32{64, 128, 255, 63, 127, 254}

// paretoPackets maps a uniform draw to a packet count: Pareto with alpha
// 1.2, so most flows are a few packets and a few are large, capped at
// maxPackets. A table is several times cheaper than math.Pow per flow, and
// 4096 steps resolve the tail down to the cap.
const paretoBits = 12

var paretoPackets = func() (t [1 << paretoBits]uint64) {
	for i := range t {
		u := (float64(i) + 0.5) / float64(len(t)) // bin midpoint in (0, 1)
		t[i] = min(max(uint64(math.Pow(1-u, -1/1.2)), 1), maxPackets)
	}
	return t
}()

// Generator makes a deterministic stream of realistic flows: the same seed
// gives the same flows, except for the time fields, which follow the clock.
// A Generator is not safe for concurrent use.
type Generator struct {
	rng       *rand.Rand
	v4, v6    []host
	zipfV4    *zipfTable
	zipfV6    *zipfTable
	exporters []exporter
	expCDF    []float64
	svcCDF    []float64
	real      *realPlan // the realistic address plan; nil: the documentation one
}

// NewGenerator builds the host population, networks and exporters of the
// documentation address plan (AddressesDocumentation) for seed.
func NewGenerator(seed int64) *Generator {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6d6f636b6572)) // "mocker"
	g := &Generator{rng: rng}
	g.svcCDF = cdf(len(services), func(i int) float64 { return services[i].weight })

	nets := buildNetworks()
	g.v4 = make([]host, numHostsV4)
	g.v6 = make([]host, numHostsV6)
	for i := range g.v4 {
		g.v4[i] = newHost(rng, &nets[rng.IntN(len(nets))], false)
	}
	for i := range g.v6 {
		g.v6[i] = newHost(rng, &nets[rng.IntN(len(nets))], true)
	}
	// Hosts are drawn in random order, so Zipf rank 0 is a random host of a
	// random network rather than always the first one.
	g.zipfV4 = newZipfTable(numHostsV4, zipfS)
	g.zipfV6 = newZipfTable(numHostsV6, zipfS)

	g.exporters = []exporter{
		{addr: [4]byte{192, 0, 2, 250}, typ: pb.FlowMessage_SFLOW_5, rate: 1000, weight: 4, ifaces: 48},
		{addr: [4]byte{192, 0, 2, 251}, typ: pb.FlowMessage_IPFIX, rate: 100, weight: 3, ifaces: 24},
		{addr: [4]byte{192, 0, 2, 252}, typ: pb.FlowMessage_NETFLOW_V9, rate: 512, weight: 2, ifaces: 16},
		{addr: [4]byte{192, 0, 2, 253}, typ: pb.FlowMessage_IPFIX, rate: 1, weight: 1, ifaces: 8},
	}
	for i := range g.exporters {
		g.exporters[i].seq = 1
	}
	g.expCDF = cdf(len(g.exporters), func(i int) float64 { return g.exporters[i].weight })
	return g
}

// NewPlanGenerator builds a generator of the realistic address plan
// (AddressesRealistic): remote hosts in RemoteNetworks, local hosts in
// p's customer prefixes, flows through p's exporters and interfaces.
func NewPlanGenerator(seed int64, p *Plan) *Generator {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6d6f636b6572)) // "mocker"
	g := &Generator{rng: rng}
	g.svcCDF = cdf(len(services), func(i int) float64 { return services[i].weight })
	g.real = newRealPlan(rng, p)
	return g
}

func buildNetworks() []network {
	var nets []network
	docV4 := [][4]byte{{192, 0, 2, 0}, {198, 51, 100, 0}, {203, 0, 113, 0}}
	asns := make([]uint32, 0, 27)
	for a := uint32(64496); a <= 64511; a++ {
		asns = append(asns, a)
	}
	for a := uint32(65000); a <= 65010; a++ {
		asns = append(asns, a)
	}
	for i, asn := range asns {
		n := network{asn: asn}
		if i < len(docV4) {
			n.v4, n.v4Len, n.v4Subnets = docV4[i], 24, 1
		} else {
			// 10.<i>.0.0/16 split into /24s announced as /24.
			n.v4, n.v4Len, n.v4Subnets = [4]byte{10, byte(i), 0, 0}, 24, 16
		}
		n.nextHopV4 = n.v4
		n.nextHopV4[3] = 1
		// 2001:db8:<i>::/48
		n.v6 = [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(i)}
		n.nextHopV6 = n.v6
		n.nextHopV6[15] = 1
		nets = append(nets, n)
	}
	return nets
}

func newHost(rng *rand.Rand, n *network, v6 bool) host {
	h := host{v6: v6, asn: n.asn, nextV4: n.nextHopV4, nextV6: n.nextHopV6}
	if v6 {
		h.addr = n.v6
		binary.BigEndian.PutUint64(h.addr[8:], rng.Uint64()|2) // never ::0 or ::1 (the router)
		h.net = 48
		return h
	}
	copy(h.addr[:4], n.v4[:])
	h.addr[2] += byte(rng.IntN(n.v4Subnets))
	// .2-.239: .1 is the router, .250-.253 the exporters in 192.0.2.0/24.
	h.addr[3] = byte(2 + rng.IntN(238))
	h.net = n.v4Len
	return h
}

// zipfTable draws Zipf-distributed ranks exactly, several times faster than
// math/rand/v2's Zipf (which costs an Exp and a Log per draw): cdf[k] is
// P(rank <= k) scaled to 2^64, and start[b] the first rank whose cdf
// exceeds the bucket of draws with top bits b, so a draw scans a step or two.
type zipfTable struct {
	cdf   []uint64
	start []uint32
}

const zipfBucketBits = 16

func newZipfTable(n int, s float64) *zipfTable {
	w := make([]float64, n)
	var total float64
	for k := range w {
		w[k] = math.Pow(float64(k+1), -s)
		total += w[k]
	}
	z := &zipfTable{cdf: make([]uint64, n), start: make([]uint32, 1<<zipfBucketBits)}
	var cum float64
	for k := range w {
		cum += w[k]
		z.cdf[k] = uint64(math.Min(cum/total*(1<<64), math.MaxUint64))
	}
	z.cdf[n-1] = math.MaxUint64 // no draw may fall past the last rank
	k := 0
	for b := range z.start {
		lo := uint64(b) << (64 - zipfBucketBits)
		for z.cdf[k] <= lo {
			k++
		}
		z.start[b] = uint32(k)
	}
	return z
}

// draw maps a uniform 64-bit value to a rank in [0, n).
func (z *zipfTable) draw(u uint64) int {
	k := int(z.start[u>>(64-zipfBucketBits)])
	for u >= z.cdf[k] && k < len(z.cdf)-1 {
		k++
	}
	return k
}

func cdf(n int, weight func(int) float64) []float64 {
	out := make([]float64, n)
	var sum float64
	for i := range out {
		sum += weight(i)
		out[i] = sum
	}
	for i := range out {
		out[i] /= sum
	}
	return out
}

func pick(cdf []float64, u float64) int {
	for i, c := range cdf {
		if u < c {
			return i
		}
	}
	return len(cdf) - 1
}

// Next overwrites m with the next flow, received at now. Reusing m across
// calls avoids allocating: its address buffers are kept and refilled.
func (g *Generator) Next(m *pb.FlowMessage, now time.Time) {
	if g.real != nil {
		g.nextReal(m, now)
		return
	}
	r := g.rng
	srcBuf, dstBuf, samplerBuf, hopBuf := m.SrcAddr[:0], m.DstAddr[:0], m.SamplerAddress[:0], m.NextHop[:0]
	m.Reset()

	e := &g.exporters[pick(g.expCDF, r.Float64())]
	m.Type = e.typ
	m.SamplingRate = e.rate
	m.SequenceNum = e.seq
	e.seq++
	m.SamplerAddress = append(samplerBuf, e.addr[:]...)

	v6 := r.Float64() < ipv6Share
	var src, dst *host
	if v6 {
		src = &g.v6[g.zipfV6.draw(r.Uint64())]
		dst = &g.v6[g.zipfV6.draw(r.Uint64())]
		if dst == src {
			dst = &g.v6[r.IntN(len(g.v6))]
		}
	} else {
		src = &g.v4[g.zipfV4.draw(r.Uint64())]
		dst = &g.v4[g.zipfV4.draw(r.Uint64())]
		if dst == src {
			dst = &g.v4[r.IntN(len(g.v4))]
		}
	}
	size := 4
	m.Etype = etypeIPv4
	if v6 {
		size = 16
		m.Etype = etypeIPv6
	}
	m.SrcAddr = append(srcBuf, src.addr[:size]...)
	m.DstAddr = append(dstBuf, dst.addr[:size]...)
	if v6 {
		m.NextHop = append(hopBuf, dst.nextV6[:]...)
		m.Ipv6FlowLabel = r.Uint32() & 0xfffff
	} else {
		m.NextHop = append(hopBuf, dst.nextV4[:]...)
	}
	m.SrcAs, m.DstAs = src.asn, dst.asn
	m.SrcNet, m.DstNet = src.net, dst.net
	m.InIf = 1 + r.Uint32N(e.ifaces)
	m.OutIf = 1 + r.Uint32N(e.ifaces)
	if m.OutIf == m.InIf {
		m.OutIf = m.InIf%e.ifaces + 1
	}
	g.fillTraffic(m, v6, now)
}

// fillTraffic sets what both address plans share: TTL, protocol and ports,
// packets and bytes, times.
func (g *Generator) fillTraffic(m *pb.FlowMessage, v6 bool, now time.Time) {
	r := g.rng
	m.IpTtl = ttls[r.IntN(len(ttls))]
	m.ForwardingStatus = forwarded

	svc := &services[pick(g.svcCDF, r.Float64())]
	ephemeral := ephemeralLow + r.Uint32N(65536-ephemeralLow)
	switch svc.proto {
	case protoICMP:
		m.Proto = protoICMP
		echo, reply := uint32(8), uint32(0)
		if v6 {
			m.Proto = protoICMPv6
			echo, reply = 128, 129
		}
		m.IcmpType = echo
		if r.IntN(2) == 0 {
			m.IcmpType = reply
		}
	default:
		m.Proto = svc.proto
		// Half the flows are the server's answer.
		if r.IntN(2) == 0 {
			m.SrcPort, m.DstPort = ephemeral, svc.port
		} else {
			m.SrcPort, m.DstPort = svc.port, ephemeral
		}
		if svc.proto == protoTCP {
			m.TcpFlags = tcpFlagSets[r.IntN(len(tcpFlagSets))]
		}
	}

	// bytes = packets × an average packet size, so never zero.
	packets := paretoPackets[r.Uint64()>>(64-paretoBits)]
	avg := svc.minPkt + r.Uint64N(svc.maxPkt-svc.minPkt+1)
	m.Packets = packets
	m.Bytes = packets * avg

	// Times: the flow ended up to 10 s before the collector received it and
	// lasted 1 ms plus up to ~60 ms per packet.
	recv := uint64(now.UnixNano())
	end := recv - r.Uint64N(uint64(10*time.Second))
	dur := uint64(time.Millisecond) + r.Uint64N(packets*uint64(60*time.Millisecond))
	m.TimeReceivedNs = recv
	m.TimeFlowEndNs = end
	m.TimeFlowStartNs = end - dur
}
