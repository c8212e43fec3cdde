package grafana

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// The ClickHouse dashboard's Enrichment panels, with the columns they are
// written against.
var chEnrichedColumns = map[string][]string{
	"Top source countries":      {"Country", "ScaledBytes", "ScaledPackets", "Flows"},
	"Top destination countries": {"Country", "ScaledBytes", "ScaledPackets", "Flows"},
	"Top AS by name":            {"AS", "Name", "SentBytes", "ReceivedBytes", "ScaledBytes"},
	"Top customers":             {"Customer", "Site", "ToBytes", "FromBytes", "ScaledBytes"},
	"Top sites":                 {"Site", "ToBytes", "FromBytes", "ScaledBytes"},
	"Traffic per interface and boundary (bits/s)": {"time", "interface", "bps"},
	"Traffic per exporter and interface":          {"Exporter", "Interface", "Direction", "Boundary", "ScaledBytes", "Flows"},
	"Flows sampled at the exporters file's rate":  {"Time", "Exporter", "Sampler", "Interface", "SamplingRate", "SampledBytes", "ScaledBytes"},
}

// enrichedExpected is what the Enrichment panels must find, computed in Go
// from the frames as protobuf-go decodes them.
type enrichedExpected struct {
	srcCountry, dstCountry map[string]uint64 // scaled bytes
	asSent, asReceived     map[string]uint64 // "AS\tname"
	custTo, custFrom       map[string]uint64 // "name\tsite"
	siteTo, siteFrom       map[string]uint64 // site
	iface                  map[string]uint64 // "exporter\tinterface\tdirection\tboundary"
	// Scaled packets and flow counts per country, flows per interface.
	srcCountryPackets, dstCountryPackets, srcCountryFlows, dstCountryFlows, ifaceFlows map[string]uint64
	fromExporter                                                                       int    // flows whose rate came from the exporters file
	total                                                                              uint64 // scaled bytes of all flows
}

// dashEnrichment is what an enricher with a demo-like networks and
// exporters file could add to flow i: a few countries, named ASes,
// customers at sites, named exporters and interfaces with boundaries. A
// flow sent with sampling rate 0 or 1 gets rate 1 from the "exporters
// file": the scaled counts stay those mockFlows expects.
func dashEnrichment(i int, m *pb.FlowMessage) *pb.Enrichment {
	countries := []string{"US", "DE", "FR", "JP", "BR", "CH", ""}
	// One name per AS number (none for some), as the ASN database gives.
	names := []string{"NETFLIX-ASN", "GOOGLE", "AMAZON-02", "Deutsche Telekom AG", "Orange S.A.", ""}
	name := func(as uint32) string { return names[as%uint32(len(names))] }
	custs := []struct{ name, site string }{{"customer-a", "par1"}, {"customer-b", "fra1"}, {"customer-c", "par1"}, {"", ""}}
	exporters := []string{"edge1.par1", "edge2.fra1", "core1.par1"}
	ext := []string{"et-0/0/1", "et-0/0/2", "xe-1/0/0"}
	in := []string{"ae10", "ae11", "ae12.100", "ae13"}
	c := custs[i%len(custs)]
	e := &pb.Enrichment{
		SrcCountry: countries[i%len(countries)], DstCountry: countries[(i/2)%len(countries)],
		SrcAsName: name(m.SrcAs), DstAsName: name(m.DstAs),
		DstNetName: c.name, DstNetSite: c.site, DstNetRole: "customer",
		ExporterName: exporters[i%len(exporters)],
		InIfName:     ext[i%len(ext)], InIfSpeed: 100e9, InIfBoundary: pb.FlowMessage_BOUNDARY_EXTERNAL,
		OutIfName: in[(i/3)%len(in)], OutIfSpeed: 10e9, OutIfBoundary: pb.FlowMessage_BOUNDARY_INTERNAL,
	}
	if i%5 == 0 { // the other direction: from a customer out to transit
		src := custs[(i/5)%len(custs)]
		e.DstNetName, e.DstNetSite, e.DstNetRole = "", "", ""
		e.SrcNetName, e.SrcNetSite = src.name, src.site
		e.InIfName, e.OutIfName = in[i%len(in)], ext[(i/5)%len(ext)]
		e.InIfBoundary, e.OutIfBoundary = pb.FlowMessage_BOUNDARY_INTERNAL, pb.FlowMessage_BOUNDARY_EXTERNAL
	}
	if i%11 == 0 {
		e.ExporterName, e.InIfName, e.OutIfName = "", "", "" // an exporter not in the file
		e.InIfBoundary, e.OutIfBoundary = 0, 0
	}
	if m.SamplingRate <= 1 {
		m.SamplingRate = 0 // as NetFlow v5 sends it
		e.SamplingRate, e.SamplingRateFromExporter = 1, true
	}
	return e
}

