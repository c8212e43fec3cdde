package main

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/geotest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// enriched is what the enricher may change in a flow.
type enriched struct {
	SrcCountry, DstCountry, SrcAsName, DstAsName, SrcNetName, DstNetName string
	SrcNetRole, DstNetRole, SrcNetSite, DstNetSite, ExporterName         string
	InIfName, OutIfName, InIfDescription, OutIfDescription               string
	InIfSpeed, OutIfSpeed                                                uint64
	InIfBoundary, OutIfBoundary                                          pb.FlowMessage_Boundary
	SamplingRate                                                         uint64
	SamplingRateFromExporter                                             bool
	SrcAs, DstAs                                                         uint32
}

func enrichedOf(m *pb.FlowMessage) enriched {
	return enriched{m.SrcCountry, m.DstCountry, m.SrcAsName, m.DstAsName, m.SrcNetName, m.DstNetName,
		m.SrcNetRole, m.DstNetRole, m.SrcNetSite, m.DstNetSite, m.ExporterName,
		m.InIfName, m.OutIfName, m.InIfDescription, m.OutIfDescription, m.InIfSpeed, m.OutIfSpeed,
		m.InIfBoundary, m.OutIfBoundary, m.SamplingRate, m.SamplingRateFromExporter, m.SrcAs, m.DstAs}
}

// expect is what the data files say about the input flow m, straight from
// the sources' lookups: the documented rules, written out again.
func expect(set *sources.Set, m *pb.FlowMessage) enriched {
	src, _ := netip.AddrFromSlice(m.SrcAddr)
	dst, _ := netip.AddrFromSlice(m.DstAddr)
	sampler, _ := netip.AddrFromSlice(m.SamplerAddress)
	w := enriched{SrcCountry: set.Country(src), DstCountry: set.Country(dst), SamplingRate: m.SamplingRate, SrcAs: m.SrcAs, DstAs: m.DstAs}
	if asn, name, ok := set.ASN(src); ok && asn != 0 && (m.SrcAs == 0 || m.SrcAs == asn) {
		w.SrcAs, w.SrcAsName = asn, name
	}
	if asn, name, ok := set.ASN(dst); ok && asn != 0 && (m.DstAs == 0 || m.DstAs == asn) {
		w.DstAs, w.DstAsName = asn, name
	}
	if n, ok := set.Network(src); ok {
		w.SrcNetName, w.SrcNetRole, w.SrcNetSite = n.Name, n.Role, n.Site
	}
	if n, ok := set.Network(dst); ok {
		w.DstNetName, w.DstNetRole, w.DstNetSite = n.Name, n.Role, n.Site
	}
	if e, ok := set.Exporter(sampler); ok {
		w.ExporterName = e.Name
		if m.SamplingRate == 0 && e.SamplingRate != 0 {
			w.SamplingRate, w.SamplingRateFromExporter = e.SamplingRate, true
		}
		w.InIfBoundary, w.OutIfBoundary = pb.FlowMessage_Boundary(e.DefaultBoundary), pb.FlowMessage_Boundary(e.DefaultBoundary)
		if i, ok := e.Interfaces[m.InIf]; ok {
			w.InIfName, w.InIfDescription, w.InIfSpeed, w.InIfBoundary = i.Name, i.Description, i.Speed, pb.FlowMessage_Boundary(i.Boundary)
		}
		if i, ok := e.Interfaces[m.OutIf]; ok {
			w.OutIfName, w.OutIfDescription, w.OutIfSpeed, w.OutIfBoundary = i.Name, i.Description, i.Speed, pb.FlowMessage_Boundary(i.Boundary)
		}
	}
	return w
}

