package mocker

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Attack vectors, named as the detector names them (alerts, thresholds,
// metrics labels).
const (
	VectorTotal        = "total" // no vector of its own: a TCP ACK flood from a botnet
	VectorUDPFlood     = "udp-flood"
	VectorDNSAmp       = "dns-amp"
	VectorNTPAmp       = "ntp-amp"
	VectorSSDPAmp      = "ssdp-amp"
	VectorMemcachedAmp = "memcached-amp"
	VectorCLDAPAmp     = "cldap-amp"
	VectorChargenAmp   = "chargen-amp"
	VectorSNMPAmp      = "snmp-amp"
	VectorSYN          = "syn"
	VectorICMPFlood    = "icmp-flood"
	VectorFragment     = "fragment"
)

// Source populations of an attack.
const (
	srcReflectors = iota // open servers in many real networks (amplification)
	srcBotnet            // compromised hosts in many real networks
	srcSpoofed           // a random address per flow (spoofed)
)

// vectorSpec is what an attack of one vector looks like in the flows.
type vectorSpec struct {
	proto           uint32 // protoICMP is ICMP or ICMPv6 by family
	srcPort         uint32 // amplification: the service's port; 0 = ephemeral
	dstPort         uint32 // 0 = a random port of the target
	tcpFlags        uint32
	ipFlags         uint32 // 1 = more fragments (goflow2's ip_flags of IPv4)
	noPorts         bool   // non-first fragments carry no transport header
	minSize, maxSiz uint64 // bytes per packet (the IP packet, as exporters count it)
	sources         int
}

// ipFlagMoreFragments is the IPv4 MF bit as goflow2 puts it in ip_flags.
const ipFlagMoreFragments = 1

// attackVectors: sizes are those of the reflected answers as measured in
// the wild (US-CERT TA14-017A, Cloudflare's write-ups): a DNS ANY answer
// fills an MTU, an NTP monlist answer is 468 bytes, an SSDP one ~300, a
// SYN 40-60; every size stays at or under 1500 so that only the fragment
// vector shows fragments.
var attackVectors = map[string]vectorSpec{
	VectorTotal:        {proto: protoTCP, dstPort: 443, tcpFlags: 0x10, minSize: 52, maxSiz: 1500, sources: srcBotnet},
	VectorUDPFlood:     {proto: protoUDP, minSize: 512, maxSiz: 1470, sources: srcBotnet},
	VectorDNSAmp:       {proto: protoUDP, srcPort: 53, minSize: 1100, maxSiz: 1500, sources: srcReflectors},
	VectorNTPAmp:       {proto: protoUDP, srcPort: 123, minSize: 468, maxSiz: 490, sources: srcReflectors},
	VectorSSDPAmp:      {proto: protoUDP, srcPort: 1900, minSize: 280, maxSiz: 390, sources: srcReflectors},
	VectorMemcachedAmp: {proto: protoUDP, srcPort: 11211, minSize: 1400, maxSiz: 1500, sources: srcReflectors},
	VectorCLDAPAmp:     {proto: protoUDP, srcPort: 389, minSize: 1300, maxSiz: 1500, sources: srcReflectors},
	VectorChargenAmp:   {proto: protoUDP, srcPort: 19, minSize: 74, maxSiz: 1100, sources: srcReflectors},
	VectorSNMPAmp:      {proto: protoUDP, srcPort: 161, minSize: 1000, maxSiz: 1500, sources: srcReflectors},
	VectorSYN:          {proto: protoTCP, dstPort: 80, tcpFlags: 0x02, minSize: 40, maxSiz: 60, sources: srcSpoofed},
	VectorICMPFlood:    {proto: protoICMP, minSize: 64, maxSiz: 1024, sources: srcBotnet},
	VectorFragment:     {proto: protoUDP, ipFlags: ipFlagMoreFragments, noPorts: true, minSize: 1480, maxSiz: 1500, sources: srcBotnet},
}

// Vectors lists the attack vectors in the detector's order.
var Vectors = []string{VectorTotal, VectorUDPFlood, VectorDNSAmp, VectorNTPAmp, VectorSSDPAmp,
	VectorMemcachedAmp, VectorCLDAPAmp, VectorChargenAmp, VectorSNMPAmp, VectorSYN, VectorICMPFlood, VectorFragment}

// amplificationPorts are the source ports the detector reads as
// amplification: a flood or a botnet never uses them.
var amplificationPorts = []uint32{53, 123, 1900, 11211, 389, 19, 161}

// Attack is one attack the mocker adds to its normal traffic.
type Attack struct {
	Target netip.Addr
	Vector string // one of Vectors
	// Start is when the attack begins, after the event time of the first
	// flow; Duration how long it lasts (event time).
	Start, Duration time.Duration
	// PPS is the packet rate the target receives (what the flows carry
	// multiplied by their sampling rate).
	PPS float64
}

// String is the -attack form of a, which ParseAttack reads back.
func (a Attack) String() string {
	return fmt.Sprintf("target=%s,vector=%s,start=%s,duration=%s,pps=%s", a.Target, a.Vector, a.Start, a.Duration,
		strconv.FormatFloat(a.PPS, 'f', -1, 64))
}

// maxAttackPPS bounds PPS: far above any real attack, low enough that the
// scaled sums stay far inside every bound of the pipeline.
const maxAttackPPS = 1e9

// Validate reports what is wrong with a, naming the key of the -attack form.
func (a Attack) Validate() error {
	var errs []error
	if !a.Target.IsValid() {
		errs = append(errs, errors.New("target: want an IPv4 or IPv6 address"))
	} else if a.Target.Zone() != "" || a.Target.Is4In6() {
		errs = append(errs, fmt.Errorf("target %s: want a plain IPv4 or IPv6 address", a.Target))
	}
	if _, ok := attackVectors[a.Vector]; !ok {
		errs = append(errs, fmt.Errorf("vector %q: want one of %s", a.Vector, strings.Join(Vectors, ", ")))
	}
	if a.Start < 0 {
		errs = append(errs, fmt.Errorf("start %s: must not be negative", a.Start))
	}
	if a.Duration <= 0 {
		errs = append(errs, fmt.Errorf("duration %s: want a positive duration such as 30s", a.Duration))
	}
	if math.IsNaN(a.PPS) || a.PPS < 1 || a.PPS > maxAttackPPS {
		errs = append(errs, fmt.Errorf("pps %v: want packets per second from 1 to %g", a.PPS, float64(maxAttackPPS)))
	}
	return errors.Join(errs...)
}

// ParseAttack reads the -attack form
// "target=203.0.113.7,vector=dns-amp,start=60s,duration=30s,pps=80000";
// start may be left out (0).
func ParseAttack(s string) (Attack, error) {
	var a Attack
	seen := map[string]bool{}
	for kv := range strings.SplitSeq(strings.TrimSpace(s), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return a, fmt.Errorf("attack %q: %q is not key=value (want target=IP,vector=NAME,start=DUR,duration=DUR,pps=N)", s, kv)
		}
		if seen[k] {
			return a, fmt.Errorf("attack %q: %s given twice", s, k)
		}
		seen[k] = true
		var err error
		switch k {
		case "target":
			a.Target, err = netip.ParseAddr(v)
		case "vector":
			a.Vector = v
		case "start":
			a.Start, err = time.ParseDuration(v)
		case "duration":
			a.Duration, err = time.ParseDuration(v)
		case "pps":
			a.PPS, err = strconv.ParseFloat(v, 64)
		default:
			err = errors.New("unknown key (want target, vector, start, duration, pps)")
		}
		if err != nil {
			return a, fmt.Errorf("attack %q: %s: %w", s, k, err)
		}
	}
	for _, k := range []string{"target", "vector", "duration", "pps"} {
		if !seen[k] {
			return a, fmt.Errorf("attack %q: %s is missing (want target=IP,vector=NAME,start=DUR,duration=DUR,pps=N)", s, k)
		}
	}
	if err := a.Validate(); err != nil {
		return a, fmt.Errorf("attack %q: %w", s, err)
	}
	return a, nil
}