// enrichedRecord frames flows as the enricher does and returns the record
// with what the Enrichment panels must show.
func enrichedRecord(t *testing.T, flows []*pb.FlowMessage) ([]byte, enrichedExpected) {
	t.Helper()
	exp := enrichedExpected{srcCountry: map[string]uint64{}, dstCountry: map[string]uint64{}, asSent: map[string]uint64{}, asReceived: map[string]uint64{},
		custTo: map[string]uint64{}, custFrom: map[string]uint64{}, siteTo: map[string]uint64{}, siteFrom: map[string]uint64{}, iface: map[string]uint64{},
		srcCountryPackets: map[string]uint64{}, dstCountryPackets: map[string]uint64{}, srcCountryFlows: map[string]uint64{}, dstCountryFlows: map[string]uint64{},
		ifaceFlows: map[string]uint64{}}
	var record []byte
	for i, f := range flows {
		e := dashEnrichment(i, f)
		start := len(record)
		record = pb.AppendEnrichedFrame(record, f.AppendWire(nil), e)
		var m pb.FlowMessage
		if err := pb.ForEachFrame(record[start:], func(b []byte) error { return proto.Unmarshal(b, &m) }); err != nil {
			t.Fatal(err)
		}
		b := m.Bytes * max(m.SamplingRate, 1)
		exp.total += b
		p := m.Packets * max(m.SamplingRate, 1)
		if m.SrcCountry != "" {
			exp.srcCountry[m.SrcCountry] += b
			exp.srcCountryPackets[m.SrcCountry] += p
			exp.srcCountryFlows[m.SrcCountry]++
		}
		if m.DstCountry != "" {
			exp.dstCountry[m.DstCountry] += b
			exp.dstCountryPackets[m.DstCountry] += p
			exp.dstCountryFlows[m.DstCountry]++
		}
		exp.asSent[fmt.Sprintf("%d\t%s", m.SrcAs, m.SrcAsName)] += b
		exp.asReceived[fmt.Sprintf("%d\t%s", m.DstAs, m.DstAsName)] += b
		if m.DstNetName != "" {
			exp.custTo[m.DstNetName+"\t"+m.DstNetSite] += b
		}
		if m.SrcNetName != "" {
			exp.custFrom[m.SrcNetName+"\t"+m.SrcNetSite] += b
		}
		if m.DstNetSite != "" {
			exp.siteTo[m.DstNetSite] += b
		}
		if m.SrcNetSite != "" {
			exp.siteFrom[m.SrcNetSite] += b
		}
		bound := func(x pb.FlowMessage_Boundary) string {
			return map[pb.FlowMessage_Boundary]string{0: "undefined", 1: "external", 2: "internal"}[x]
		}
		if m.ExporterName != "" && m.InIfName != "" {
			exp.iface[m.ExporterName+"\t"+m.InIfName+"\tin\t"+bound(m.InIfBoundary)] += b
			exp.ifaceFlows[m.ExporterName+"\t"+m.InIfName+"\tin\t"+bound(m.InIfBoundary)]++
		}
		if m.ExporterName != "" && m.OutIfName != "" {
			exp.iface[m.ExporterName+"\t"+m.OutIfName+"\tout\t"+bound(m.OutIfBoundary)] += b
			exp.ifaceFlows[m.ExporterName+"\t"+m.OutIfName+"\tout\t"+bound(m.OutIfBoundary)]++
		}
		if m.SamplingRateFromExporter {
			exp.fromExporter++
		}
	}
	return record, exp
}

// top is the n largest values of m, largest first.
func top(m map[string]uint64, n int) []uint64 {
	var vs []uint64
	for _, v := range m {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i] > vs[j] })
	return vs[:min(n, len(vs))]
}

func u128(t *testing.T, v any) uint64 {
	t.Helper()
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case string:
		s = x
	default:
		t.Fatalf("%v (%T) is not a number", v, v)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			t.Fatalf("%q is not a number: %v", s, err)
		}
		return uint64(f)
	}
	return n
}

