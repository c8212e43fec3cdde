package pgsink_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// lockModes lists the lock modes the backend pid holds (granted) on rel.
func lockModes(t *testing.T, conn *pgx.Conn, pid uint32, rel string) []string {
	t.Helper()
	var oid uint32
	if err := conn.QueryRow(context.Background(), "SELECT to_regclass($1)::oid", rel).Scan(&oid); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return lockModesOID(t, conn, pid, oid)
}

func lockModesOID(t *testing.T, conn *pgx.Conn, pid, oid uint32) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT mode FROM pg_locks
WHERE pid = $1 AND granted AND locktype = 'relation' AND relation = $2 ORDER BY mode`, pid, oid)
	if err != nil {
		t.Fatal(err)
	}
	modes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return modes
}

func day(d time.Time) string { return "flows_p" + d.Format("20060102") }

// TestDDLLockLevels records, on the real server, which lock each DDL
// statement takes on flows. The new statements must not conflict with
// writers (ROW EXCLUSIVE) or readers (ACCESS SHARE); the old ones are
// kept as the record of why they were replaced.
func TestDDLLockLevels(t *testing.T) {
	dsn := testDB(t)
	newSink(t, dsn, "g")
	ctx := context.Background()
	admin := connect(t, dsn)
	if _, err := admin.Exec(ctx, `CREATE TABLE flows_p20240101 PARTITION OF flows FOR VALUES FROM ('2024-01-01Z') TO ('2024-01-02Z');
CREATE TABLE flows_p20240102 PARTITION OF flows FOR VALUES FROM ('2024-01-02Z') TO ('2024-01-03Z')`); err != nil {
		t.Fatal(err)
	}
	relOf := map[string]string{"new: attach: on the new table": "flows_p20240104", "old: create or replace view: on the view": "flows_scaled"}
	for _, tc := range []struct {
		name string
		stmt string
		want []string // modes held on flows (or relOf[name]) before commit
	}{
		{"new: create a plain table like flows", "CREATE TABLE flows_p20240103 (LIKE flows INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CONSTRAINT c CHECK (time_received >= '2024-01-03Z' AND time_received < '2024-01-04Z'))",
			[]string{"AccessShareLock"}},
		{"new: create, attach and drop the check", `CREATE TABLE flows_p20240103 (LIKE flows INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CONSTRAINT c CHECK (time_received >= '2024-01-03Z' AND time_received < '2024-01-04Z'));
ALTER TABLE flows ATTACH PARTITION flows_p20240103 FOR VALUES FROM ('2024-01-03Z') TO ('2024-01-04Z');
ALTER TABLE flows_p20240103 DROP CONSTRAINT c`,
			[]string{"AccessShareLock", "ShareUpdateExclusiveLock"}},
		{name: "new: attach: on the new table", stmt: `CREATE TABLE flows_p20240104 (LIKE flows);