// AttackFlag is the repeatable -attack flag (a flag.Value) of the mocker
// and the demo: each value appends to *Attacks, and one value (or an
// ATTACK environment variable) may hold several separated by ";".
type AttackFlag struct{ Attacks *[]Attack }

// AttackFlagUsage is the -attack flag's help.
var AttackFlagUsage = "add an attack to the normal traffic, e.g. target=203.0.113.7,vector=dns-amp,start=60s,duration=30s,pps=80000 " +
	"(start after the first flow; pps as the target receives it); repeatable, or several separated by ';'. Vectors: " + strings.Join(Vectors, ", ")

func (f AttackFlag) String() string {
	if f.Attacks == nil {
		return ""
	}
	var s []string
	for _, a := range *f.Attacks {
		s = append(s, a.String())
	}
	return strings.Join(s, ";")
}

// Set parses v and appends its attacks.
func (f AttackFlag) Set(v string) error {
	for part := range strings.SplitSeq(v, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		a, err := ParseAttack(part)
		if err != nil {
			return err
		}
		*f.Attacks = append(*f.Attacks, a)
	}
	return nil
}

// AttackSummary is what the mocker injected for one attack: the event time
// of its first and last flow, its flows, their sampled packets and what
// they stand for once scaled by their sampling rate (the file's rate for
// exporters that send 0). Start and End are empty when no flow was sent.
type AttackSummary struct {
	Target        string `json:"target"`
	Vector        string `json:"vector"`
	Start         string `json:"start,omitempty"`
	End           string `json:"end,omitempty"`
	Flows         uint64 `json:"flows"`
	Packets       uint64 `json:"packets"`
	ScaledPackets uint64 `json:"scaled_packets"`
	ScaledBytes   uint64 `json:"scaled_bytes"`
}