// checkEnriched checks an Enrichment panel's rows against the Go
// aggregates: each row's sums exactly, the ranking, and the row count.
func checkEnriched(t *testing.T, q sqlQuery, rows [][]any, exp enrichedExpected) {
	t.Helper()
	str := func(v any) string { return toString(v) }
	// ranked checks rows keyed by key(r) against want, sorted by total.
	ranked := func(limit int, key func(r []any) string, sums func(k string, r []any), total func(r []any) uint64, want map[string]uint64) {
		if n := min(limit, len(want)); len(rows) != n || n == 0 {
			t.Errorf("panel %q: %d rows, want %d", q.panel, len(rows), n)
		}
		tops := top(want, limit)
		for i, r := range rows {
			k := key(r)
			sums(k, r)
			if i < len(tops) && total(r) != tops[i] {
				t.Errorf("panel %q: row %d (%s) has %d bytes, rank %d should have %d", q.panel, i, k, total(r), i, tops[i])
			}
		}
	}
	switch q.panel {
	case "Top source countries", "Top destination countries":
		want, packets, flows := exp.srcCountry, exp.srcCountryPackets, exp.srcCountryFlows
		if q.panel == "Top destination countries" {
			want, packets, flows = exp.dstCountry, exp.dstCountryPackets, exp.dstCountryFlows
		}
		ranked(20, func(r []any) string { return str(r[0]) }, func(k string, r []any) {
			if got := u128(t, r[1]); got != want[k] {
				t.Errorf("panel %q: %s has %d bytes, want %d", q.panel, k, got, want[k])
			}
			if p, n := u128(t, r[2]), u128(t, r[3]); p != packets[k] || n != flows[k] {
				t.Errorf("panel %q: %s has %d packets in %d flows, want %d in %d", q.panel, k, p, n, packets[k], flows[k])
			}
		}, func(r []any) uint64 { return u128(t, r[1]) }, want)
	case "Top AS by name":
		both := map[string]uint64{}
		for k, v := range exp.asSent {
			both[k] += v
		}
		for k, v := range exp.asReceived {
			both[k] += v
		}
		ranked(10, func(r []any) string { return str(r[0]) + "\t" + str(r[1]) }, func(k string, r []any) {
			if s, d := u128(t, r[2]), u128(t, r[3]); s != exp.asSent[k] || d != exp.asReceived[k] || u128(t, r[4]) != s+d {
				t.Errorf("panel %q: %q sent %d received %d total %d, want %d %d", q.panel, k, s, d, u128(t, r[4]), exp.asSent[k], exp.asReceived[k])
			}
		}, func(r []any) uint64 { return u128(t, r[4]) }, both)
		if len(rows) > 0 && str(rows[0][1]) == "" {
			t.Errorf("panel %q: the top AS %s has no name", q.panel, str(rows[0][0]))
		}
	case "Top customers", "Top sites":
		to, from := exp.custTo, exp.custFrom
		key := func(r []any) string { return str(r[0]) + "\t" + str(r[1]) }
		c := 2
		if q.panel == "Top sites" {
			to, from, c = exp.siteTo, exp.siteFrom, 1
			key = func(r []any) string { return str(r[0]) }
		}
		both := map[string]uint64{}
		for k, v := range to {
			both[k] += v
		}
		for k, v := range from {
			both[k] += v
		}
		ranked(10, key, func(k string, r []any) {
			if a, b := u128(t, r[c]), u128(t, r[c+1]); a != to[k] || b != from[k] || u128(t, r[c+2]) != a+b {
				t.Errorf("panel %q: %q to %d from %d, want %d %d", q.panel, k, a, b, to[k], from[k])
			}
		}, func(r []any) uint64 { return u128(t, r[c+2]) }, both)
	case "Traffic per exporter and interface":
		ranked(20, func(r []any) string { return str(r[0]) + "\t" + str(r[1]) + "\t" + str(r[2]) + "\t" + str(r[3]) }, func(k string, r []any) {
			if got := u128(t, r[4]); got != exp.iface[k] {
				t.Errorf("panel %q: %q has %d bytes, want %d", q.panel, k, got, exp.iface[k])
			}
			if got := u128(t, r[5]); got != exp.ifaceFlows[k] {
				t.Errorf("panel %q: %q has %d flows, want %d", q.panel, k, got, exp.ifaceFlows[k])
			}
		}, func(r []any) uint64 { return u128(t, r[4]) }, exp.iface)
	case "Traffic per interface and boundary (bits/s)":
		// Each rate times the 1-minute interval gives back every byte.
		seen := map[string]float64{}
		for _, r := range rows {
			f, _ := strconv.ParseFloat(str(r[2]), 64)
			seen[str(r[1])] += f * 60 / 8
		}
		if len(seen) != len(exp.iface) {
			t.Errorf("panel %q: %d series, want %d", q.panel, len(seen), len(exp.iface))
		}
		for k, want := range exp.iface {
			var e, i, d, b string
			fmt.Sscanf(k, "%s\t%s\t%s\t%s", &e, &i, &d, &b)
			name := fmt.Sprintf("%s %s %s (%s)", e, i, d, b)
			if got := seen[name]; got < float64(want)*0.999 || got > float64(want)*1.001 {
				t.Errorf("panel %q: series %q adds up to %.0f bytes, want %d", q.panel, name, got, want)
			}
		}
	case "Flows sampled at the exporters file's rate":
		if want := min(100, exp.fromExporter); len(rows) != want || want == 0 {
			t.Errorf("panel %q: %d rows, want %d", q.panel, len(rows), want)
		}
		for _, r := range rows {
			if u128(t, r[4]) != 1 || str(r[1]) == "" && str(r[2]) == "" {
				t.Errorf("panel %q: row %v: want sampling rate 1 from the exporters file", q.panel, r)
			}
			if u128(t, r[6]) != u128(t, r[5])*u128(t, r[4]) {
				t.Errorf("panel %q: row %v: scaled bytes are not the sampled bytes times the rate", q.panel, r)
			}
		}
	default:
		t.Errorf("panel %q: no check", q.panel)
	}
}
