package pgsink_test

import (
	"context"
	"errors"
	"math"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// TestValidateFlowBounds checks every bound of ValidateFlow at the exact
// limit and one past it.
func TestValidateFlowBounds(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	nowNs := uint64(now.UnixNano())
	week := 7 * 24 * time.Hour
	withRetention := pgsink.NewLimits(now, week, 10*time.Minute)
	noRetention := pgsink.NewLimits(now, 0, 10*time.Minute)
	const p50 = 1 << 50
	cases := []struct {
		name string
		m    *pb.FlowMessage
		lim  pgsink.Limits
		want error // nil: accepted; errAny: rejected without a sentinel
	}{
		{"bytes 2^48, rate 0", &pb.FlowMessage{Bytes: 1 << 48}, noRetention, nil},
		{"bytes 2^48+1", &pb.FlowMessage{Bytes: 1<<48 + 1}, noRetention, pgsink.ErrOutOfRange},
		{"packets 2^48", &pb.FlowMessage{Packets: 1 << 48}, noRetention, nil},
		{"packets 2^48+1", &pb.FlowMessage{Packets: 1<<48 + 1}, noRetention, pgsink.ErrOutOfRange},
		{"rate 2^32-1", &pb.FlowMessage{Bytes: 1, SamplingRate: 1<<32 - 1}, noRetention, nil},
		{"rate 2^32", &pb.FlowMessage{Bytes: 1, SamplingRate: 1 << 32}, noRetention, pgsink.ErrOutOfRange},
		{"bytes 2^48 x rate 4 = 2^50", &pb.FlowMessage{Bytes: 1 << 48, SamplingRate: 4}, noRetention, nil},
		{"bytes 2^48 x rate 5", &pb.FlowMessage{Bytes: 1 << 48, SamplingRate: 5}, noRetention, pgsink.ErrOutOfRange},
		{"bytes 2^40 x rate 1024 = 2^50", &pb.FlowMessage{Bytes: 1 << 40, SamplingRate: 1024}, noRetention, nil},
		// 2^50+1 = 517625 x 2175126601 (5^3·41·101 x 8101·268501)
		{"bytes x rate = 2^50+1", &pb.FlowMessage{Bytes: 517625, SamplingRate: 2175126601}, noRetention, pgsink.ErrOutOfRange},
		{"packets x rate = 2^50", &pb.FlowMessage{Packets: 1 << 40, SamplingRate: 1024}, noRetention, nil},
		{"packets x rate = 2^50+1", &pb.FlowMessage{Packets: 517625, SamplingRate: 2175126601}, noRetention, pgsink.ErrOutOfRange},
		{"bytes 2^18 x rate 2^32-1", &pb.FlowMessage{Bytes: 1 << 18, SamplingRate: 1<<32 - 1}, noRetention, nil},
		{"bytes 2^18+1 x rate 2^32-1", &pb.FlowMessage{Bytes: 1<<18 + 1, SamplingRate: 1<<32 - 1}, noRetention, pgsink.ErrOutOfRange},
		{"bytes and packets 2^48 x rate 2^32-1", &pb.FlowMessage{Bytes: 1 << 48, Packets: 1 << 48, SamplingRate: 1<<32 - 1}, noRetention, pgsink.ErrOutOfRange},
		{"time at now - retention", &pb.FlowMessage{TimeReceivedNs: uint64(now.Add(-week).UnixNano())}, withRetention, nil},
		{"time 1ns before now - retention", &pb.FlowMessage{TimeReceivedNs: uint64(now.Add(-week).UnixNano()) - 1}, withRetention, pgsink.ErrTooOld},
		{"time at now + 10m", &pb.FlowMessage{TimeReceivedNs: nowNs + uint64(10*time.Minute)}, withRetention, nil},
		{"time 1ns after now + 10m", &pb.FlowMessage{TimeReceivedNs: nowNs + uint64(10*time.Minute) + 1}, withRetention, pgsink.ErrTooNew},
		{"no retention: 2000-01-01", &pb.FlowMessage{TimeReceivedNs: uint64(pgsink.MinTime.UnixNano())}, noRetention, nil},
		{"no retention: 1ns before 2000", &pb.FlowMessage{TimeReceivedNs: uint64(pgsink.MinTime.UnixNano()) - 1}, noRetention, pgsink.ErrTooOld},
		{"retention of 100 years: 2000-01-01", &pb.FlowMessage{TimeReceivedNs: uint64(pgsink.MinTime.UnixNano())}, pgsink.NewLimits(now, 100*365*24*time.Hour, 10*time.Minute), nil},
		{"retention of 100 years: 1ns before 2000", &pb.FlowMessage{TimeReceivedNs: uint64(pgsink.MinTime.UnixNano()) - 1}, pgsink.NewLimits(now, 100*365*24*time.Hour, 10*time.Minute), pgsink.ErrTooOld},
		{"no retention: 20 years ago", &pb.FlowMessage{TimeReceivedNs: uint64(now.AddDate(-20, 0, 0).UnixNano())}, noRetention, nil},
		{"time_received 0", &pb.FlowMessage{}, noRetention, errAny},
		{"port 65536", &pb.FlowMessage{SrcPort: 65536}, noRetention, errAny},
		// The enricher's fields.
		{"name 200 bytes", &pb.FlowMessage{SrcAsName: strings.Repeat("é", 100)}, noRetention, nil},
		{"name 201 bytes", &pb.FlowMessage{OutIfName: strings.Repeat("é", 100) + "x"}, noRetention, pgsink.ErrOutOfRange},
		{"country 201 bytes", &pb.FlowMessage{DstCountry: strings.Repeat("x", 201)}, noRetention, pgsink.ErrOutOfRange},
		{"description 256 bytes", &pb.FlowMessage{InIfDescription: strings.Repeat("x", 256)}, noRetention, nil},
		{"description 257 bytes", &pb.FlowMessage{OutIfDescription: strings.Repeat("x", 257)}, noRetention, pgsink.ErrOutOfRange},
		{"NUL in a name", &pb.FlowMessage{ExporterName: "edge\x001"}, noRetention, errAny},
		{"speed 2^63-1", &pb.FlowMessage{InIfSpeed: math.MaxInt64}, noRetention, nil},
		{"speed 2^63", &pb.FlowMessage{OutIfSpeed: math.MaxInt64 + 1}, noRetention, pgsink.ErrOutOfRange},
		{"boundary 2", &pb.FlowMessage{InIfBoundary: pb.FlowMessage_BOUNDARY_INTERNAL}, noRetention, nil},
		{"boundary 3", &pb.FlowMessage{OutIfBoundary: 3}, noRetention, errAny},
		{"boundary -1", &pb.FlowMessage{InIfBoundary: -1}, noRetention, errAny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := c.m
			if m.TimeReceivedNs == 0 && c.want != errAny {
				m.TimeReceivedNs = nowNs
			}
			err := pgsink.ValidateFlow(m, c.lim)
			switch {
			case c.want == nil && err != nil:
				t.Fatalf("rejected: %v", err)
			case c.want == nil:
			case err == nil:
				t.Fatalf("accepted, want %v", c.want)
			case c.want == errAny:
				for _, s := range []error{pgsink.ErrOutOfRange, pgsink.ErrTooOld, pgsink.ErrTooNew} {
					if errors.Is(err, s) {
						t.Fatalf("%v: want a plain field error", err)
					}
				}
			case !errors.Is(err, c.want):
				t.Fatalf("%v, want %v", err, c.want)
			}
		})
	}
}