// Attack flows are spread so that each carries at least one sampled packet
// at the largest sampling rate, and at most this many flows per second of
// event time (per attack).
const maxAttackFlowsPerSecond = 1000

// attacker makes the flows of one Attack.
type attacker struct {
	rng  *rand.Rand
	a    Attack
	spec vectorSpec
	fam  int // 0 IPv4, 1 IPv6
	addr [16]byte
	site int // the target's site in realPlan.sites; -1: none

	sources []host
	expIdx  []int
	expCDF  []float64
	rates   []float64 // effective sampling rate per realPlan exporter (0 read as the file's)

	every      time.Duration // event time between two flows
	scaledPer  float64       // scaled packets each flow stands for, on average
	owed       float64       // scaled packets owed (carried between flows)
	begin, end time.Time
	next       time.Time

	mu  sync.Mutex
	sum AttackSummary
	// first and last flow times, unix ns; 0: none yet
	first, last int64
}

// attackMix adds the flows of attacks to a Generator's normal traffic.
type attackMix struct {
	g        *Generator
	attacks  []*attacker
	started  bool
	nextDue  time.Time // earliest next flow of any running attack
	finished int
}

// newAttackMix prepares attacks on g, which must use the realistic plan p.
func newAttackMix(g *Generator, p *Plan, attacks []Attack) *attackMix {
	mix := &attackMix{g: g}
	rp := g.real
	maxRate := 1.0
	rates := make([]float64, len(rp.exporters))
	for i := range rp.exporters {
		rates[i] = float64(max(p.Exporters[i].SamplingRate, 1))
		maxRate = max(maxRate, rates[i])
	}
	for i, a := range attacks {
		// Each attack draws from its own stream: adding an attack leaves
		// the normal flows and the other attacks' flows as they were.
		rng := rand.New(rand.NewPCG(uint64(i)+1, 0x61747461636b)) // "attack"
		at := &attacker{rng: rng, a: a, spec: attackVectors[a.Vector], site: -1, rates: rates}
		if a.Target.Is6() {
			at.fam = 1
		}
		at.addr = a.Target.As16()
		if at.fam == 0 {
			b := a.Target.As4()
			at.addr = [16]byte{}
			copy(at.addr[:4], b[:])
		}
		for _, c := range p.Customers {
			if c.Prefix.Contains(a.Target) {
				at.site = slices.Index(rp.sites, c.Site)
				break
			}
		}
		if at.site >= 0 {
			at.expIdx, at.expCDF = rp.expIdx[at.site][at.fam], rp.expCDF[at.site][at.fam]
		} else {
			for j, e := range rp.exporters {
				if at.fam == 0 || e.typ != pb.FlowMessage_NETFLOW_V5 {
					at.expIdx = append(at.expIdx, j)
				}
			}
			if len(at.expIdx) == 0 {
				for j := range rp.exporters {
					at.expIdx = append(at.expIdx, j)
				}
			}
			at.expCDF = cdf(len(at.expIdx), func(j int) float64 { return rp.exporters[at.expIdx[j]].weight })
		}
		at.sources = attackSources(rng, at.spec.sources, at.fam)
		flowsPerSec := min(max(a.PPS/maxRate, 1), maxAttackFlowsPerSecond)
		at.every = time.Duration(float64(time.Second) / flowsPerSec)
		at.scaledPer = a.PPS * at.every.Seconds()
		at.sum = AttackSummary{Target: a.Target.String(), Vector: a.Vector}
		mix.attacks = append(mix.attacks, at)
	}
	return mix
}

