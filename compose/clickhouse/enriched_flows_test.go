package clickhouse_test

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/chdb"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// variedEnrichment is what an enricher could write for flow i: every
// field cycles through its own pool (lengths prime to each other, so the
// combinations vary), with empty values, non-ASCII names, the extreme
// speed and every boundary; every 7th flow also overrides sampling_rate
// and src_as, as the exporters file and the ASN database do.
func variedEnrichment(i int) *pb.Enrichment {
	pick := func(pool []string) string { return pool[i%len(pool)] }
	countries := []string{"US", "DE", "CH", "JP", "BR", ""}
	asNames := []string{"NETFLIX-ASN", "GOOGLE", "Beispiel AG Zürich", "", "AMAZON-02", "Deutsche Telekom AG", "東京ネット"}
	nets := []string{"customer-a", "customer-b", "", "servers", "customer-ç"}
	roles := []string{"customer", "", "servers"}
	sites := []string{"par1", "fra1", "zrh1", "", "ams1", "nyc2", "sin1", "gru1"}
	exporters := []string{"edge1.par1", "edge2.fra1", "", "core1.zrh1"}
	ifNames := []string{"et-0/0/1", "ae12.100", "xe-0/0/0", "", "Ethernet1/49", "ge-0/0/3", "et-0/0/2", "ae1", "ae2", "ae3", "ae4"}
	descs := []string{"Transit: Cogent [100G]", "", "customer-a [10G]", "PNI Netflix"}
	speeds := []uint64{0, 1e9, 10e9, 100e9, 400e9, math.MaxUint64}
	bounds := []pb.FlowMessage_Boundary{pb.FlowMessage_BOUNDARY_UNDEFINED, pb.FlowMessage_BOUNDARY_EXTERNAL, pb.FlowMessage_BOUNDARY_INTERNAL}
	e := &pb.Enrichment{
		SrcCountry: pick(countries), DstCountry: countries[(i/3)%len(countries)],
		SrcAsName: pick(asNames), DstAsName: asNames[(i/2)%len(asNames)],
		SrcNetName: pick(nets), DstNetName: nets[(i/7)%len(nets)],
		SrcNetRole: pick(roles), DstNetRole: roles[(i/5)%len(roles)],
		SrcNetSite: pick(sites), DstNetSite: sites[(i/3)%len(sites)],
		ExporterName: pick(exporters),
		InIfName:     pick(ifNames), OutIfName: ifNames[(i/11)%len(ifNames)],
		InIfDescription: pick(descs), OutIfDescription: descs[(i/4)%len(descs)],
		InIfSpeed: pick2(speeds, i), OutIfSpeed: pick2(speeds, i/6),
		InIfBoundary: bounds[i%3], OutIfBoundary: bounds[(i/3)%3],
	}
	if i%7 == 0 {
		e.SamplingRate, e.SamplingRateFromExporter, e.SrcAs = 1000, true, 2906
	}
	if i%13 == 0 {
		*e = pb.Enrichment{} // a flow the enricher found nothing for
	}
	return e
}

func pick2[T any](pool []T, i int) T { return pool[i%len(pool)] }

// boundaryName is flows_raw's Enum8 name of a proto boundary.
func boundaryName(b pb.FlowMessage_Boundary) string {
	return strings.ToLower(strings.TrimPrefix(b.String(), "BOUNDARY_"))
}

type enrichedRow struct {
	rawRow
	SrcCountry, DstCountry, SrcASName, DstASName    string
	SrcNetName, DstNetName, SrcNetRole, DstNetRole  string
	SrcNetSite, DstNetSite, ExporterName            string
	InIfName, OutIfName, InIfDescription, OutIfDesc string
	InIfSpeed, OutIfSpeed                           uint64
	InIfBoundary, OutIfBoundary                     string
	SamplingRateFromExporter                        bool
}

func expectEnriched(m *pb.FlowMessage) enrichedRow {
	return enrichedRow{
		rawRow:     expectRaw(m),
		SrcCountry: m.SrcCountry, DstCountry: m.DstCountry, SrcASName: m.SrcAsName, DstASName: m.DstAsName,
		SrcNetName: m.SrcNetName, DstNetName: m.DstNetName, SrcNetRole: m.SrcNetRole, DstNetRole: m.DstNetRole,
		SrcNetSite: m.SrcNetSite, DstNetSite: m.DstNetSite, ExporterName: m.ExporterName,
		InIfName: m.InIfName, OutIfName: m.OutIfName, InIfDescription: m.InIfDescription, OutIfDesc: m.OutIfDescription,
		InIfSpeed: m.InIfSpeed, OutIfSpeed: m.OutIfSpeed,
		InIfBoundary: boundaryName(m.InIfBoundary), OutIfBoundary: boundaryName(m.OutIfBoundary),
		SamplingRateFromExporter: m.SamplingRateFromExporter,
	}
}