ALTER TABLE flows ATTACH PARTITION flows_p20240104 FOR VALUES FROM ('2024-01-04Z') TO ('2024-01-05Z')`,
			want: []string{"AccessExclusiveLock", "ShareLock"}},
		{name: "old: create or replace view: on the view", stmt: "CREATE OR REPLACE VIEW flows_scaled AS SELECT *, bytes * greatest(sampling_rate, 1) AS bytes_scaled, packets * greatest(sampling_rate, 1) AS packets_scaled FROM flows",
			want: []string{"AccessExclusiveLock"}},
		{"old: create partition of", "CREATE TABLE flows_p20240105 PARTITION OF flows FOR VALUES FROM ('2024-01-05Z') TO ('2024-01-06Z')",
			[]string{"AccessExclusiveLock"}},
		{"old: create index if not exists", "CREATE INDEX IF NOT EXISTS flows_time_received_brin ON flows USING brin (time_received)",
			[]string{"ShareLock"}},
		{"old: drop an attached partition", "DROP TABLE flows_p20240101", []string{"AccessExclusiveLock"}},
		{"old: plain detach", "ALTER TABLE flows DETACH PARTITION flows_p20240101", []string{"AccessExclusiveLock"}},
		{"old: comment on column", "COMMENT ON COLUMN flows.bytes IS 'x'", []string{"ShareUpdateExclusiveLock"}},
		// Set up below; last, as the pending detach stays.
		{"new: drop a detached partition", "DROP TABLE flows_p20240102", nil},
		{"new: finish a pending detach", "ALTER TABLE flows DETACH PARTITION flows_p20240101 FINALIZE", []string{"ShareUpdateExclusiveLock"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := connect(t, dsn)
			switch {
			case strings.Contains(tc.stmt, "FINALIZE"):
				// A detach cut short: the reader makes it wait, the timeout
				// cancels it, the partition stays pending.
				reader := connect(t, dsn)
				rtx, err := reader.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := rtx.Exec(ctx, "SELECT count(*) FROM flows"); err != nil {
					t.Fatal(err)
				}
				if _, err := conn.Exec(ctx, "SET lock_timeout = 300"); err != nil {
					t.Fatal(err)
				}
				_, err = conn.Exec(ctx, "ALTER TABLE flows DETACH PARTITION flows_p20240101 CONCURRENTLY")
				if !pgsink.IsLockTimeout(err) {
					t.Fatalf("DETACH CONCURRENTLY behind a reader with lock_timeout: %v, want a lock timeout", err)
				}
				rtx.Rollback(ctx)
				var pending bool
				if err := conn.QueryRow(ctx, "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'flows_p20240101'::regclass").Scan(&pending); err != nil || !pending {
					t.Fatalf("partition pending detach: %v %v, want true", pending, err)
				}
				defer conn.Exec(ctx, "RESET lock_timeout")
			case strings.HasPrefix(tc.name, "new: drop a detached"):
				if _, err := conn.Exec(ctx, "ALTER TABLE flows DETACH PARTITION flows_p20240102 CONCURRENTLY"); err != nil {
					t.Fatal(err)
				}
				defer conn.Exec(ctx, "ALTER TABLE flows ATTACH PARTITION flows_p20240102 FOR VALUES FROM ('2024-01-02Z') TO ('2024-01-03Z')")
			}
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, tc.stmt); err != nil {
				t.Fatal(err)
			}
			rel := cmp.Or(relOf[tc.name], "flows")
			var oid uint32 // the new table is visible to its transaction only
			if err := tx.QueryRow(ctx, "SELECT to_regclass($1)::oid", rel).Scan(&oid); err != nil {
				t.Fatal(err)
			}
			if got := lockModesOID(t, admin, conn.PgConn().PID(), oid); !slices.Equal(got, tc.want) {
				t.Errorf("locks on %s: %v, want %v", rel, got, tc.want)
			}
		})
	}
}

// TestDetachConcurrentlyLocks runs the real DETACH ... CONCURRENTLY, which
// cannot run in a transaction, behind a reader: while it waits for the
// reader it holds no lock on flows or the partition (PostgreSQL 15), so a
// writer inserts into flows and a new partition is attached meanwhile
// without waiting.
func TestDetachConcurrentlyLocks(t *testing.T) {
	dsn := testDB(t)
	newSink(t, dsn, "g")
	ctx := context.Background()
	admin := connect(t, dsn)
	if _, err := admin.Exec(ctx, `CREATE TABLE flows_p20240101 PARTITION OF flows FOR VALUES FROM ('2024-01-01Z') TO ('2024-01-02Z');
CREATE TABLE flows_p20240102 PARTITION OF flows FOR VALUES FROM ('2024-01-02Z') TO ('2024-01-03Z')`); err != nil {
		t.Fatal(err)
	}
	reader := connect(t, dsn)
	rtx, err := reader.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rtx.Rollback(ctx)
	if _, err := rtx.Exec(ctx, "SELECT count(*) FROM flows"); err != nil {
		t.Fatal(err)
	}
	detacher := connect(t, dsn)
	done := make(chan error, 1)
	go func() {
		_, err := detacher.Exec(ctx, "ALTER TABLE flows DETACH PARTITION flows_p20240101 CONCURRENTLY")
		done <- err
	}()
	// Wait until it waits for the reader.
	pid := detacher.PgConn().PID()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting bool
		if err := admin.QueryRow(ctx, "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("DETACH CONCURRENTLY never waited for the reader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, rel := range []string{"flows", "flows_p20240101"} {
		if got := lockModes(t, admin, pid, rel); len(got) != 0 {
			t.Errorf("DETACH CONCURRENTLY holds %v on %s while it waits, want nothing", got, rel)
		}
	}
	other := connect(t, dsn)
	if _, err := other.Exec(ctx, "SET lock_timeout = 1000"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "INSERT INTO flows (time_received, bytes) VALUES ('2024-01-02T10:00:00Z', 7)"); err != nil {
		t.Fatalf("insert while DETACH CONCURRENTLY waits: %v", err)
	}
	if _, err := other.Exec(ctx, `CREATE TABLE flows_p20240103 (LIKE flows);