var errAny = errors.New("any error without a sentinel")

// worstFlows are n accepted flows at every bound at once, all in the same
// 5-minute slot and rollup key: scaled bytes and packets 2^50 each.
func worstFlows(n int, at time.Time, seq uint32) []*pb.FlowMessage {
	flows := make([]*pb.FlowMessage, n)
	for i := range flows {
		flows[i] = &pb.FlowMessage{TimeReceivedNs: uint64(at.UnixNano()) + uint64(i), Bytes: 1 << 48, Packets: 1 << 48, SamplingRate: 4,
			SrcAs: 1<<32 - 1, DstAs: 1<<32 - 1, Etype: 0x800, SequenceNum: seq + uint32(i)}
	}
	return flows
}

// TestWorstAcceptedFlows stores 20,000 flows at the bounds in one slot and
// key (their scaled sum, 20,000 x 2^50, is past uint64) and checks that
// flows_5m and the usual queries hold the exact sums without overflowing.
func TestWorstAcceptedFlows(t *testing.T) {
	dsn := testDB(t)
	s := newSink(t, dsn, "g")
	ctx := context.Background()
	const n = 20000
	at := time.Now().Add(-time.Minute).Truncate(5 * time.Minute)
	// Two batches, so the flows_5m upsert adds to an existing row too.
	b1 := batchOf(t, worstFlows(n/2, at, 0), 0)
	b2 := batchOf(t, worstFlows(n/2, at.Add(time.Millisecond), n/2), b1.End)
	for _, b := range []*pgsink.Batch{b1, b2} {
		if res, err := s.Write(ctx, b); err != nil || res.Flows != n/2 {
			t.Fatalf("write: %+v %v", res, err)
		}
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	sum := new(big.Int).Lsh(big.NewInt(n), 50) // n x 2^50
	bits := new(big.Int).Mul(sum, big.NewInt(8))
	for _, q := range []struct{ sql, want string }{
		{"SELECT sum(bytes)::text FROM flows_5m", sum.String()},
		{"SELECT sum(packets)::text FROM flows_5m", sum.String()},
		{"SELECT sum(flows)::text FROM flows_5m", "20000"},
		{"SELECT count(*)::text FROM flows_5m", "1"},
		{"SELECT sum(bytes_scaled)::text FROM flows_scaled", sum.String()},
		{"SELECT sum(packets_scaled)::text FROM flows_scaled", sum.String()},
		{"SELECT (sum(bytes_scaled) * 8)::text FROM flows_scaled", bits.String()},
		{"SELECT sum(bytes_scaled * 8)::text FROM flows_scaled", bits.String()},
		{"SELECT max(bytes_scaled * 8)::text FROM flows_scaled", new(big.Int).Lsh(big.NewInt(8), 50).String()},
		{"SELECT (sum(bytes * 8) * 4)::text FROM flows", bits.String()},
	} {
		var got string
		if err := conn.QueryRow(ctx, q.sql).Scan(&got); err != nil {
			t.Errorf("%s: %v", q.sql, err)
			continue
		}
		if got != q.want {
			t.Errorf("%s = %s, want %s", q.sql, got, q.want)
		}
	}
	d := flowtest.Check(t, dsn, flowtest.Totals{Flows: n, Bytes: int64(n) << 48, Packets: int64(n) << 48})
	if d.RollupBytes != sum.String() {
		t.Errorf("flows_5m holds %s scaled bytes, want %s", d.RollupBytes, sum)
	}
}

// TestBatchOverThousandsOfDays: with no retention, a batch of 3,000
// records, each a flow on a different day back to 2000, is written (in
// transactions of at most 64 days) instead of failing forever.
func TestBatchOverThousandsOfDays(t *testing.T) {
	dsn := testDB(t)
	s := newSink(t, dsn, "g")
	ctx := context.Background()
	const n = 3000
	today := time.Now().UTC().Truncate(24 * time.Hour)
	var flows []*pb.FlowMessage
	var wantBytes int64
	span := int(today.Sub(pgsink.MinTime).Hours() / 24)
	for i := range n {
		// Spread from 2000-01-01 to today, several days apart.
		day := pgsink.MinTime.AddDate(0, 0, i*span/n)
		flows = append(flows, &pb.FlowMessage{TimeReceivedNs: uint64(day.UnixNano()), Bytes: uint64(i + 1), Packets: 1, SequenceNum: uint32(i)})
		wantBytes += int64(i + 1)
	}
	if first := time.Unix(0, int64(flows[0].TimeReceivedNs)); first.Year() != 2000 {
		t.Fatalf("oldest flow on %s, want a day in 2000", first)
	}
	b := batchOf(t, flows, 0)
	res, err := s.Write(ctx, b)
	if err != nil || res.Flows != n || res.Done != n {
		t.Fatalf("write of %d days: %+v %v", n, res, err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var parts, rollup, offset int64
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = 'flows'::regclass),
  (SELECT sum(flows) FROM flows_5m), (SELECT next_offset FROM kafka_offsets)`).Scan(&parts, &rollup, &offset); err != nil {
		t.Fatal(err)
	}
	if parts != n || rollup != n || offset != n {
		t.Fatalf("%d partitions, flows_5m counts %d flows, next offset %d; want %d each", parts, rollup, offset, n)
	}
	// Count the rows year by year: one query over 3,000 partitions would
	// itself need more locks than the server has.
	var rows, bytes int64
	for y := 2000; y <= today.Year(); y++ {
		var c, sb int64
		if err := conn.QueryRow(ctx, "SELECT count(*), coalesce(sum(bytes), 0) FROM flows WHERE time_received >= $1 AND time_received < $2",
			time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(y+1, 1, 1, 0, 0, 0, 0, time.UTC)).Scan(&c, &sb); err != nil {
			t.Fatalf("count %d: %v", y, err)
		}
		rows += c
		bytes += sb
	}
	if rows != n || bytes != wantBytes {
		t.Fatalf("flows holds %d rows, %d bytes; want %d, %d", rows, bytes, n, wantBytes)
	}
	// Written again (a retry after a crash): nothing is stored twice.
	if res, err := s.Write(ctx, b); err != nil || res.Flows != 0 || res.SkippedRecords != n {
		t.Fatalf("second write: %+v %v, want all %d records skipped", res, err, n)
	}
}

// TestPartitionDroppedBehindTheSink: a partition the sink believes in is
// dropped behind its back (another inserter's retention). COPY then fails
// with 23514 "no partition of relation found", a content-class error; the
// sink recreates the partition and stores the batch instead of calling
// the records bad.
func TestPartitionDroppedBehindTheSink(t *testing.T) {
	dsn := testDB(t)
	s := newSink(t, dsn, "g")
	ctx := context.Background()
	at := time.Now().Add(-time.Minute)
	first := batchOf(t, []*pb.FlowMessage{{TimeReceivedNs: uint64(at.UnixNano()), Bytes: 10, Packets: 1, SequenceNum: 1}}, 0)
	if _, err := s.Write(ctx, first); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP TABLE flows_p"+at.UTC().Format("20060102")); err != nil {
		t.Fatal(err)
	}
	second := batchOf(t, []*pb.FlowMessage{{TimeReceivedNs: uint64(at.UnixNano()) + 1, Bytes: 20, Packets: 2, SequenceNum: 2}}, 1)
	if res, err := s.Write(ctx, second); err != nil || res.Flows != 1 {
		t.Fatalf("write after the partition was dropped: %+v %v", res, err)
	}
	var rows, bytes int64
	if err := conn.QueryRow(ctx, "SELECT count(*), sum(bytes) FROM flows").Scan(&rows, &bytes); err != nil || rows != 1 || bytes != 20 {
		t.Fatalf("flows holds %d rows, %d bytes (%v); want the second flow only", rows, bytes, err)
	}
}

// TestWorstAcceptedEnrichment stores flows with every enrichment field at
// its bound (multi-byte text of 200 and 256 bytes, speeds 2^63-1): the
// rows and flows_5m_enriched's key (11 texts of 200 bytes) fit, and read
// back equal.
func TestWorstAcceptedEnrichment(t *testing.T) {
	dsn := testDB(t)
	s := newSink(t, dsn, "g")
	ctx := context.Background()
	name := func(c string) string { return strings.Repeat(c, pgsink.MaxNameBytes/len(c)) }
	var flows []*pb.FlowMessage
	for i, c := range []string{"é", "東京", "x"} {
		flows = append(flows, &pb.FlowMessage{TimeReceivedNs: uint64(time.Now().UnixNano()), SequenceNum: uint32(i), SamplerAddress: []byte{192, 0, 2, 9},
			Bytes: 1, Packets: 1, SrcCountry: name(c), DstCountry: name(c), SrcAsName: name(c), DstAsName: name(c), SrcNetName: name(c),
			DstNetName: name(c), SrcNetRole: name(c), DstNetRole: name(c), SrcNetSite: name(c), DstNetSite: name(c), ExporterName: name(c),
			InIfName: name(c), OutIfName: name(c), InIfDescription: strings.Repeat("d", pgsink.MaxDescriptionBytes),
			OutIfDescription: strings.Repeat("é", pgsink.MaxDescriptionBytes/2), InIfSpeed: math.MaxInt64, OutIfSpeed: math.MaxInt64,
			InIfBoundary: pb.FlowMessage_BOUNDARY_INTERNAL, OutIfBoundary: pb.FlowMessage_BOUNDARY_EXTERNAL, SamplingRateFromExporter: i == 1})
	}
	if res, err := s.Write(ctx, batchOf(t, flows, 0)); err != nil || res.Flows != len(flows) {
		t.Fatalf("write: %+v %v", res, err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	got := readEnriched(t, conn)
	for _, m := range flows {
		k := flowKey{netip.AddrFrom4([4]byte{192, 0, 2, 9}), int64(m.SequenceNum)}
		if r, ok := got[k]; !ok || r != enrichedOf(m) {
			t.Errorf("flow %d: stored %+v (found %v)", k.seq, r, ok)
		}
	}
	flowtest.Check(t, dsn, flowtest.Totals{Flows: 3, Bytes: 3, Packets: 3})
}
