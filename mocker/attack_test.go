package mocker

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/goflow2test"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func TestParseAttack(t *testing.T) {
	ok := []struct {
		in   string
		want Attack
	}{
		{"target=203.0.113.7,vector=dns-amp,start=60s,duration=30s,pps=80000",
			Attack{netip.MustParseAddr("203.0.113.7"), VectorDNSAmp, time.Minute, 30 * time.Second, 80000}},
		{" vector=syn , target=2001:db8:200::9,duration=1m,pps=1.5e5 ",
			Attack{netip.MustParseAddr("2001:db8:200::9"), VectorSYN, 0, time.Minute, 150000}},
	}
	for _, c := range ok {
		got, err := ParseAttack(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseAttack(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if back, err := ParseAttack(got.String()); err != nil || back != got {
			t.Errorf("ParseAttack(%q) = %+v, %v; want %+v back", got.String(), back, err, got)
		}
	}
	bad := []struct{ in, want string }{
		{"target=203.0.113.7,vector=dns-amp,duration=30s", "pps is missing"},
		{"target=203.0.113.7,vector=dns,duration=30s,pps=1", `vector "dns": want one of total, udp-flood`},
		{"target=203.0.113,vector=syn,duration=30s,pps=1", "target: ParseAddr"},
		{"target=203.0.113.7,vector=syn,duration=0s,pps=1", "duration 0s: want a positive duration"},
		{"target=203.0.113.7,vector=syn,start=-1s,duration=1s,pps=1", "start -1s: must not be negative"},
		{"target=203.0.113.7,vector=syn,duration=1s,pps=0", "pps 0: want packets per second"},
		{"target=203.0.113.7,vector=syn,duration=1s,pps=NaN", "pps NaN"},
		{"target=203.0.113.7,vector=syn,duration=1s,pps=1,rate=3", "rate: unknown key"},
		{"target=203.0.113.7,target=203.0.113.8,vector=syn,duration=1s,pps=1", "target given twice"},
		{"target=203.0.113.7,syn", `"syn" is not key=value`},
		{"target=::ffff:203.0.113.7,vector=syn,duration=1s,pps=1", "want a plain IPv4 or IPv6 address"},
	}
	for _, c := range bad {
		if _, err := ParseAttack(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseAttack(%q) = %v, want an error containing %q", c.in, err, c.want)
		}
	}
}

func TestAttackConfigValidate(t *testing.T) {
	a := Attack{netip.MustParseAddr("203.0.113.7"), VectorSYN, 0, time.Second, 1000}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Brokers: []string{"x:1"}, Attacks: []Attack{a}, Addresses: AddressesDocumentation}, "Config.Attacks need the realistic address plan"},
		{Config{Brokers: []string{"x:1"}, SimulateStart: time.Unix(0, 0)}, "Config.SimulateStart needs Config.Rate > 0"},
		{Config{Brokers: []string{"x:1"}, Rate: 1, Attacks: []Attack{{Vector: "x"}}}, "Config.Attacks[0]"},
		{Config{Rate: 1, Output: OutputIPFIX, Attacks: []Attack{a}}, "work with Output kafka only, not ipfix"},
		{Config{Rate: 1, Output: OutputSFlow, SimulateStart: time.Unix(0, 0)}, "work with Output kafka only, not sflow"},
	} {
		err := c.cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate() = %v, want ErrInvalidConfig containing %q", err, c.want)
		}
	}
}

// vectorCheck is what every flow of a vector must show.
func vectorCheck(t *testing.T, vector string, f *pb.FlowMessage) {
	t.Helper()
	spec := attackVectors[vector]
	v6 := len(f.DstAddr) == 16
	wantProto := spec.proto
	if spec.proto == protoICMP && v6 {
		wantProto = protoICMPv6
	}
	if f.Proto != wantProto {
		t.Fatalf("%s flow has proto %d, want %d", vector, f.Proto, wantProto)
	}
	switch {
	case spec.proto == protoICMP:
		if f.SrcPort != 0 || f.DstPort != 0 || (f.IcmpType != 8 && f.IcmpType != 128) {
			t.Fatalf("%s flow: ports %d/%d icmp type %d, want 0/0 and echo request", vector, f.SrcPort, f.DstPort, f.IcmpType)
		}
	case spec.noPorts:
		if f.SrcPort != 0 || f.DstPort != 0 || f.IpFlags != ipFlagMoreFragments {
			t.Fatalf("%s flow: ports %d/%d ip_flags %d, want 0/0 and more-fragments", vector, f.SrcPort, f.DstPort, f.IpFlags)
		}
	default:
		if spec.srcPort != 0 && f.SrcPort != spec.srcPort {
			t.Fatalf("%s flow from port %d, want %d", vector, f.SrcPort, spec.srcPort)
		}
		if spec.srcPort == 0 && (slices.Contains(amplificationPorts, f.SrcPort) || f.SrcPort < ephemeralLow) {
			t.Fatalf("%s flow from port %d: want an ephemeral port, not an amplification one", vector, f.SrcPort)
		}
		if spec.dstPort != 0 && f.DstPort != spec.dstPort || slices.Contains(amplificationPorts, f.DstPort) && spec.dstPort == 0 {
			t.Fatalf("%s flow to port %d", vector, f.DstPort)
		}
		if f.TcpFlags != spec.tcpFlags {
			t.Fatalf("%s flow with TCP flags %#x, want %#x", vector, f.TcpFlags, spec.tcpFlags)
		}
	}
	if !spec.noPorts && f.IpFlags != 0 {
		t.Fatalf("%s flow with ip_flags %d: only fragments show fragments", vector, f.IpFlags)
	}
	if avg := f.Bytes / f.Packets; f.Bytes%f.Packets != 0 || avg < spec.minSize || avg > spec.maxSiz {
		t.Fatalf("%s flow: %d bytes in %d packets, want %d to %d bytes a packet", vector, f.Bytes, f.Packets, spec.minSize, spec.maxSiz)
	}
}

