package flowexport_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"

	flowpb "github.com/netsampler/goflow2/v2/pb"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/goflow2test"

	"github.com/spendletonliveaction/flow-pipeline/mocker"
	"github.com/spendletonliveaction/flow-pipeline/mocker/flowexport"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// sent is one flow as the mocker generated it and what the encoder counted.
type sent struct {
	flow    *pb.FlowMessage
	counted flowexport.Counted
}

// encode runs n generated flows through enc, returning the datagrams and,
// per datagram, the flows in it.
func encode(t *testing.T, enc flowexport.Encoder, gen *mocker.Generator, n int, now time.Time) ([][]byte, [][]sent) {
	t.Helper()
	var datagrams [][]byte
	var flows [][]sent
	var cur []sent
	flush := func() {
		if d := enc.Flush(nil, now); d != nil {
			datagrams = append(datagrams, d)
			flows = append(flows, cur)
		} else if len(cur) > 0 {
			t.Fatalf("Flush returned nothing for %d flows", len(cur))
		}
		cur = nil
	}
	for range n {
		f := &pb.FlowMessage{}
		gen.Next(f, now)
		c, ok := enc.Add(f, now)
		if !ok {
			if enc.Flows() == 0 {
				t.Fatal("Add refused a flow in an empty datagram")
			}
			flush()
			if c, ok = enc.Add(f, now); !ok {
				t.Fatal("Add refused a flow right after Flush")
			}
		}
		cur = append(cur, sent{f, c})
		if enc.Flows() != len(cur) {
			t.Fatalf("Flows() = %d, want %d", enc.Flows(), len(cur))
		}
	}
	flush()
	return datagrams, flows
}

func generator(t *testing.T, plan string) *mocker.Generator {
	if plan == mocker.AddressesDocumentation {
		return mocker.NewGenerator(7)
	}
	p, err := mocker.DemoPlan()
	if err != nil {
		t.Fatal(err)
	}
	return mocker.NewPlanGenerator(7, p)
}

// TestDecodedByGoflow2 encodes generated flows in each protocol, decodes
// the datagrams with goflow2 v2.2.6's decoders and producer, and compares
// every field goflow2 fills with what the flow held.
func TestDecodedByGoflow2(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 123456789, time.UTC)
	boot := now.Add(-36 * time.Hour)
	src := netip.MustParseAddrPort("127.0.0.2:40001")
	for _, proto := range []string{flowexport.NetFlowV9, flowexport.IPFIX, flowexport.SFlow} {
		for _, plan := range []string{mocker.AddressesRealistic, mocker.AddressesDocumentation} {
			t.Run(proto+"/"+plan, func(t *testing.T) {
				exp := flowexport.Exporter{Agent: src.Addr(), Domain: 3, SamplingRate: 1024, Boot: boot}
				enc, err := flowexport.New(proto, exp)
				if err != nil {
					t.Fatal(err)
				}
				const n = 3000
				datagrams, flows := encode(t, enc, generator(t, plan), n, now)
				c := goflow2test.NewCollector(t)
				tr := now.Add(time.Millisecond)
				total := 0
				var v6 int
				var seqs []uint32
				for i, d := range datagrams {
					if len(d) > flowexport.DefaultMaxDatagram {
						t.Fatalf("datagram %d: %d bytes, over %d", i, len(d), flowexport.DefaultMaxDatagram)
					}
					got, err := c.Receive(d, src, tr)
					if err != nil {
						t.Fatalf("datagram %d: goflow2 cannot decode it: %v", i, err)
					}
					if len(got) != len(flows[i]) {
						t.Fatalf("datagram %d: goflow2 decodes %d flows, the encoder put %d", i, len(got), len(flows[i]))
					}
					seqs = append(seqs, got[0].SequenceNum)
					for j, g := range got {
						s := flows[i][j]
						if len(s.flow.SrcAddr) == 16 {
							v6++
						}
						compare(t, proto, d, g, s, exp, src, tr)
					}
					total += len(got)
				}
				if total != n {
					t.Fatalf("goflow2 decoded %d flows, want %d", total, n)
				}
				if v6 == 0 || v6 == n {
					t.Fatalf("%d of %d flows are IPv6: the test must cover both families", v6, n)
				}
				// Sequence numbers: NetFlow v9 and sFlow count datagrams from 1;
				// IPFIX counts the data records sent before (the option record
				// of the first datagram included).
				want := uint32(1)
				if proto == flowexport.IPFIX {
					want = 0
				}
				for i, s := range seqs {
					if s != want {
						t.Fatalf("datagram %d: sequence %d, want %d", i, s, want)
					}
					switch proto {
					case flowexport.IPFIX:
						want += uint32(len(flows[i]))
						if i == 0 {
							want++ // the option record
						}
					default:
						want++
					}
				}
				t.Logf("%d flows in %d datagrams (%d IPv6)", n, len(datagrams), v6)
			})
		}
	}
}