// attackSources draws the sources an attack comes from: reflectors and
// bots spread evenly over every network of RemoteNetworks (many ASes and
// countries, not the Zipf mix of normal traffic); none for spoofed
// sources, drawn per flow.
func attackSources(rng *rand.Rand, kind, fam int) []host {
	if kind == srcSpoofed {
		return nil
	}
	n := 5000 // open resolvers answering for one attack: thousands
	if kind == srcBotnet {
		n = 2000
	}
	var pres []netip.Prefix
	var asns []uint32
	for _, rn := range RemoteNetworks {
		for _, pr := range rn.Prefixes {
			if pr.Prefix.Addr().Is6() == (fam == 1) {
				pres = append(pres, pr.Prefix)
				asns = append(asns, rn.ASN)
			}
		}
	}
	hs := make([]host, n)
	for i := range hs {
		k := rng.IntN(len(pres))
		hs[i] = hostIn(rng, pres[k], asns[k])
	}
	return hs
}

// start fixes the attacks' event times from the first flow's.
func (mix *attackMix) start(t0 time.Time) {
	mix.started = true
	for _, at := range mix.attacks {
		at.begin = t0.Add(at.a.Start)
		at.end = at.begin.Add(at.a.Duration)
		at.next = at.begin
	}
	mix.updateDue()
}

func (mix *attackMix) updateDue() {
	mix.nextDue = time.Time{}
	for _, at := range mix.attacks {
		if at.next.Before(at.end) && (mix.nextDue.IsZero() || at.next.Before(mix.nextDue)) {
			mix.nextDue = at.next
		}
	}
}

// next overwrites m with the next flow at event time now: an attack flow
// when one is due, else a normal one. It reports whether m is an attack
// flow, so that pacing counts normal flows only.
func (mix *attackMix) next(m *pb.FlowMessage, now time.Time) bool {
	if !mix.started {
		mix.start(now)
	}
	if mix.nextDue.IsZero() || mix.nextDue.After(now) {
		mix.g.Next(m, now)
		return false
	}
	for _, at := range mix.attacks {
		if at.next.Before(at.end) && !at.next.After(now) {
			at.fill(mix.g, m, now)
			at.next = at.next.Add(at.every)
			break
		}
	}
	mix.updateDue()
	return true
}

// summaries returns what was injected so far, safe to call while running.
func (mix *attackMix) summaries() []AttackSummary {
	out := make([]AttackSummary, len(mix.attacks))
	for i, at := range mix.attacks {
		at.mu.Lock()
		out[i] = at.sum
		if at.first != 0 {
			out[i].Start = time.Unix(0, at.first).UTC().Format(time.RFC3339Nano)
			out[i].End = time.Unix(0, at.last).UTC().Format(time.RFC3339Nano)
		}
		at.mu.Unlock()
	}
	return out
}

