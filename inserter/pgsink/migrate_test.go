package pgsink_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// oldRollupDDL is flows_5m as versions before scaled sums created it.
const oldRollupDDL = `CREATE TABLE flows_5m (
  timeslot timestamptz NOT NULL,
  src_as bigint NOT NULL,
  dst_as bigint NOT NULL,
  etype integer NOT NULL,
  bytes bigint NOT NULL,
  packets bigint NOT NULL,
  flows bigint NOT NULL,
  PRIMARY KEY (timeslot, src_as, dst_as, etype)
)`

// TestMigrateRollupToScaled: a database whose flows_5m holds sampled
// bigint sums is converted, at CreateSchema, to numeric scaled sums
// rebuilt from flows; a second CreateSchema leaves it alone.
func TestMigrateRollupToScaled(t *testing.T) {
	dsn := testDB(t)
	ctx := context.Background()
	newSink(t, dsn, "g") // flows, kafka_offsets, the view
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// The old schema, with the rows and sampled sums the old code wrote.
	exec("DROP TABLE flows_5m")
	exec(oldRollupDDL)
	exec("CREATE TABLE flows_p20260310 PARTITION OF flows FOR VALUES FROM ('2026-03-10T00:00:00Z') TO ('2026-03-11T00:00:00Z')")
	exec(`INSERT INTO flows (time_received, sampling_rate, src_as, dst_as, etype, bytes, packets) VALUES
  ('2026-03-10T10:00:01Z', 10, 1, 2, 2048, 100, 1),
  ('2026-03-10T10:04:59Z', 0, 1, 2, 2048, 200, 2),
  ('2026-03-10T10:02:00Z', 3, 1, 2, 2048, 50, 5),
  ('2026-03-10T10:05:00Z', 1000, 1, 2, 2048, 7, 1),
  ('2026-03-10T10:03:00Z', 2, 3, 4, 34525, 1000, 10),
  -- Unbounded by the old validation: x rate is past bigint.
  ('2026-03-10T11:00:00Z', 4294967295, 5, 6, 2048, 281474976710656, 281474976710656),
  ('2026-03-10T11:01:00Z', 4294967295, 5, 6, 2048, 281474976710656, 1)`)
	exec(`INSERT INTO flows_5m VALUES
  ('2026-03-10T10:00:00Z', 1, 2, 2048, 350, 8, 3), ('2026-03-10T10:05:00Z', 1, 2, 2048, 7, 1, 1),
  ('2026-03-10T10:00:00Z', 3, 4, 34525, 1000, 10, 1), ('2026-03-10T11:00:00Z', 5, 6, 2048, 562949953421312, 281474976710657, 2)`)

	newSink(t, dsn, "g") // migrates
	const q = `SELECT to_char(timeslot AT TIME ZONE 'UTC', 'HH24:MI') || ' ' || src_as || '>' || dst_as || ' ' || etype || ' ' || bytes || ' ' || packets || ' ' || flows
FROM flows_5m ORDER BY timeslot, src_as`
	read := func() string {
		t.Helper()
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, "\n")
	}
	// 10:00 1>2: 100x10 + 200x1 + 50x3 = 1350 bytes, 10 + 2 + 15 = 27 packets.
	// 11:00 5>6: 2 x 2^48 x (2^32-1) bytes, (2^48 + 1) x (2^32-1) packets.
	want := strings.Join([]string{
		"10:00 1>2 2048 1350 27 3",
		"10:00 3>4 34525 2000 20 1",
		"10:05 1>2 2048 7000 1000 1",
		"11:00 5>6 2048 2417851638666308395991040 1208925819333158492962815 2",
	}, "\n")
	if got := read(); got != want {
		t.Fatalf("flows_5m after migration:\n%s\nwant:\n%s", got, want)
	}
	var typ, comment string
	if err := conn.QueryRow(ctx, `SELECT data_type, col_description('flows_5m'::regclass, ordinal_position) FROM information_schema.columns
WHERE table_name = 'flows_5m' AND column_name = 'packets'`).Scan(&typ, &comment); err != nil {
		t.Fatal(err)
	}
	if typ != "numeric" || !strings.Contains(comment, "scaled") {
		t.Errorf("flows_5m.packets is %s, %q; want numeric with a comment on scaled sums", typ, comment)
	}

	// Migrated once: a row the rebuild would drop survives the next start.
	exec("INSERT INTO flows_5m VALUES ('2026-03-10T12:00:00Z', 9, 9, 2048, 1, 1, 1)")
	newSink(t, dsn, "g")
	if got := read(); got != want+"\n12:00 9>9 2048 1 1 1" {
		t.Fatalf("second CreateSchema changed flows_5m:\n%s", got)
	}
}