func compare(t *testing.T, proto string, d []byte, g *flowpb.FlowMessage, s sent, exp flowexport.Exporter, src netip.AddrPort, tr time.Time) {
	t.Helper()
	f := s.flow
	type check struct {
		name      string
		got, want any
	}
	v6 := len(f.SrcAddr) == 16
	etype := uint32(0x800)
	if v6 {
		etype = 0x86dd
	}
	icmpType, icmpCode := f.IcmpType, f.IcmpCode
	if proto == flowexport.SFlow {
		// goflow2 v2.2.6 reads ICMP type and code from a sampled header only
		// on a parser's "first call", which its call counter has already
		// passed when ICMP comes: it stores 0 for both.
		icmpType, icmpCode = 0, 0
	}
	checks := []check{
		{"type", pb.FlowMessage_FlowType(g.Type), flowexport.Type(proto)},
		{"sampling_rate", g.SamplingRate, uint64(exp.SamplingRate)},
		{"time_received_ns", g.TimeReceivedNs, uint64(tr.UnixNano())},
		{"src_addr", g.SrcAddr, f.SrcAddr},
		{"dst_addr", g.DstAddr, f.DstAddr},
		{"etype", g.Etype, etype},
		{"proto", g.Proto, f.Proto},
		{"src_port", g.SrcPort, f.SrcPort},
		{"dst_port", g.DstPort, f.DstPort},
		{"tcp_flags", g.TcpFlags, f.TcpFlags},
		{"ip_ttl", g.IpTtl, f.IpTtl},
		{"ip_tos", g.IpTos, f.IpTos},
		{"icmp_type", g.IcmpType, icmpType},
		{"icmp_code", g.IcmpCode, icmpCode},
		{"in_if", g.InIf, f.InIf},
		{"out_if", g.OutIf, f.OutIf},
		{"src_as", g.SrcAs, f.SrcAs},
		{"dst_as", g.DstAs, f.DstAs},
		{"src_net", g.SrcNet, f.SrcNet},
		{"dst_net", g.DstNet, f.DstNet},
		{"next_hop", g.NextHop, f.NextHop},
		{"bytes", g.Bytes, s.counted.Bytes},
		{"packets", g.Packets, s.counted.Packets},
	}
	if v6 {
		checks = append(checks, check{"ipv6_flow_label", g.Ipv6FlowLabel, f.Ipv6FlowLabel})
	}
	switch proto {
	case flowexport.SFlow:
		avg := f.Bytes / max(f.Packets, 1)
		hdr := uint64(20)
		if v6 {
			hdr = 40
		}
		switch f.Proto {
		case 6:
			hdr += 20
		case 17, 1, 58:
			hdr += 8
		}
		checks = append(checks,
			check{"sampler_address", g.SamplerAddress, exp.Agent.AsSlice()},
			check{"sequence_num", g.SequenceNum, binary.BigEndian.Uint32(d[16:])},
			check{"counted packets", s.counted.Packets, uint64(1)},
			check{"counted bytes (Ethernet + IP packet of the average size + FCS)", s.counted.Bytes, 14 + max(avg, hdr) + 4},
			check{"time_flow_start_ns", g.TimeFlowStartNs, uint64(tr.UnixNano())},
			check{"time_flow_end_ns", g.TimeFlowEndNs, uint64(tr.UnixNano())},
		)
	default:
		checks = append(checks,
			check{"sampler_address", g.SamplerAddress, src.Addr().AsSlice()},
			check{"counted bytes", s.counted.Bytes, f.Bytes},
			check{"counted packets", s.counted.Packets, f.Packets},
			check{"forwarding_status", g.ForwardingStatus, f.ForwardingStatus},
			check{"observation_domain_id", g.ObservationDomainId, exp.Domain},
		)
		if proto == flowexport.IPFIX {
			ms := uint64(time.Millisecond)
			checks = append(checks,
				check{"sequence_num", g.SequenceNum, binary.BigEndian.Uint32(d[8:])},
				check{"time_flow_start_ns", g.TimeFlowStartNs, f.TimeFlowStartNs / ms * ms},
				check{"time_flow_end_ns", g.TimeFlowEndNs, f.TimeFlowEndNs / ms * ms},
			)
		} else {
			// goflow2: export seconds minus (uptime - switched) milliseconds.
			uptime := uint64(binary.BigEndian.Uint32(d[4:]))
			secs := uint64(binary.BigEndian.Uint32(d[8:]))
			at := func(ns uint64) uint64 {
				switched := uint64(time.Unix(0, int64(ns)).Sub(exp.Boot) / time.Millisecond)
				return secs*1e9 - (uptime-switched)*1e6
			}
			checks = append(checks,
				check{"sequence_num", g.SequenceNum, binary.BigEndian.Uint32(d[12:])},
				check{"time_flow_start_ns", g.TimeFlowStartNs, at(f.TimeFlowStartNs)},
				check{"time_flow_end_ns", g.TimeFlowEndNs, at(f.TimeFlowEndNs)},
			)
		}
	}
	for _, c := range checks {
		gb, gok := c.got.([]byte)
		wb, wok := c.want.([]byte)
		if gok && wok {
			if !bytes.Equal(gb, wb) {
				t.Fatalf("%s: goflow2 decodes %v, want %v (flow %v)", c.name, gb, wb, f)
			}
			continue
		}
		if c.got != c.want {
			t.Fatalf("%s: goflow2 decodes %v, want %v (flow %v)", c.name, c.got, c.want, f)
		}
	}
}