// fill writes one flow of the attack, received at now, through an exporter
// at the target's site (its sequence counter, sampling rate, an external
// interface in and an internal one out).
func (at *attacker) fill(g *Generator, m *pb.FlowMessage, now time.Time) {
	r, rp := at.rng, g.real
	srcBuf, dstBuf, samplerBuf, hopBuf := m.SrcAddr[:0], m.DstAddr[:0], m.SamplerAddress[:0], m.NextHop[:0]
	m.Reset()

	ei := at.expIdx[pick(at.expCDF, r.Float64())]
	e := &rp.exporters[ei]
	m.Type = e.typ
	m.SamplingRate = e.rate
	m.SequenceNum = e.seq
	e.seq++
	m.SamplerAddress = append(samplerBuf, e.addr[:]...)
	m.InIf = e.external[r.IntN(len(e.external))]
	m.OutIf = e.internal[r.IntN(len(e.internal))]

	size := 4
	m.Etype = etypeIPv4
	if at.fam == 1 {
		size = 16
		m.Etype = etypeIPv6
	}
	var src host
	if at.sources == nil {
		src = spoofed(r, at.fam)
	} else {
		src = at.sources[r.IntN(len(at.sources))]
	}
	m.SrcAddr = append(srcBuf, src.addr[:size]...)
	m.DstAddr = append(dstBuf, at.addr[:size]...)
	if at.fam == 1 {
		m.NextHop = append(hopBuf, at.addr[:16]...)
		m.NextHop[15] = 1
	} else {
		m.NextHop = append(hopBuf, at.addr[:3]...)
		m.NextHop = append(m.NextHop, 1)
	}
	m.SrcAs, m.SrcNet = src.asn, src.net
	m.DstNet = 32
	if at.fam == 1 {
		m.DstNet = 128
	}
	m.IpTtl = ttls[r.IntN(len(ttls))]
	m.ForwardingStatus = forwarded

	spec := &at.spec
	switch {
	case spec.proto == protoICMP:
		m.Proto, m.IcmpType = protoICMP, 8 // echo request
		if at.fam == 1 {
			m.Proto, m.IcmpType = protoICMPv6, 128
		}
	case spec.noPorts:
		m.Proto = spec.proto
	default:
		m.Proto = spec.proto
		m.SrcPort, m.DstPort = spec.srcPort, spec.dstPort
		if m.SrcPort == 0 {
			m.SrcPort = notAmplification(ephemeralLow + r.Uint32N(65536-ephemeralLow))
		}
		if m.DstPort == 0 {
			m.DstPort = notAmplification(1024 + r.Uint32N(65536-1024))
		}
		m.TcpFlags = spec.tcpFlags
	}
	m.IpFlags = spec.ipFlags // IPv6: goflow2 reads the M flag of the fragment header

	// Sampled packets: what this flow stands for at its exporter's rate,
	// the remainder carried to the next flow so the scaled total follows
	// PPS exactly over time.
	rate := at.rates[ei]
	at.owed += at.scaledPer
	packets := max(uint64(math.Round(at.owed/rate)), 1)
	at.owed -= float64(packets) * rate
	avg := spec.minSize + r.Uint64N(spec.maxSiz-spec.minSize+1)
	m.Packets, m.Bytes = packets, packets*avg

	// A short-lived flow: exporters flush a flood's flows at their active
	// timeout; the flow ended up to a second before it was received.
	recv := uint64(now.UnixNano())
	end := recv - r.Uint64N(uint64(time.Second))
	m.TimeReceivedNs, m.TimeFlowEndNs = recv, end
	m.TimeFlowStartNs = end - uint64(time.Millisecond) - r.Uint64N(uint64(time.Second))

	at.mu.Lock()
	if at.first == 0 {
		at.first = int64(recv)
	}
	at.last = int64(recv)
	at.sum.Flows++
	at.sum.Packets += packets
	at.sum.ScaledPackets += packets * uint64(rate)
	at.sum.ScaledBytes += m.Bytes * uint64(rate)
	at.mu.Unlock()
}

// notAmplification moves a random port off the amplification ports.
func notAmplification(p uint32) uint32 {
	if slices.Contains(amplificationPorts, p) {
		return p + 1
	}
	return p
}

// spoofed draws a random source address, as a SYN flood forges them: any
// unicast IPv4 address outside 0/8, 10/8, 127/8 and multicast; for IPv6
// any address in 2000::/3. The exporter finds no AS for most: 0.
func spoofed(r *rand.Rand, fam int) host {
	var h host
	if fam == 1 {
		h.v6, h.net = true, 48
		hi, lo := r.Uint64(), r.Uint64()|2
		hi = hi&^(7<<61) | 1<<61 // 2000::/3
		for i := range 8 {
			h.addr[i] = byte(hi >> (56 - 8*i))
			h.addr[8+i] = byte(lo >> (56 - 8*i))
		}
		return h
	}
	for {
		v := r.Uint32()
		a := byte(v >> 24)
		if a == 0 || a == 10 || a == 127 || a >= 224 {
			continue
		}
		h.addr[0], h.addr[1], h.addr[2], h.addr[3] = a, byte(v>>16), byte(v>>8), byte(v)
		h.net = 24
		return h
	}
}
