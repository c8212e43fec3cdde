package inserter

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func partitionOf(day time.Time) string { return "flows_p" + day.Format("20060102") }

// attachedPartitions lists flows' partitions, by name.
func attachedPartitions(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'flows'::regclass ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWritesContinueBehindLongReader: a long reader holds flows and all
// its partitions (an open transaction that read them, as a slow Grafana
// query does) while the inserter starts, crosses midnight UTC (simulated
// with Config.Now) and runs retention. Every flow is stored while the
// reader still holds its locks, today's and tomorrow's partitions are
// created ahead behind it, retention waits without blocking anything, and
// drops exactly the expired partitions once the reader ends.
func TestWritesContinueBehindLongReader(t *testing.T) {
	brokers := testenv.FakeKafka(t, 2, "flows")
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	ctx := context.Background()
	// Day D is simulated a few days back, so that every flow is in the
	// past for the real clock too.
	dayD := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -3)
	var clock atomic.Int64
	clock.Store(dayD.Add(-30 * time.Second).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }

	// What the database held before: one flow on each of D-6 .. D-1.
	seed, err := pgsink.New(pgsink.Config{DSN: dsn, Group: "g"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	if err := seed.CreateSchema(ctx); err != nil {
		t.Fatal(err)
	}
	b := pgsink.NewBatch("seed", 0)
	for k := 1; k <= 6; k++ {
		b.BeginRecord(int64(k - 1))
		b.AddFlow(&pb.FlowMessage{TimeReceivedNs: uint64(dayD.AddDate(0, 0, -k).Add(time.Hour).UnixNano()), Bytes: uint64(k), Packets: 1, SequenceNum: uint32(k)})
		b.EndRecord()
	}
	if res, err := seed.Write(ctx, b); err != nil || res.Flows != 6 {
		t.Fatalf("seed flows: %+v %v", res, err)
	}
	seed.Close()

	// The long reader.
	reader := pgConn(t, dsn)
	rtx, err := reader.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rtx.Rollback(ctx)
	var seen int64
	if err := rtx.QueryRow(ctx, "SELECT count(*) FROM flows").Scan(&seen); err != nil || seen != 6 {
		t.Fatalf("reader sees %d flows (%v), want 6", seen, err)
	}
	conn := pgConn(t, dsn)
	readerHolds := func() []string {
		rows, err := conn.Query(ctx, `SELECT c.relname::text FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
WHERE l.pid = $1 AND l.locktype = 'relation' AND l.mode = 'AccessShareLock' AND l.granted AND c.relkind IN ('r', 'p') ORDER BY 1`, reader.PgConn().PID())
		if err != nil {
			t.Fatal(err)
		}
		held, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return held
	}
	var seeded []string
	for k := 6; k >= 1; k-- {
		seeded = append(seeded, partitionOf(dayD.AddDate(0, 0, -k)))
	}
	wantHeld := append([]string{"flows"}, seeded...)
	slices.Sort(wantHeld)
	if got := readerHolds(); !slices.Equal(got, wantHeld) {
		t.Fatalf("reader holds ACCESS SHARE on %v, want %v", got, wantHeld)
	}

	// Keep 3 days. At the start (D-1 23:59:30), D-6 and D-5 are expired;
	// after midnight (D 00:00:30), D-4 too.
	r := start(t, Config{Brokers: brokers, Group: "g", PostgresDSN: dsn, FlushCount: 1000, FlushInterval: 100 * time.Millisecond,
		Retention: 3 * 24 * time.Hour, RetentionInterval: 200 * time.Millisecond, Now: now})

	// Before midnight: flows of day D-1.
	values1, tot1 := flowtest.Records(41, 3000, 1, dayD.Add(-30*time.Second))
	flowtest.Produce(t, brokers, "flows", values1)
	r.waitStored(t, uint64(tot1.Flows), time.Minute)
	// Tomorrow (D) was created ahead, behind the reader.
	waitFor(t, "partition "+partitionOf(dayD)+" created ahead", 10*time.Second, func() bool {
		return slices.Contains(attachedPartitions(t, conn), partitionOf(dayD))
	})

	// Midnight: the clock moves to D 00:00:30 and flows of day D arrive.
	clock.Store(dayD.Add(30 * time.Second).UnixNano())
	values2, tot2 := flowtest.Records(42, 4000, 2, dayD.Add(time.Second))
	flowtest.Produce(t, brokers, "flows", values2)
	r.waitStored(t, uint64(tot1.Flows+tot2.Flows), time.Minute)
	// The new tomorrow (D+1) is created ahead too.
	waitFor(t, "partition "+partitionOf(dayD.AddDate(0, 0, 1))+" created ahead", 10*time.Second, func() bool {
		return slices.Contains(attachedPartitions(t, conn), partitionOf(dayD.AddDate(0, 0, 1)))
	})

	// All of it while the reader still holds every lock it took, and
	// retention dropped nothing yet.
	if got := readerHolds(); !slices.Equal(got, wantHeld) {
		t.Fatalf("reader holds ACCESS SHARE on %v, want %v", got, wantHeld)
	}
	var rows int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM flows").Scan(&rows); err != nil || rows != 6+tot1.Flows+tot2.Flows {
		t.Fatalf("flows holds %d rows (%v) behind the reader, want %d", rows, err, 6+tot1.Flows+tot2.Flows)
	}
	wantParts := append(slices.Clone(seeded), partitionOf(dayD), partitionOf(dayD.AddDate(0, 0, 1)))
	slices.Sort(wantParts)
	if got := attachedPartitions(t, conn); !slices.Equal(got, wantParts) {
		t.Fatalf("partitions behind the reader: %v, want %v", got, wantParts)
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_partitions_dropped_total"); got != 0 {
		t.Fatalf("partitions_dropped_total %d behind the reader, want 0", got)
	}

	// The reader ends: retention drops D-6, D-5 and D-4, and only them.
	rtx.Rollback(ctx)
	waitFor(t, "retention drops 3 partitions", 20*time.Second, func() bool {
		return metric(t, r.reg, "flowpipeline_inserter_partitions_dropped_total") >= 3
	})
	r.stop(t)
	if got := metric(t, r.reg, "flowpipeline_inserter_partitions_dropped_total"); got != 3 {
		t.Errorf("partitions_dropped_total %d, want 3", got)
	}
	wantParts = []string{partitionOf(dayD.AddDate(0, 0, -3)), partitionOf(dayD.AddDate(0, 0, -2)), partitionOf(dayD.AddDate(0, 0, -1)),
		partitionOf(dayD), partitionOf(dayD.AddDate(0, 0, 1))}
	if got := attachedPartitions(t, conn); !slices.Equal(got, wantParts) {
		t.Errorf("partitions after retention: %v, want %v", got, wantParts)
	}
	var tables int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relname ~ '^flows_p[0-9]{8}$'").Scan(&tables); err != nil || tables != 5 {
		t.Errorf("%d partition tables (%v), want 5: a detached one was not dropped", tables, err)
	}
	// Seed flows of D-3, D-2, D-1 (bytes 3, 2, 1) stay, with the rest.
	flowtest.Check(t, dsn, flowtest.Totals{Flows: 3 + tot1.Flows + tot2.Flows, Bytes: 3 + 2 + 1 + tot1.Bytes + tot2.Bytes, Packets: 3 + tot1.Packets + tot2.Packets})
	if got := r.in.Stored(); got != uint64(tot1.Flows+tot2.Flows) {
		t.Errorf("stored %d flows, want %d", got, tot1.Flows+tot2.Flows)
	}
}