ALTER TABLE flows ATTACH PARTITION flows_p20240103 FOR VALUES FROM ('2024-01-03Z') TO ('2024-01-04Z')`); err != nil {
		t.Fatalf("attach a partition while DETACH CONCURRENTLY waits: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("DETACH CONCURRENTLY finished (%v) while the reader still reads", err)
	default:
	}
	rtx.Rollback(ctx)
	if err := <-done; err != nil {
		t.Fatalf("DETACH CONCURRENTLY after the reader ended: %v", err)
	}
	var parts []string
	rows, err := admin.Query(ctx, "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'flows'::regclass ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	if parts, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil || !slices.Equal(parts, []string{"flows_p20240102", "flows_p20240103"}) {
		t.Fatalf("partitions after the detach: %v %v", parts, err)
	}
}

// TestCreateSchemaBehindLocks: on an existing schema, CreateSchema takes
// nothing stronger than ACCESS SHARE, so it completes at once while a
// reader holds flows, and even while a session holds EXCLUSIVE on every
// table (which conflicts with every mode but ACCESS SHARE: the writers'
// ROW EXCLUSIVE, CREATE INDEX's SHARE, COMMENT's SHARE UPDATE EXCLUSIVE).
func TestCreateSchemaBehindLocks(t *testing.T) {
	dsn := testDB(t)
	s := newSink(t, dsn, "g")
	ctx := context.Background()
	if err := s.EnsurePartitions(ctx, []time.Time{time.Now().UTC().Truncate(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, lock string }{
		{"reader", "SELECT count(*) FROM flows; SELECT count(*) FROM flows_scaled"},
		{"exclusive", "LOCK TABLE flows, flows_5m, flows_5m_enriched, kafka_offsets, flows_scaled IN EXCLUSIVE MODE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			holder := connect(t, dsn)
			tx, err := holder.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, tc.lock); err != nil {
				t.Fatal(err)
			}
			s2, err := pgsink.New(pgsink.Config{DSN: dsn, Group: "g", LockTimeout: 10 * time.Second}, quiet)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			start := time.Now()
			if err := s2.CreateSchema(cctx); err != nil {
				t.Fatalf("CreateSchema with a transaction holding %s: %v after %s", tc.lock, err, time.Since(start))
			}
		})
	}
}

// TestCreateSchemaUpdatesWhatChanged: the catalog checks do not skip a
// statement that would change something: a dropped index, a changed
// comment and a changed view are put back.
func TestCreateSchemaUpdatesWhatChanged(t *testing.T) {
	dsn := testDB(t)
	s := newSink(t, dsn, "g")
	ctx := context.Background()
	conn := connect(t, dsn)
	read := func() (index bool, comment, view string) {
		if err := conn.QueryRow(ctx, `SELECT to_regclass('flows_time_received_brin') IS NOT NULL,
  coalesce(col_description('flows'::regclass, (SELECT attnum FROM pg_attribute WHERE attrelid = 'flows'::regclass AND attname = 'bytes')), ''),
  pg_get_viewdef('flows_scaled'::regclass)`).Scan(&index, &comment, &view); err != nil {
			t.Fatal(err)
		}
		return
	}
	wantIndex, wantComment, wantView := read()
	if !wantIndex || wantComment == "" {
		t.Fatalf("fresh schema: index %v, comment %q", wantIndex, wantComment)
	}
	if _, err := conn.Exec(ctx, `DROP INDEX flows_time_received_brin; COMMENT ON COLUMN flows.bytes IS 'stale';