// TestDoneWhen is the acceptance run: the built binary with exactly
// the documented flags turns the mocker's flows (and flowtest's, which
// carry sampling rate 0, here also AS 0) into enriched flows; every field
// of every flow equals what the data files say, and every input byte is
// kept.
func TestDoneWhen(t *testing.T) {
	k := testenv.SharedKafka(t)
	in, out := testenv.UniqueName(t), testenv.UniqueName(t)
	k.CreateTopic(t, in, 3)
	k.CreateTopic(t, out, 3)
	cfg := geotest.Write(t, t.TempDir())
	loader, err := sources.NewLoader(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	set := loader.Current()

	originals := map[flowKey][]byte{}
	var values [][]byte
	var want flowtest.Totals
	add := func(m *pb.FlowMessage) {
		v, _ := pb.AppendDelimited(nil, m)
		values = append(values, v)
		originals[flowKey{string(m.SamplerAddress), m.SequenceNum}] = v[len(v)-m.WireSize():]
		want.Flows++
		want.Bytes += int64(m.Bytes)
		want.Packets += int64(m.Packets)
	}
	g := mocker.NewGenerator(21)
	var m pb.FlowMessage
	now := time.Now().Add(-time.Hour)
	for i := range 20_000 {
		g.Next(&m, now.Add(time.Duration(i)*time.Microsecond))
		add(&m)
	}
	fg := flowtest.NewGen(22)
	for i := range 5_000 {
		fg.Next(&m, now)
		if i%3 == 0 {
			m.SrcAs, m.DstAs = 0, 0
		}
		add(&m)
	}
	if len(originals) != int(want.Flows) {
		t.Fatalf("the generators repeated (sampler_address, sequence_num): %d distinct of %d", len(originals), want.Flows)
	}
	flowtest.Produce(t, k.Brokers(), in, values)

	p := startBinary(t, "-kafka.brokers", k.Brokers()[0], "-kafka.topic", in, "-kafka.out.topic", out,
		"-geo.country", cfg.CountryFile, "-geo.asn", cfg.ASNFiles[0], "-networks", cfg.NetworksFile, "-exporters", cfg.ExportersFile)
	s := readCommitted(t, k.Brokers(), out, want.Flows, 2*time.Minute, true)
	p.term(t)
	check(t, s, want)

	var in0, out0 pb.FlowMessage
	// Each field must be set in some flow and differ from the input in
	// some flow, or the data files do not exercise it.
	set1 := map[string]int{}
	bad := 0
	for key, orig := range originals {
		f, ok := s.frames[key]
		if !ok {
			continue // check reported it
		}
		if !bytes.HasPrefix(f, orig) {
			t.Fatalf("flow %v: the output frame does not start with the input frame's bytes", key)
		}
		if err := in0.DecodeWire(orig); err != nil {
			t.Fatal(err)
		}
		if err := out0.DecodeWire(f); err != nil {
			t.Fatal(err)
		}
		w, got := expect(set, &in0), enrichedOf(&out0)
		if got != w {
			if bad++; bad <= 5 {
				t.Errorf("flow %v:\n got  %+v\n want %+v", key, got, w)
			}
		}
		for name, v := range map[string]bool{"src_country": got.SrcCountry != "", "dst_country": got.DstCountry != "", "src_as_name": got.SrcAsName != "",
			"dst_as_name": got.DstAsName != "", "src_net": got.SrcNetName != "" && got.SrcNetSite != "", "dst_net": got.DstNetRole != "" && got.DstNetSite != "",
			"exporter_name": got.ExporterName != "", "in_if": got.InIfName != "" && got.InIfDescription != "" && got.InIfSpeed != 0,
			"out_if":         got.OutIfName != "" && got.OutIfDescription != "" && got.OutIfSpeed != 0,
			"in_if_boundary": got.InIfBoundary == pb.FlowMessage_BOUNDARY_EXTERNAL, "out_if_boundary": got.OutIfBoundary == pb.FlowMessage_BOUNDARY_INTERNAL,
			"sampling_rate filled": in0.SamplingRate == 0 && got.SamplingRate != 0 && got.SamplingRateFromExporter, "src_as filled": in0.SrcAs == 0 && got.SrcAs != 0,
			"dst_as filled": in0.DstAs == 0 && got.DstAs != 0, "src_country miss": got.SrcCountry == ""} {
			if v {
				set1[name]++
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d flows differ from what the data files say", bad, len(originals))
	}
	for _, name := range []string{"src_country", "dst_country", "src_as_name", "dst_as_name", "src_net", "dst_net", "exporter_name", "in_if", "out_if",
		"in_if_boundary", "out_if_boundary", "sampling_rate filled", "src_as filled", "dst_as filled", "src_country miss"} {
		if set1[name] == 0 {
			t.Errorf("no flow exercised %s: the test data do not cover it", name)
		}
	}
	t.Logf("%v enriched, each as the data files say; coverage %v", s.tot, set1)
}