// enrichedFrames frames msgs as the enricher does (the collector's bytes,
// then variedEnrichment) and returns the record and each flow as
// protobuf-go decodes its frame: what the enricher wrote.
func enrichedFrames(t *testing.T, msgs []*pb.FlowMessage, first int) ([]byte, []*pb.FlowMessage) {
	t.Helper()
	var record []byte
	decoded := make([]*pb.FlowMessage, len(msgs))
	for i, m := range msgs {
		start := len(record)
		record = pb.AppendEnrichedFrame(record, m.AppendWire(nil), variedEnrichment(first+i))
		decoded[i] = new(pb.FlowMessage)
		if err := pb.ForEachFrame(record[start:], func(msg []byte) error { return proto.Unmarshal(msg, decoded[i]) }); err != nil {
			t.Fatal(err)
		}
	}
	return record, decoded
}

// TestEnrichedFlowsArrive: every enriched field of every flow reaches
// flows_raw equal to what the enricher wrote (the frame as protobuf-go
// decodes it), next to every collector column, and flows_5m_enriched sums
// them exactly per dimension.
func TestEnrichedFlowsArrive(t *testing.T) {
	s := schemaDB(t, true)
	const n = 6000
	msgs := mockMessages(mockSeed, n, mockStart, mockSpan)
	record1, want1 := enrichedFrames(t, msgs[:n/2], 0)
	record2, want2 := enrichedFrames(t, msgs[n/2:], n/2)
	want := append(want1, want2...)
	for _, rec := range [][]byte{record1, record2} {
		if err := s.InsertProtobuf("flows", rec, protoSchema(t)); err != nil {
			t.Fatal(err)
		}
	}
	// The pools must have produced what the test claims to cover.
	var overridden, wantOverridden, empty, maxSpeed, external int
	for i, m := range want {
		if i%7 == 0 && i%13 != 0 {
			wantOverridden++
		}
		if m.SamplingRate == 1000 && m.SamplingRateFromExporter && m.SrcAs == 2906 && msgs[i].SrcAs != 2906 {
			overridden++
		}
		if i%13 == 0 && m.SrcCountry == "" && m.InIfBoundary == 0 {
			empty++
		}
		if m.InIfSpeed == math.MaxUint64 {
			maxSpeed++
		}
		if m.OutIfBoundary == pb.FlowMessage_BOUNDARY_EXTERNAL {
			external++
		}
	}
	if overridden != wantOverridden || wantOverridden == 0 || empty != (n+12)/13 || maxSpeed == 0 || external == 0 {
		t.Fatalf("test data: %d overrides, %d empty, %d max speeds, %d external: want %d overrides, %d empty, the others > 0", overridden, empty, maxSpeed, external, wantOverridden, (n+12)/13)
	}

	t.Run("flows_raw", func(t *testing.T) { checkEnrichedRaw(t, s, want) })

	t.Run("flows_5m_enriched", func(t *testing.T) {
		if err := s.Exec("OPTIMIZE TABLE flows_5m_enriched FINAL"); err != nil {
			t.Fatal(err)
		}
		// After OPTIMIZE FINAL, one row per key.
		checkEnriched5m(t, s, want, "SELECT * FROM flows_5m_enriched")
	})

	// The AS-pair rollups count the enricher's sampling_rate and src_as.
	t.Run("flows_5m and flows_1h", func(t *testing.T) {
		var total uint64
		pairs := map[[2]uint32]bool{}
		for _, m := range want {
			total += m.Bytes * scale(m)
			pairs[[2]uint32{m.SrcAs, m.DstAs}] = true
		}
		for _, table := range []string{"flows_5m", "flows_1h"} {
			var got []struct{ Bytes, Count, Pairs uint64 }
			if err := s.QueryInto("SELECT sum(Bytes) AS Bytes, sum(Count) AS Count, uniqExact(SrcAS, DstAS) AS Pairs FROM "+table, &got); err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Bytes != total || got[0].Count != n || got[0].Pairs != uint64(len(pairs)) {
				t.Errorf("%s sums %+v, want %d bytes, %d flows, %d AS pairs", table, got, total, n, len(pairs))
			}
		}
	})

	if c := count(t, s, "flows_errors"); c != 0 {
		t.Errorf("flows_errors has %d rows, want 0", c)
	}
}