// TestAttackFlows runs 60 s of simulated event time at 1000 flows/s with
// one attack of each vector from 30 s to 50 s, and checks each attack
// flow, their count and scaled packets against the summary and the PPS,
// the sources, and that the normal flows are those of the plain generator.
func TestAttackFlows(t *testing.T) {
	p := demoPlan(t)
	t0 := time.Date(2026, 1, 15, 22, 30, 0, 0, time.UTC)
	const rate, seconds = 1000, 60
	targets := map[string]struct {
		addr     string
		exporter string // the site's exporter(s) the flows must come through
		rate     uint64
	}{
		"v4": {"203.0.113.7", "192.0.2.3", 512},       // customer-c, fra1: edge1.fra1
		"v6": {"2001:db8:300::42", "192.0.2.2", 4096}, // customer-e, nyc1: edge1.nyc1
	}
	for _, vector := range Vectors {
		for fam, tg := range targets {
			t.Run(vector+"/"+fam, func(t *testing.T) {
				a := Attack{netip.MustParseAddr(tg.addr), vector, 30 * time.Second, 20 * time.Second, 80000}
				g := NewPlanGenerator(3, p)
				plain := NewPlanGenerator(3, p)
				mix := newAttackMix(g, p, []Attack{a})
				var f, want pb.FlowMessage
				var normal, attack, scaled uint64
				srcs, ases := map[string]bool{}, map[uint32]bool{}
				var first, last uint64
				for normal < rate*seconds {
					now := t0.Add(time.Duration(normal) * time.Second / rate)
					if !mix.next(&f, now) {
						plain.Next(&want, now)
						if string(f.SrcAddr) != string(want.SrcAddr) || string(f.DstAddr) != string(want.DstAddr) ||
							f.Bytes != want.Bytes || f.TimeFlowStartNs != want.TimeFlowStartNs || f.SrcPort != want.SrcPort {
							t.Fatalf("normal flow %d differs from the plain generator's:\n%v\n%v", normal, &f, &want)
						}
						normal++
						continue
					}
					attack++
					if got, _ := netip.AddrFromSlice(f.DstAddr); got.String() != tg.addr {
						t.Fatalf("attack flow to %s, want %s", got, tg.addr)
					}
					if s := netip.AddrFrom4([4]byte(f.SamplerAddress)).String(); s != tg.exporter || f.SamplingRate != tg.rate {
						t.Fatalf("attack flow through %s at 1:%d, want %s at 1:%d", s, f.SamplingRate, tg.exporter, tg.rate)
					}
					if f.InIf >= 10 || f.OutIf < 10 {
						t.Fatalf("attack flow in on %d, out on %d: want in from transit or peering (1-9), out to a customer (10+)", f.InIf, f.OutIf)
					}
					if recv := time.Unix(0, int64(f.TimeReceivedNs)); recv.Before(t0.Add(a.Start)) || !recv.Before(t0.Add(a.Start+a.Duration)) {
						t.Fatalf("attack flow received at %s, outside the attack", recv)
					}
					if !(f.TimeFlowStartNs < f.TimeFlowEndNs && f.TimeFlowEndNs <= f.TimeReceivedNs) {
						t.Fatalf("attack flow times %d %d %d out of order", f.TimeFlowStartNs, f.TimeFlowEndNs, f.TimeReceivedNs)
					}
					if first == 0 {
						first = f.TimeReceivedNs
					}
					last = f.TimeReceivedNs
					vectorCheck(t, vector, &f)
					scaled += f.Packets * f.SamplingRate
					srcs[string(f.SrcAddr)] = true
					ases[f.SrcAs] = true
				}
				sum := mix.summaries()[0]
				flowsPerSec := 80000.0 / 4096 // the plan's largest rate
				wantFlows := uint64(math.Ceil(20 / time.Duration(float64(time.Second)/flowsPerSec).Seconds()))
				if attack != wantFlows || sum.Flows != attack {
					t.Fatalf("%d attack flows, summary says %d, want %d", attack, sum.Flows, wantFlows)
				}
				if sum.ScaledPackets != scaled || math.Abs(float64(scaled)-80000*20) > 4096 {
					t.Fatalf("attack flows carry %d packets scaled, summary %d, want 1600000 ± 4096", scaled, sum.ScaledPackets)
				}
				if sum.Start != time.Unix(0, int64(first)).UTC().Format(time.RFC3339Nano) || sum.Start != "2026-01-15T22:30:30Z" ||
					sum.End != time.Unix(0, int64(last)).UTC().Format(time.RFC3339Nano) {
					t.Fatalf("summary %s to %s, want 2026-01-15T22:30:30Z (first flow) to the last flow %d", sum.Start, sum.End, last)
				}
				switch attackVectors[vector].sources {
				case srcSpoofed:
					if uint64(len(srcs)) != attack {
						t.Fatalf("%d distinct sources in %d flows: want a spoofed one per flow", len(srcs), attack)
					}
				default:
					if len(srcs) < int(attack)*9/10 || len(ases) < 8 {
						t.Fatalf("%d distinct sources in %d ASes for %d flows: want many reflectors or bots in many networks", len(srcs), len(ases), attack)
					}
				}
			})
		}
	}
}

