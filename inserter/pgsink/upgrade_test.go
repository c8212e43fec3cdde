package pgsink_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// enrichedRow is a flows row's enrichment columns, as stored.
type enrichedRow struct {
	SrcCountry, DstCountry, SrcAsName, DstAsName, SrcNetName, DstNetName string
	SrcNetRole, DstNetRole, SrcNetSite, DstNetSite, ExporterName         string
	InIfName, OutIfName, InIfDescription, OutIfDescription               string
	InIfSpeed, OutIfSpeed                                                int64
	InIfBoundary, OutIfBoundary                                          int16
	SamplingRateFromExporter                                             bool
}

const enrichedColumnsSQL = `src_country, dst_country, src_as_name, dst_as_name, src_net_name, dst_net_name,
  src_net_role, dst_net_role, src_net_site, dst_net_site, exporter_name, in_if_name, out_if_name, in_if_description, out_if_description,
  in_if_speed, out_if_speed, in_if_boundary, out_if_boundary, sampling_rate_from_exporter`

func (r *enrichedRow) dest() []any {
	return []any{&r.SrcCountry, &r.DstCountry, &r.SrcAsName, &r.DstAsName, &r.SrcNetName, &r.DstNetName,
		&r.SrcNetRole, &r.DstNetRole, &r.SrcNetSite, &r.DstNetSite, &r.ExporterName, &r.InIfName, &r.OutIfName,
		&r.InIfDescription, &r.OutIfDescription, &r.InIfSpeed, &r.OutIfSpeed, &r.InIfBoundary, &r.OutIfBoundary, &r.SamplingRateFromExporter}
}

// enrichedOf is what the enrichment columns must hold for m.
func enrichedOf(m *pb.FlowMessage) enrichedRow {
	return enrichedRow{m.SrcCountry, m.DstCountry, m.SrcAsName, m.DstAsName, m.SrcNetName, m.DstNetName,
		m.SrcNetRole, m.DstNetRole, m.SrcNetSite, m.DstNetSite, m.ExporterName, m.InIfName, m.OutIfName,
		m.InIfDescription, m.OutIfDescription, int64(m.InIfSpeed), int64(m.OutIfSpeed),
		int16(m.InIfBoundary), int16(m.OutIfBoundary), m.SamplingRateFromExporter}
}

// flowKey identifies a stored flow.
type flowKey struct {
	sampler netip.Addr
	seq     int64
}