// checkEnrichedRaw: flows_raw holds one row per flow of want, every
// collector and enrichment column equal to what the enricher wrote.
func checkEnrichedRaw(t *testing.T, s *chdb.Session, want []*pb.FlowMessage) {
	t.Helper()
	n := len(want)
	var rows []enrichedRow
	q := strings.Replace(rawQuery, "\nFROM flows_raw", `,
	SrcCountry, DstCountry, SrcASName, DstASName, SrcNetName, DstNetName, SrcNetRole, DstNetRole,
	SrcNetSite, DstNetSite, ExporterName, InIfName, OutIfName, InIfDescription, OutIfDescription AS OutIfDesc,
	InIfSpeed, OutIfSpeed, InIfBoundary, OutIfBoundary, SamplingRateFromExporter
FROM flows_raw`, 1)
	if err := s.QueryInto(q, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != n {
		t.Fatalf("flows_raw has %d rows, want %d", len(rows), n)
	}
	got := make(map[[2]any]enrichedRow, len(rows))
	for _, r := range rows {
		got[[2]any{r.Sampler, r.SequenceNum}] = r
	}
	if len(got) != n {
		t.Fatalf("flows_raw has %d distinct (sampler, sequence) rows, want %d", len(got), n)
	}
	bad := 0
	for _, m := range want {
		w := expectEnriched(m)
		if r := got[[2]any{w.Sampler, w.SequenceNum}]; r != w {
			if bad++; bad <= 5 {
				t.Errorf("flows_raw row\n got %+v\nwant %+v", r, w)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d rows differ", bad, n)
	}
}

// checkEnriched5m: query returns flows_5m_enriched's rows (all columns,
// one row per key), equal to the sums of want computed in Go.
func checkEnriched5m(t *testing.T, s *chdb.Session, want []*pb.FlowMessage, query string) {
	t.Helper()
	n := uint64(len(want))
	type row struct {
		Date, Timeslot, SrcCountry, DstCountry                    string
		SrcAS, DstAS                                              uint32
		SrcASName, DstASName, SrcNetName, DstNetName              string
		SrcNetSite, DstNetSite, ExporterName, InIfName, OutIfName string
		InIfBoundary, OutIfBoundary                               string
		Bytes, Packets, Count                                     uint64
	}
	type key struct {
		Date, Timeslot, SrcCountry, DstCountry                    string
		SrcAS, DstAS                                              uint32
		SrcASName, DstASName, SrcNetName, DstNetName              string
		SrcNetSite, DstNetSite, ExporterName, InIfName, OutIfName string
		InIfBoundary, OutIfBoundary                               string
	}
	sums := map[key]*row{}
	var total uint64
	for _, m := range want {
		recv := received(m).Truncate(time.Second)
		k := key{recv.Format("2006-01-02"), recv.Truncate(5 * time.Minute).Format("2006-01-02 15:04:05"),
			m.SrcCountry, m.DstCountry, m.SrcAs, m.DstAs, m.SrcAsName, m.DstAsName, m.SrcNetName, m.DstNetName,
			m.SrcNetSite, m.DstNetSite, m.ExporterName, m.InIfName, m.OutIfName,
			boundaryName(m.InIfBoundary), boundaryName(m.OutIfBoundary)}
		r := sums[k]
		if r == nil {
			r = &row{k.Date, k.Timeslot, k.SrcCountry, k.DstCountry, k.SrcAS, k.DstAS, k.SrcASName, k.DstASName,
				k.SrcNetName, k.DstNetName, k.SrcNetSite, k.DstNetSite, k.ExporterName, k.InIfName, k.OutIfName,
				k.InIfBoundary, k.OutIfBoundary, 0, 0, 0}
			sums[k] = r
		}
		r.Bytes += m.Bytes * scale(m)
		r.Packets += m.Packets * scale(m)
		r.Count++
		total += m.Bytes * scale(m)
	}
	var got []row
	if err := s.QueryInto(query, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(sums) {
		t.Errorf("flows_5m_enriched has %d rows, want %d", len(got), len(sums))
	}
	var gotTotal, gotCount uint64
	bad := 0
	for _, g := range got {
		gotTotal += g.Bytes
		gotCount += g.Count
		k := key{g.Date, g.Timeslot, g.SrcCountry, g.DstCountry, g.SrcAS, g.DstAS, g.SrcASName, g.DstASName,
			g.SrcNetName, g.DstNetName, g.SrcNetSite, g.DstNetSite, g.ExporterName, g.InIfName, g.OutIfName,
			g.InIfBoundary, g.OutIfBoundary}
		if w := sums[k]; w == nil || !reflect.DeepEqual(*w, g) {
			if bad++; bad <= 5 {
				t.Errorf("flows_5m_enriched row\n got %+v\nwant %+v", g, w)
			}
		}
	}
	if gotTotal != total || gotCount != n {
		t.Errorf("flows_5m_enriched sums %d bytes over %d flows, want %d over %d", gotTotal, gotCount, total, n)
	}
	t.Logf("flows_5m_enriched: %d rows for %d flows, equal to the Go aggregates", len(got), n)
}