// TestTemplatesResent: a collector that missed the first datagram (it
// started late, say) cannot decode NetFlow v9 or IPFIX data until the
// templates come again, TemplateInterval later; the sampling rate comes
// with them, and sticks for the datagrams without templates after.
func TestTemplatesResent(t *testing.T) {
	for _, proto := range []string{flowexport.NetFlowV9, flowexport.IPFIX} {
		t.Run(proto, func(t *testing.T) {
			start := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
			exp := flowexport.Exporter{Domain: 9, SamplingRate: 333, TemplateInterval: time.Minute}
			enc, err := flowexport.New(proto, exp)
			if err != nil {
				t.Fatal(err)
			}
			gen := generator(t, mocker.AddressesDocumentation)
			src := netip.MustParseAddrPort("127.0.0.5:5000")
			c := goflow2test.NewCollector(t)
			// Datagrams at start, +30 s, +60 s (templates due), +90 s.
			var decoded []int
			for i, at := range []time.Duration{0, 30 * time.Second, time.Minute, 90 * time.Second} {
				now := start.Add(at)
				ds, fs := encode(t, enc, gen, 5, now)
				if len(ds) != 1 {
					t.Fatalf("5 flows made %d datagrams", len(ds))
				}
				if i == 0 {
					continue // the collector missed it
				}
				got, err := c.Receive(ds[0], src, now)
				if err != nil {
					decoded = append(decoded, -1)
					continue
				}
				for j, g := range got {
					if g.SamplingRate != 333 || !slices.Equal(g.SrcAddr, fs[0][j].flow.SrcAddr) {
						t.Fatalf("datagram at +%s, flow %d: sampling rate %d, source %v", at, j, g.SamplingRate, g.SrcAddr)
					}
				}
				decoded = append(decoded, len(got))
			}
			if want := []int{-1, 5, 5}; !slices.Equal(decoded, want) {
				t.Fatalf("flows decoded at +30s, +60s, +90s: %v, want %v (-1: template not found)", decoded, want)
			}
		})
	}
}

// TestTemplatesDatagram: the datagram an exporter sends at start holds the
// templates and the sampling rate alone, so data datagrams without
// templates decode with the right rate after it.
func TestTemplatesDatagram(t *testing.T) {
	for _, proto := range []string{flowexport.NetFlowV9, flowexport.IPFIX, flowexport.SFlow} {
		t.Run(proto, func(t *testing.T) {
			now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
			exp := flowexport.Exporter{Agent: netip.MustParseAddr("127.0.0.9"), Domain: 1, SamplingRate: 2000}
			enc, err := flowexport.New(proto, exp)
			if err != nil {
				t.Fatal(err)
			}
			tmpl := enc.Templates(nil, now)
			if proto == flowexport.SFlow {
				if len(tmpl) != 0 {
					t.Fatalf("sFlow has no templates, got a %d-byte datagram", len(tmpl))
				}
				return
			}
			src := netip.MustParseAddrPort("127.0.0.9:7000")
			c := goflow2test.NewCollector(t)
			got, err := c.Receive(tmpl, src, now)
			if err != nil || len(got) != 0 {
				t.Fatalf("templates datagram: %d flows, %v; want 0, nil", len(got), err)
			}
			ds, _ := encode(t, enc, generator(t, mocker.AddressesRealistic), 200, now)
			flows := 0
			for _, d := range ds {
				// Only the first datagram after Templates would carry them again
				// if they were due; they are not (TemplateInterval is 10 s).
				got, err := c.Receive(d, src, now)
				if err != nil {
					t.Fatal(err)
				}
				for _, g := range got {
					if g.SamplingRate != 2000 {
						t.Fatalf("sampling rate %d, want 2000", g.SamplingRate)
					}
				}
				flows += len(got)
			}
			if flows != 200 {
				t.Fatalf("decoded %d flows, want 200", flows)
			}
			// A fresh collector cannot decode them: the templates were only in
			// the first datagram.
			if _, err := goflow2test.NewCollector(t).Receive(ds[0], src, now); err == nil {
				t.Fatal("a data datagram carried templates again before TemplateInterval")
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		name, proto string
		e           flowexport.Exporter
	}{
		{"unknown protocol", "netflow5", flowexport.Exporter{}},
		{"sFlow without agent", flowexport.SFlow, flowexport.Exporter{}},
		{"datagram too small", flowexport.IPFIX, flowexport.Exporter{MaxDatagram: 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := flowexport.New(tc.proto, tc.e); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}
