package flowtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Demo-like dimension tables for Enrich: the values correlate the way real
// ones do (an AS has one name and country, a customer network sits behind
// one interface), so a rollup by them has the cardinality of real traffic.
var (
	asNames   = [8]string{"GOOGLE", "AMAZON-02", "NETFLIX-ASN", "Zürich Kabel AG", "ORANGE-FR", "東京 Net", "CLOUDFLARENET", ""}
	countries = [8]string{"US", "US", "US", "CH", "FR", "JP", "AU", ""}
	nets      = [4]struct{ name, role, site string }{{"customer-a", "customer", "par1"}, {"customer-b", "customer", "zrh1"}, {"servers", "servers", "zrh1"}, {"", "", ""}}
	exporters = [4]string{"edge1.par1", "edge2.zrh1", "core1.fra1", "edge3.lon1"}
)

// Enrich fills e as an enricher with demo data would for m, which Gen made:
// names and countries by AS, customer networks by destination AS, the
// exporter by sampler, transit interfaces (external) by source AS and
// customer interfaces (internal) by network; the exporter that sends
// sampling rate 0 gets its rate from "the exporters file". One flow in
// eight of AS 64507 stays unnamed, as real misses do.
func Enrich(m *pb.FlowMessage, e *pb.Enrichment) {
	e.Reset()
	s, d := m.SrcAs-64500, m.DstAs-64500
	if s >= 8 || d >= 8 || len(m.SamplerAddress) != 4 {
		return
	}
	x := m.SamplerAddress[3] % 4
	n := nets[d%4]
	e.SrcCountry, e.DstCountry = countries[s], countries[d]
	e.SrcAsName, e.DstAsName = asNames[s], asNames[d]
	e.SrcNetName, e.SrcNetRole = "internet", "external"
	e.DstNetName, e.DstNetRole, e.DstNetSite = n.name, n.role, n.site
	e.ExporterName = exporters[x]
	e.InIfName = fmt.Sprintf("et-0/0/%d", s%3)
	e.InIfDescription = fmt.Sprintf("Transit: %s [100G]", [3]string{"Cogent", "Lumen", "Arelion"}[s%3])
	e.InIfSpeed, e.InIfBoundary = 100_000_000_000, pb.FlowMessage_BOUNDARY_EXTERNAL
	if n.name != "" {
		e.OutIfName, e.OutIfDescription = "ae1"+fmt.Sprint(d%4)+".100", "Customer: "+n.name
		e.OutIfSpeed, e.OutIfBoundary = 10_000_000_000, pb.FlowMessage_BOUNDARY_INTERNAL
	}
	if m.SamplingRate == 0 {
		e.SamplingRate, e.SamplingRateFromExporter = 512, true
	}
}

// EnrichedRecords is Records with each flow enriched by Enrich, framed as
// the enricher writes it (pb.AppendEnrichedFrame). Totals are the sampled
// sums, which enrichment does not change.
func EnrichedRecords(seed int64, n, perRecord int, base time.Time) ([][]byte, Totals) {
	var tot Totals
	values := enrichedRecords(NewGen(seed), &tot, 0, n, perRecord, base)
	return values, tot
}

// enrichedRecords makes flows [from, to) of g's sequence.
func enrichedRecords(g *Gen, tot *Totals, from, to, perRecord int, base time.Time) [][]byte {
	var m pb.FlowMessage
	var e pb.Enrichment
	var values [][]byte
	var cur, frame []byte
	for i := from; i < to; i++ {
		g.Next(&m, base.Add(time.Duration(i)*10*time.Microsecond))
		tot.add(&m)
		Enrich(&m, &e)
		frame = m.AppendWire(frame[:0])
		cur = pb.AppendEnrichedFrame(cur, frame, &e)
		if (i-from+1)%perRecord == 0 || i == to-1 {
			values = append(values, cur)
			cur = nil
		}
	}
	return values
}

// ProduceEnrichedFlows is ProduceFlows with the flows enriched as
// EnrichedRecords does.
func ProduceEnrichedFlows(t testing.TB, brokers []string, topic string, seed int64, n, perRecord int, base time.Time) Totals {
	t.Helper()
	const chunk = 100_000
	g := NewGen(seed)
	var tot Totals
	for done := 0; done < n; done += chunk {
		Produce(t, brokers, topic, enrichedRecords(g, &tot, done, min(done+chunk, n), perRecord, base))
	}
	return tot
}