CREATE OR REPLACE VIEW flows_scaled AS SELECT *, bytes AS bytes_scaled, packets AS packets_scaled FROM flows`); err != nil {
		t.Fatal(err)
	}
	if index, comment, view := read(); index || comment != "stale" || view == wantView {
		t.Fatalf("changes not applied: %v %q", index, comment)
	}
	if err := s.CreateSchema(ctx); err != nil {
		t.Fatal(err)
	}
	if index, comment, view := read(); index != wantIndex || comment != wantComment || view != wantView {
		t.Errorf("after CreateSchema: index %v, comment %q, view %q; want %v, %q, %q", index, comment, view, wantIndex, wantComment, wantView)
	}
}

// TestPartitionsOver3000Days: a batch spread over 3,000 days gets its
// partitions in transactions of at most 64 (47 of them), every one with
// the right bounds and no leftover CHECK constraint, and the range CHECK
// spared ATTACH its scan.
func TestPartitionsOver3000Days(t *testing.T) {
	dsn := testDB(t)
	s := newSink(t, dsn, "g")
	ctx := context.Background()
	first := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)
	var days []time.Time
	for i := range 3000 {
		days = append(days, first.AddDate(0, 0, i))
	}
	// One already exists: it is kept, not created again.
	if err := s.EnsurePartitions(ctx, days[1500:1501]); err != nil {
		t.Fatal(err)
	}
	slices.Reverse(days) // order does not matter
	start := time.Now()
	if err := s.EnsurePartitions(ctx, days); err != nil {
		t.Fatalf("3,000 partitions: %v", err)
	}
	t.Logf("created 2,999 partitions in %s", time.Since(start))
	conn := connect(t, dsn)
	var n, bad, checks, txs int64
	if err := conn.QueryRow(ctx, `SELECT count(*),
  count(*) FILTER (WHERE pg_get_expr(c.relpartbound, c.oid) <> format('FOR VALUES FROM (%L) TO (%L)',
    to_date(substr(c.relname, 8), 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC',
    (to_date(substr(c.relname, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC')),
  (SELECT count(*) FROM pg_constraint k JOIN pg_inherits j ON j.inhrelid = k.conrelid WHERE j.inhparent = 'flows'::regclass AND k.contype = 'c'),
  count(DISTINCT c.xmin::text)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'flows'::regclass`).Scan(&n, &bad, &checks, &txs); err != nil {
		t.Fatal(err)
	}
	// 1 + 2,999 in ceil(2,999 / 64) = 47 transactions.
	if n != 3000 || bad != 0 || checks != 0 || txs != 1+47 {
		t.Errorf("%d partitions, %d with wrong bounds, %d CHECK constraints, created in %d transactions; want 3000, 0, 0, 48", n, bad, checks, txs)
	}
	var first2, last string
	if err := conn.QueryRow(ctx, "SELECT min(relname), max(relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'flows'::regclass").Scan(&first2, &last); err != nil {
		t.Fatal(err)
	}
	if first2 != "flows_p20100101" || last != day(first.AddDate(0, 0, 2999)) {
		t.Errorf("partitions from %s to %s, want flows_p20100101 to %s", first2, last, day(first.AddDate(0, 0, 2999)))
	}

	// ATTACH skips its scan thanks to the CHECK: PostgreSQL says so at DEBUG1.
	var notices []string
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	dbg, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dbg.Close(ctx)
	if _, err := dbg.Exec(ctx, "SET client_min_messages = debug1"); err != nil {
		t.Fatal(err)
	}
	// The sink's own statements, on its own connection, cannot be watched;
	// run the same ones it runs for one more day.
	sql := `CREATE TABLE flows_p20300101 (LIKE flows INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CONSTRAINT "flows_p20300101_range" CHECK (time_received >= '2030-01-01T00:00:00Z' AND time_received < '2030-01-02T00:00:00Z'));
ALTER TABLE flows ATTACH PARTITION flows_p20300101 FOR VALUES FROM ('2030-01-01T00:00:00Z') TO ('2030-01-02T00:00:00Z')`
	if _, err := dbg.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(notices, func(m string) bool { return strings.Contains(m, "is implied by existing constraints") }) {
		t.Errorf("ATTACH did not report skipping its scan; notices: %q", notices)
	}
}

// TestRetentionDetachModes drops expired partitions with DETACH
// CONCURRENTLY (PostgreSQL 14+) and with the plain DETACH of older
// servers, finishing a detach an earlier run left pending, and dropping a
// table an earlier run detached but could not drop.
func TestRetentionDetachModes(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain=%v", plain), func(t *testing.T) {
			dsn := testDB(t)
			s := newSink(t, dsn, "g")
			pgsink.SetPlainDetach(s, plain)
			ctx := context.Background()
			today := time.Now().UTC().Truncate(24 * time.Hour)
			var flows []*pb.FlowMessage
			for d := range 10 {
				ts := today.AddDate(0, 0, -d).Add(time.Hour)
				flows = append(flows, &pb.FlowMessage{TimeReceivedNs: uint64(ts.UnixNano()), Bytes: uint64(1000 + d), Packets: 1, SequenceNum: uint32(d)})
			}
			if _, err := s.Write(ctx, batchOf(t, flows, 0)); err != nil {
				t.Fatal(err)
			}
			conn := connect(t, dsn)
			// Day 9 ago: detach left pending (cut short behind a reader).
			// Day 8 ago: detached but not dropped.
			reader := connect(t, dsn)
			rtx, err := reader.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rtx.Exec(ctx, "SELECT count(*) FROM flows"); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, "SET lock_timeout = 200"); err != nil {
				t.Fatal(err)
			}
			_, err = conn.Exec(ctx, "ALTER TABLE flows DETACH PARTITION "+day(today.AddDate(0, 0, -9))+" CONCURRENTLY")
			if !pgsink.IsLockTimeout(err) {
				t.Fatalf("detach behind a reader: %v, want lock timeout", err)
			}
			rtx.Rollback(ctx)
			if _, err := conn.Exec(ctx, "RESET lock_timeout; ALTER TABLE flows DETACH PARTITION "+day(today.AddDate(0, 0, -8))); err != nil {
				t.Fatal(err)
			}
			dropped, err := s.DropExpired(ctx, today.AddDate(0, 0, -6))
			if err != nil {
				t.Fatal(err)
			}
			want := []string{day(today.AddDate(0, 0, -9)), day(today.AddDate(0, 0, -8)), day(today.AddDate(0, 0, -7))}
			if !slices.Equal(dropped, want) {
				t.Fatalf("dropped %v, want %v", dropped, want)
			}
			var keptBytes int64
			for d := range 7 {
				keptBytes += int64(1000 + d)
			}
			flowtest.Check(t, dsn, flowtest.Totals{Flows: 7, Bytes: keptBytes, Packets: 7})
			var tables int64
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_class WHERE relname ~ '^flows_p[0-9]{8}$'").Scan(&tables); err != nil || tables != 7 {
				t.Errorf("%d partition tables left (%v), want 7", tables, err)
			}
			// Nothing more to do.
			if dropped, err := s.DropExpired(ctx, today.AddDate(0, 0, -6)); err != nil || len(dropped) != 0 {
				t.Errorf("second run dropped %v (%v), want nothing", dropped, err)
			}
		})
	}
}

// TestDDLGivesWayToAReader: while a reader holds flows, partition creation
// succeeds, writes keep landing, and retention gives up at once (the
// reader holds the expired partitions: ErrBusy) or within its
// lock_timeout (the reader holds only recent partitions: the detach stays
// pending) without blocking them. A detach the reader does not need is
// finished even while it reads (READ COMMITTED: an idle reader holds no
// snapshot, and it never locked that partition). Once the reader ends,
// retention drops exactly the rest of the expired partitions.
func TestDDLGivesWayToAReader(t *testing.T) {
	for _, tc := range []struct {
		name    string
		read    string
		wantErr func(error) bool
		second  []int // days ago dropped by a second run behind the reader
	}{
		{"reads every partition", "SELECT count(*) FROM flows", func(err error) bool { return errors.Is(err, pgsink.ErrBusy) }, nil},
		// A literal bound: the planner prunes, and locks only the partitions
		// it keeps (now() would prune at run time, after locking them all).
		{"reads recent partitions", "SELECT count(*) FROM flows WHERE time_received >= '" +
			time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -3).Format(time.RFC3339) + "'", pgsink.IsLockTimeout, []int{6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testGivesWay(t, tc.read, tc.wantErr, tc.second)
		})
	}
}

func testGivesWay(t *testing.T, read string, wantErr func(error) bool, second []int) {
	dsn := testDB(t)
	s, err := pgsink.New(pgsink.Config{DSN: dsn, Group: "g", LockTimeout: 300 * time.Millisecond}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.CreateSchema(ctx); err != nil {
		t.Fatal(err)
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	var old []*pb.FlowMessage
	for d := 2; d <= 6; d++ {
		ts := today.AddDate(0, 0, -d).Add(time.Hour)
		old = append(old, &pb.FlowMessage{TimeReceivedNs: uint64(ts.UnixNano()), Bytes: 10, Packets: 1, SequenceNum: uint32(d)})
	}
	if _, err := s.Write(ctx, batchOf(t, old, 0)); err != nil {
		t.Fatal(err)
	}
	reader := connect(t, dsn)
	rtx, err := reader.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rtx.Rollback(ctx)
	if _, err := rtx.Exec(ctx, read); err != nil {
		t.Fatal(err)
	}

	// Retention: days 4, 5, 6 ago are expired. It must give way quickly.
	start := time.Now()
	dropped, err := s.DropExpired(ctx, today.AddDate(0, 0, -3))
	if !wantErr(err) || len(dropped) != 0 {
		t.Fatalf("retention behind a reader: dropped %v, %v; want nothing and the other error", dropped, err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("retention took %s to give way, want at most about its 300ms lock_timeout", took)
	}
	// Writes into new days (today, yesterday: partitions to create) and
	// into an existing one, each within a couple of seconds.
	offset := int64(len(old))
	for i, ts := range []time.Time{today.Add(time.Second), today.AddDate(0, 0, -1).Add(time.Hour), today.AddDate(0, 0, -2).Add(2 * time.Hour)} {
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		m := &pb.FlowMessage{TimeReceivedNs: uint64(ts.UnixNano()), Bytes: 100, Packets: 1, SequenceNum: uint32(100 + i)}
		b := batchOf(t, []*pb.FlowMessage{m}, offset)
		res, err := s.Write(wctx, b)
		cancel()
		if err != nil || res.Flows != 1 {
			t.Fatalf("write %d behind the reader: %+v %v", i, res, err)
		}
		offset = b.End
	}
	// Still behind the reader.
	var want []string
	for _, d := range second {
		want = append(want, day(today.AddDate(0, 0, -d)))
	}
	if dropped, err := s.DropExpired(ctx, today.AddDate(0, 0, -3)); !wantErr(err) || !slices.Equal(dropped, want) {
		t.Fatalf("second retention behind the reader: dropped %v, %v; want %v and the same error", dropped, err, want)
	}
	rtx.Rollback(ctx)
	dropped, err = s.DropExpired(ctx, today.AddDate(0, 0, -3))
	want = nil
	for d := 6; d >= 4; d-- {
		if !slices.Contains(second, d) {
			want = append(want, day(today.AddDate(0, 0, -d)))
		}
	}
	if err != nil || !slices.Equal(dropped, want) {
		t.Fatalf("retention after the reader: dropped %v, %v; want %v", dropped, err, want)
	}
	flowtest.Check(t, dsn, flowtest.Totals{Flows: 2 + 3, Bytes: 2*10 + 3*100, Packets: 5})
}

// TestDDLRetriesAfterLockTimeout: partition creation behind a session
// holding SHARE UPDATE EXCLUSIVE on flows (what ATTACH needs) gives up
// each attempt after lock_timeout and retries: it succeeds once the lock
// is released, and fails with the lock timeout, in bounded time, when the
// lock is never released.
func TestDDLRetriesAfterLockTimeout(t *testing.T) {
	for _, release := range []bool{true, false} {
		t.Run(fmt.Sprintf("released=%v", release), func(t *testing.T) {
			dsn := testDB(t)
			s, err := pgsink.New(pgsink.Config{DSN: dsn, Group: "g", LockTimeout: 200 * time.Millisecond}, quiet)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			if err := s.CreateSchema(ctx); err != nil {
				t.Fatal(err)
			}
			holder := connect(t, dsn)
			tx, err := holder.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, "LOCK TABLE flows IN SHARE UPDATE EXCLUSIVE MODE"); err != nil {
				t.Fatal(err)
			}
			const hold = time.Second
			if release {
				timer := time.AfterFunc(hold, func() { tx.Rollback(ctx) })
				defer timer.Stop()
			}
			d := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
			start := time.Now()
			err = s.EnsurePartitions(ctx, []time.Time{d})
			took := time.Since(start)
			var n int64
			if err := connect(t, dsn).QueryRow(ctx, "SELECT count(*) FROM pg_inherits WHERE inhrelid = to_regclass('flows_p20240501')").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if release {
				if err != nil || n != 1 || took < hold {
					t.Fatalf("after the lock is released: %v, %d partitions, after %s; want success, 1, at least %s", err, n, took, hold)
				}
				return
			}
			// 5 attempts of 200ms, 100+200+400+800ms of backoff: about 3s.
			if !pgsink.IsLockTimeout(err) || !strings.Contains(err.Error(), "5 times") || n != 0 || took > 10*time.Second {
				t.Fatalf("behind a lock never released: %v, %d partitions, after %s; want a lock timeout after 5 attempts, 0, within 10s", err, n, took)
			}
		})
	}
}