// readEnriched reads every row's enrichment columns, keyed by
// (sampler_address, sequence_num); it fails on a key stored twice.
func readEnriched(t *testing.T, conn *pgx.Conn) map[flowKey]enrichedRow {
	t.Helper()
	ctx := context.Background()
	rows, err := conn.Query(ctx, "SELECT sampler_address, sequence_num, "+enrichedColumnsSQL+" FROM flows")
	if err != nil {
		t.Fatal(err)
	}
	out := map[flowKey]enrichedRow{}
	var k flowKey
	var r enrichedRow
	var sampler *netip.Prefix
	if _, err := pgx.ForEachRow(rows, append([]any{&sampler, &k.seq}, r.dest()...), func() error {
		if sampler != nil {
			k.sampler = sampler.Addr()
		}
		if _, dup := out[k]; dup {
			return fmt.Errorf("flow %v stored twice", k)
		}
		out[k] = r
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// oldSchema is the DDL the previous release's inserter ran.
func oldSchema(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("testdata/schema_ad3f7dd.sql")
	if err != nil {
		t.Fatal(err)
	}
	var stmts []string
	for _, chunk := range strings.Split(string(b), "\n--;\n") {
		var lines []string
		for _, l := range strings.Split(chunk, "\n") {
			if !strings.HasPrefix(l, "--") {
				lines = append(lines, l)
			}
		}
		if s := strings.TrimSpace(strings.Join(lines, "\n")); s != "" {
			stmts = append(stmts, s)
		}
	}
	return stmts
}

// TestUpgradeFromPreviousSchema: a database created and filled by the
// previous inserter (its DDL, its rows, rollup and offsets) gains the
// enrichment columns without a rewrite of its partition, and the new
// inserter keeps ingesting into it: old rows read the defaults, new rows
// their enriched values, and both rollups equal the rows.
func TestUpgradeFromPreviousSchema(t *testing.T) {
	dsn := testDB(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	stmts := oldSchema(t)
	if len(stmts) != 10 {
		t.Fatalf("fixture holds %d statements, want the old ddl()'s 10", len(stmts))
	}
	for _, s := range stmts {
		exec(s)
	}
	// What the old inserter stored: a partition, three rows, their rollup
	// and the offset after them.
	exec(`CREATE TABLE flows_p20260310 (LIKE flows INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`)
	exec(`ALTER TABLE flows ATTACH PARTITION flows_p20260310 FOR VALUES FROM ('2026-03-10T00:00:00Z') TO ('2026-03-11T00:00:00Z')`)
	exec(`INSERT INTO flows (time_received, type, sequence_num, sampling_rate, sampler_address, src_addr, dst_addr, src_as, dst_as, etype, proto,
  src_port, dst_port, tcp_flags, in_if, out_if, bytes, packets) VALUES
  ('2026-03-10T10:00:01Z', 3, 1, 10, '192.0.2.1', '198.51.100.1', '203.0.113.1', 64496, 64497, 2048, 6, 443, 50000, 16, 1, 2, 100, 1),
  ('2026-03-10T10:01:00Z', 3, 2, 0, '192.0.2.1', '198.51.100.2', '203.0.113.2', 64496, 64497, 2048, 17, 53, 50001, 0, 1, 2, 200, 2),
  ('2026-03-10T10:07:00Z', 3, 3, 100, '192.0.2.1', '198.51.100.3', '203.0.113.3', 64498, 64497, 2048, 6, 80, 50002, 2, 3, 2, 300, 3)`)
	exec(`INSERT INTO flows_5m VALUES ('2026-03-10T10:00:00Z', 64496, 64497, 2048, 1200, 12, 2), ('2026-03-10T10:05:00Z', 64498, 64497, 2048, 30000, 300, 1)`)
	exec(`INSERT INTO kafka_offsets (consumer_group, topic, partition, next_offset) VALUES ('g', 'flows', 0, 3)`)
	var before uint32
	if err := conn.QueryRow(ctx, "SELECT relfilenode FROM pg_class WHERE relname = 'flows_p20260310'").Scan(&before); err != nil {
		t.Fatal(err)
	}

	s := newSink(t, dsn, "g") // the new inserter starts: migrates
	var after uint32
	var cols int
	if err := conn.QueryRow(ctx, `SELECT relfilenode, (SELECT count(*) FROM pg_attribute WHERE attrelid = 'flows_p20260310'::regclass AND attnum > 0 AND NOT attisdropped)
FROM pg_class WHERE relname = 'flows_p20260310'`).Scan(&after, &cols); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("partition rewritten by the migration: relfilenode %d, was %d", after, before)
	}
	if want := len(pgsink.ColumnNames()); cols != want {
		t.Errorf("old partition has %d columns after the migration, want %d", cols, want)
	}

	// New flows: on the old partition's day and the next, enriched or not.
	sampler := []byte{192, 0, 2, 1}
	at := func(s string) uint64 {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return uint64(tm.UnixNano())
	}
	full := &pb.FlowMessage{TimeReceivedNs: at("2026-03-10T10:08:00Z"), SequenceNum: 4, SamplingRate: 1000, SamplerAddress: sampler,
		SrcAddr: []byte{8, 8, 8, 8}, DstAddr: []byte{10, 1, 0, 1}, SrcAs: 15169, DstAs: 64500, Etype: 0x800, Bytes: 1500, Packets: 1,
		SrcCountry: "US", DstCountry: "CH", SrcAsName: "GOOGLE", DstAsName: "Demo Customer AG", SrcNetName: "internet", DstNetName: "customer-a",
		SrcNetRole: "external", DstNetRole: "customer", SrcNetSite: "", DstNetSite: "zrh1", ExporterName: "edge1.zrh1",
		InIfName: "et-0/0/1", OutIfName: "ae12.100", InIfDescription: "Transit: Example [100G]", OutIfDescription: "Customer A: Zürich",
		InIfSpeed: 100_000_000_000, OutIfSpeed: 10_000_000_000, InIfBoundary: pb.FlowMessage_BOUNDARY_EXTERNAL,
		OutIfBoundary: pb.FlowMessage_BOUNDARY_INTERNAL, SamplingRateFromExporter: true}
	partial := &pb.FlowMessage{TimeReceivedNs: at("2026-03-10T10:09:00Z"), SequenceNum: 5, SamplingRate: 10, SamplerAddress: sampler,
		SrcAddr: []byte{8, 8, 4, 4}, DstAddr: []byte{10, 1, 0, 2}, SrcAs: 15169, DstAs: 64500, Etype: 0x800, Bytes: 40, Packets: 1,
		SrcCountry: "US", ExporterName: "edge1.zrh1", OutIfBoundary: pb.FlowMessage_BOUNDARY_INTERNAL}
	nextDay := &pb.FlowMessage{TimeReceivedNs: at("2026-03-11T00:00:30Z"), SequenceNum: 6, SamplingRate: 0, SamplerAddress: sampler,
		SrcAddr: []byte{1, 1, 1, 1}, DstAddr: []byte{10, 1, 0, 3}, SrcAs: 13335, Etype: 0x800, Bytes: 64, Packets: 2,
		SrcCountry: "AU", SrcAsName: "CLOUDFLARENET", InIfBoundary: pb.FlowMessage_BOUNDARY_EXTERNAL, InIfSpeed: 1}
	plain := &pb.FlowMessage{TimeReceivedNs: at("2026-03-11T00:01:00Z"), SequenceNum: 7, SamplingRate: 2, SamplerAddress: sampler,
		SrcAddr: []byte{1, 1, 1, 2}, DstAddr: []byte{10, 1, 0, 4}, Etype: 0x800, Bytes: 1000, Packets: 10}
	news := []*pb.FlowMessage{full, partial, nextDay, plain}
	res, err := s.Write(ctx, batchOf(t, news, 3))
	if err != nil {
		t.Fatal(err)
	}
	if res.Flows != 4 {
		t.Fatalf("stored %d new flows, want 4", res.Flows)
	}

	// 3 old + 4 new rows: bytes 100+200+300 + 1500+40+64+1000, packets 1+2+3 + 1+1+2+10.
	d := flowtest.Check(t, dsn, flowtest.Totals{Flows: 7, Bytes: 3204, Packets: 20})
	// Scaled: 1000+200+30000 old; 1,500,000+400+64+2000 new.
	if d.RollupBytes != "1533664" || d.StoredOffsets != 7 {
		t.Errorf("flows_5m scaled bytes %s, stored offsets %d; want 1533664, 7", d.RollupBytes, d.StoredOffsets)
	}
	got := readEnriched(t, conn)
	addr := netip.AddrFrom4([4]byte(sampler))
	for seq := int64(1); seq <= 3; seq++ {
		if r, ok := got[flowKey{addr, seq}]; !ok || r != (enrichedRow{}) {
			t.Errorf("old row %d: %+v (found %v), want the defaults", seq, r, ok)
		}
	}
	for _, m := range news {
		k := flowKey{addr, int64(m.SequenceNum)}
		if r, ok := got[k]; !ok || r != enrichedOf(m) {
			t.Errorf("new row %d:\n got  %+v (found %v)\n want %+v", k.seq, r, ok, enrichedOf(m))
		}
	}
	if len(got) != 7 {
		t.Errorf("%d rows, want 7", len(got))
	}
	var enrichedSlots int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM flows_5m_enriched").Scan(&enrichedSlots); err != nil {
		t.Fatal(err)
	}
	// Old: (10:00, 64496) and (10:05, 64498); new: 10:05 full and partial
	// differ in every dimension, the next day's two flows too.
	if enrichedSlots != 6 {
		t.Errorf("flows_5m_enriched has %d rows, want 6", enrichedSlots)
	}
	// The view shows the new columns too.
	var fromExporter int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM flows_scaled WHERE sampling_rate_from_exporter AND bytes_scaled = 1500000").Scan(&fromExporter); err != nil {
		t.Fatal(err)
	}
	if fromExporter != 1 {
		t.Errorf("flows_scaled: %d rows with sampling_rate_from_exporter and 1500000 scaled bytes, want 1", fromExporter)
	}

	// A second start changes nothing.
	newSink(t, dsn, "g")
	if err := conn.QueryRow(ctx, "SELECT relfilenode FROM pg_class WHERE relname = 'flows_p20260310'").Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("partition rewritten by the second start")
	}
	flowtest.Check(t, dsn, flowtest.Totals{Flows: 7, Bytes: 3204, Packets: 20})
}
