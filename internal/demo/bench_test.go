package demo

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/pgserver"
)

// BenchmarkSnapshot measures one view refresh (all its queries, one round
// trip) over a window of 120,000 flows: one minute at the default 2000
// flows/s. It must stay well below the 2 s refresh.
func BenchmarkSnapshot(b *testing.B) {
	if _, err := pgserver.FindBinDir(); err != nil {
		b.Skipf("PostgreSQL server binaries: %v", err)
	}
	dir := b.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		os.Chmod(d, 0o755)
	}
	ctx := context.Background()
	pg, err := pgserver.Start(ctx, pgserver.Options{DataDir: filepath.Join(dir, "pgdata"), NoSync: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer pg.Stop()
	sink, err := pgsink.New(pgsink.Config{DSN: pg.DSN(), Group: "bench"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := sink.CreateSchema(ctx); err != nil {
		b.Fatal(err)
	}
	sink.Close()
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	const flows = 120000
	day := time.Now().UTC().Truncate(24 * time.Hour)
	for _, sql := range []string{
		"CREATE TABLE IF NOT EXISTS flows_bench_p PARTITION OF flows FOR VALUES FROM ('" + day.Add(-24*time.Hour).Format(time.RFC3339) + "') TO ('" + day.Add(48*time.Hour).Format(time.RFC3339) + "')",
		// 4000 hosts, 30 ASes, times spread over the last minute.
		`INSERT INTO flows (time_received, sampling_rate, src_addr, dst_addr, src_as, dst_as, bytes, packets)
SELECT now() - (i % 60) * interval '1 second', 1000,
       ('10.0.' || (i * 7 % 4000) / 250 || '.' || (i * 7 % 4000) % 250)::inet,
       ('10.1.' || (i * 13 % 4000) / 250 || '.' || (i * 13 % 4000) % 250)::inet,
       64496 + i % 30, 64496 + i * 7 % 30, 64 + i % 1400, 1 + i % 10
FROM generate_series(1, ` + "120000" + `) AS i`,
		"INSERT INTO kafka_offsets (consumer_group, topic, partition, next_offset) VALUES ('bench', 'flows', 0, 120000)",
		"ANALYZE flows",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
	}
	addEnrichmentColumns(b, conn)
	v := &view{window: time.Minute, start: time.Now().Add(-time.Hour)}
	b.ResetTimer()
	for b.Loop() {
		s, err := v.snapshot(ctx, conn, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if s.windowFlows != flows || len(s.lists[0]) != 5 {
			b.Fatalf("snapshot saw %d flows and %d talkers, want %d and 5", s.windowFlows, len(s.lists[0]), flows)
		}
	}
}