// TestSimulateKafka: with SimulateStart the mocker stamps normal flows
// 1/Rate apart from there, sends far faster than Rate, and the attack's
// flows come on top of Count's normal share.
func TestSimulateKafka(t *testing.T) {
	brokers := testenv.FakeKafka(t, 3, "flows")
	t0 := time.Date(2026, 1, 15, 22, 30, 0, 0, time.UTC)
	a := Attack{netip.MustParseAddr("198.51.100.20"), VectorNTPAmp, 5 * time.Second, 5 * time.Second, 40960}
	const n = 30000 // 30 s of event time at 1000 flows/s, attack flows included
	m, _ := newMocker(t, Config{Brokers: brokers, Count: n, Rate: 1000, SimulateStart: t0, Attacks: []Attack{a}, FlowsPerRecord: 10})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if wall := time.Since(began); wall > 15*time.Second {
		t.Fatalf("30 s of event time took %s: want as fast as possible", wall)
	}
	sum := m.AttackSummaries()[0]
	// 40960 pps at 1:4096 at most: 10 flows/s, 50 flows.
	if sum.Flows != 50 || sum.Start != "2026-01-15T22:30:05Z" || sum.End != "2026-01-15T22:30:09.9Z" {
		t.Fatalf("summary %+v, want 50 flows from 22:30:05 to 22:30:09.9", sum)
	}
	var times []uint64
	var attackFlows, topicBytes uint64
	for _, r := range goflow2test.ReadTopic(t, brokers, "flows", time.Minute) {
		flows, err := goflow2test.Decode(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			topicBytes += f.Bytes
			if f.Proto == protoUDP && f.SrcPort == 123 && string(f.DstAddr) == string(a.Target.AsSlice()) && f.Bytes/f.Packets >= 468 {
				attackFlows++
				continue
			}
			times = append(times, f.TimeReceivedNs)
		}
	}
	if attackFlows != sum.Flows || uint64(len(times)) != n-sum.Flows {
		t.Fatalf("%d attack flows and %d normal ones on the topic, want %d and %d", attackFlows, len(times), sum.Flows, n-sum.Flows)
	}
	slices.Sort(times)
	for i, ts := range times {
		if want := uint64(t0.Add(time.Duration(i) * time.Millisecond).UnixNano()); ts != want {
			t.Fatalf("normal flow %d received at %d, want %d (1 ms apart from -simulate.start)", i, ts, want)
		}
	}
	// The summary's truth counts the attack's flows with the rest, under
	// the exporters that sent them, and reports the attack.
	s := m.Summary()
	var exporterFlows, exporterBytes uint64
	for _, e := range s.Exporters {
		exporterFlows += e.Flows
		exporterBytes += e.Bytes
	}
	if s.Totals.Flows != n || exporterFlows != n || s.Totals.Bytes != topicBytes || exporterBytes != topicBytes {
		t.Errorf("summary: %d flows (%d by exporter), %d bytes (%d by exporter); the topic holds %d flows, %d bytes",
			s.Totals.Flows, exporterFlows, s.Totals.Bytes, exporterBytes, n, topicBytes)
	}
	if len(s.Attacks) != 1 || s.Attacks[0] != sum {
		t.Errorf("summary attacks %+v, want [%+v]", s.Attacks, sum)
	}
}
