package demo

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/pgserver"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
)

// startPG starts a throwaway server the test owns, in a directory the
// server user can reach when we are root (t.TempDir makes them 0700).
func startPG(t *testing.T) *pgserver.Server {
	t.Helper()
	if _, err := pgserver.FindBinDir(); err != nil {
		testenv.Unavailable(t, "PostgreSQL server binaries: %v", err)
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s, err := pgserver.Start(context.Background(), pgserver.Options{DataDir: filepath.Join(dir, "pgdata"), NoSync: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

func testLogger(t *testing.T) *slog.Logger {
	// Warnings (retries, slow drains) show up in the test's log.
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// TestRunTwiceOnOneDatabase runs the demo twice against an existing
// database (-postgres.dsn): each run must store exactly what it produced,
// counted apart from the rows already there, and the rows must be in the
// tables the view and the example queries read.
func TestRunTwiceOnOneDatabase(t *testing.T) {
	pg := startPG(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	sink, err := pgsink.New(pgsink.Config{DSN: pg.DSN(), Group: "pre"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.CreateSchema(ctx); err != nil {
		t.Fatal(err)
	}
	sink.Close()
	addEnrichmentColumns(t, conn)
	var total uint64
	for run := 1; run <= 2; run++ {
		var out bytes.Buffer
		sum, err := Run(ctx, Config{
			PostgresDSN: pg.DSN(),
			Rate:        1000,
			Duration:    3 * time.Second,
			Refresh:     500 * time.Millisecond,
			Seed:        int64(run),
		}, &out, testLogger(t))
		if err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, out.String())
		}
		if sum.Produced == 0 || sum.Stored != sum.Produced || sum.Committed != sum.Produced {
			t.Fatalf("run %d: produced %d, stored %d, committed %d: want all equal and > 0", run, sum.Produced, sum.Stored, sum.Committed)
		}
		// 1000 flows/s for 3 s: the mocker is paced, so far from 3000 means
		// the rate or the duration is not honoured.
		if sum.Produced < 2000 || sum.Produced > 4000 {
			t.Errorf("run %d: produced %d flows in 3 s at 1000/s", run, sum.Produced)
		}
		total += sum.Stored
		if sum.TotalRows != total {
			t.Errorf("run %d: total rows %d, want %d", run, sum.TotalRows, total)
		}
		o := out.String()
		wants := []string{sum.String() + "\n", "psql \"postgres://"}
		for _, l := range topLists {
			wants = append(wants, l.Title)
		}
		for _, want := range wants {
			if !strings.Contains(o, want) {
				t.Errorf("run %d: output lacks %q:\n%s", run, want, o)
			}
		}
		if strings.Contains(o, "reading the view from PostgreSQL failed") {
			t.Errorf("run %d: the view's queries failed:\n%s", run, o)
		}
		// -reset is the private server's: with a DSN it is never offered.
		if run == 2 && (!strings.Contains(o, "already holds") || strings.Contains(o, "-reset")) {
			t.Errorf("run 2: the header does not mention the rows of run 1, or offers -reset with a DSN:\n%s", o)
		}
	}

	var rows, rollup int64
	if err := conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM flows), (SELECT sum(flows) FROM flows_5m)").Scan(&rows, &rollup); err != nil {
		t.Fatal(err)
	}
	if uint64(rows) != total || uint64(rollup) != total {
		t.Errorf("flows has %d rows and flows_5m counts %d flows, want %d", rows, rollup, total)
	}

	// The example queries printed for psql run on this schema and see the
	// flows just stored. The first counts complete minutes only: in one
	// transaction (one now()), move the flows with even bytes into the
	// previous minute and the others into the current one.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "UPDATE flows SET time_received = now()"); err != nil {
		t.Fatal(err)
	}
	tag, err := tx.Exec(ctx, "UPDATE flows SET time_received = date_trunc('minute', now()) - interval '30 seconds' WHERE bytes % 2 = 0")
	if err != nil {
		t.Fatal(err)
	}
	previous := uint64(tag.RowsAffected())
	if previous == 0 || previous == total {
		t.Fatalf("%d of %d flows have even bytes: want some, not all", previous, total)
	}
	for i, q := range ExampleQueries {
		r, err := tx.Query(ctx, strings.TrimSuffix(q.SQL, ";"))
		if err != nil {
			t.Fatalf("example query %d: %v", i, err)
		}
		n := 0
		var flows int64
		for r.Next() {
			n++
			vals, err := r.Values()
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				flows += vals[1].(int64)
			}
		}
		if err := r.Err(); err != nil {
			t.Fatalf("example query %d: %v", i, err)
		}
		if n == 0 {
			t.Errorf("example query %d returned no rows: %s", i, q.SQL)
		}
		if i == 0 && uint64(flows) != previous {
			t.Errorf("example query 0 counts %d flows, want %d (the previous minute's, not the current one's %d)", flows, previous, total-previous)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{
		{},                                     // no data dir, no DSN
		{DataDir: "x", PostgresPort: 70000},    // bad port
		{DataDir: "x", Rate: -1},               // bad rate
		{DataDir: "x", Duration: -time.Second}, // bad duration
		{DataDir: "x", Partitions: -1},         // bad partitions
		{DataDir: "x", Retention: -time.Hour},  // bad retention
		{DataDir: "x", EnrichedTopic: "flows"}, // enricher in and out the same
	} {
		if err := c.Validate(); err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Config.") {
			t.Errorf("Validate(%+v) = %v: want an ErrInvalidConfig naming the field", c, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig: %v", err)
	}
	d := DefaultConfig()
	filled := Config{DataDir: DefaultDataDir(), PostgresPort: 55432, KafkaListen: d.KafkaListen, Retention: d.Retention,
		NetworksFile: d.NetworksFile, ExportersFile: d.ExportersFile}
	filled.setDefaults()
	if !reflect.DeepEqual(filled, DefaultConfig()) {
		t.Errorf("zero Config with defaults = %+v\nDefaultConfig() = %+v", filled, DefaultConfig())
	}
	if err := (Config{DataDir: "x"}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	if err := (Config{PostgresDSN: "postgres://x"}).Validate(); err != nil {
		t.Errorf("with a DSN and no data dir: %v", err)
	}
}

func TestUnits(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{thousands(0), "0"},
		{thousands(999), "999"},
		{thousands(1000), "1,000"},
		{thousands(1234567), "1,234,567"},
		{humanCount(950), "950"},
		{humanCount(2000), "2.0k"},
		{humanCount(1_500_000), "1.5M"},
		{humanBytes(512), "512 B"},
		{humanBytes(1_234_000), "1.2 MB"},
		{humanBytes(7.4e9), "7.4 GB"},
		{humanBits(999), "999 bit/s"},
		{humanBits(1e9), "1.0 Gbit/s"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestSummaryString(t *testing.T) {
	if got := (Summary{Produced: 12, Stored: 12}).String(); got != "produced 12, stored 12" {
		t.Errorf("got %q", got)
	}
}

// TestExternalBrokersStartAtEnd: with -kafka.brokers, flows already in the
// topic are not this run's: the inserter starts at the topic's end, so
// stored still equals produced.
func TestExternalBrokersStartAtEnd(t *testing.T) {
	pg := startPG(t)
	brokers := testenv.FakeKafka(t, 3, "flows")
	ctx := context.Background()
	old, err := mocker.New(mocker.Config{Brokers: brokers, Count: 700, ProgressInterval: -1}, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if old.Produced() != 700 {
		t.Fatalf("pre-filled %d flows, want 700", old.Produced())
	}
	var out bytes.Buffer
	sum, err := Run(ctx, Config{Brokers: brokers, PostgresDSN: pg.DSN(), Rate: 1000, Duration: 2 * time.Second, Refresh: 500 * time.Millisecond},
		&out, testLogger(t))
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if sum.Produced == 0 || sum.Stored != sum.Produced || sum.TotalRows != sum.Produced {
		t.Fatalf("produced %d, stored %d, total rows %d: want all equal and > 0 (the 700 older flows must not be consumed)",
			sum.Produced, sum.Stored, sum.TotalRows)
	}
	if !strings.Contains(out.String(), "Kafka at "+strings.Join(brokers, ",")) {
		t.Errorf("the header does not name the given brokers:\n%s", out.String())
	}
}

// enrichmentColumns are the flows columns of the I12 contract the view
// reads. addEnrichmentColumns stands in for the inserter's migration until
// it adds them (ADD COLUMN IF NOT EXISTS: a no-op once it does).
var enrichmentColumns = []string{
	"src_country text NOT NULL DEFAULT ''", "dst_country text NOT NULL DEFAULT ''",
	"src_as_name text NOT NULL DEFAULT ''", "dst_as_name text NOT NULL DEFAULT ''",
	"src_net_name text NOT NULL DEFAULT ''", "dst_net_name text NOT NULL DEFAULT ''",
	"src_net_site text NOT NULL DEFAULT ''", "dst_net_site text NOT NULL DEFAULT ''",
}

func addEnrichmentColumns(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	var has bool
	if err := conn.QueryRow(context.Background(),
		"SELECT EXISTS (SELECT FROM information_schema.columns WHERE table_name = 'flows' AND column_name = 'src_net_name')").Scan(&has); err != nil {
		t.Fatal(err)
	}
	if has {
		return // the inserter's schema has them
	}
	t.Log("the inserter's schema lacks the enrichment columns: adding the ones the view reads")
	// flows_scaled's SELECT * cannot be replaced with columns in the middle.
	if _, err := conn.Exec(context.Background(), "DROP VIEW IF EXISTS flows_scaled"); err != nil {
		t.Fatal(err)
	}
	for _, c := range enrichmentColumns {
		if _, err := conn.Exec(context.Background(), "ALTER TABLE flows ADD COLUMN IF NOT EXISTS "+c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(context.Background(), `CREATE VIEW flows_scaled AS
SELECT *, bytes * greatest(sampling_rate, 1) AS bytes_scaled, packets * greatest(sampling_rate, 1) AS packets_scaled FROM flows`); err != nil {
		t.Fatal(err)
	}
}

// TestViewTopLists: the view's top lists name networks, AS and countries,
// scale bytes by the sampling rate, and fall back to AS numbers and "??"
// when a flow holds no enrichment.
func TestViewTopLists(t *testing.T) {
	pg := startPG(t)
	ctx := context.Background()
	sink, err := pgsink.New(pgsink.Config{DSN: pg.DSN(), Group: "view"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.CreateSchema(ctx); err != nil {
		t.Fatal(err)
	}
	sink.Close()
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	addEnrichmentColumns(t, conn)
	day := time.Now().UTC().Truncate(24 * time.Hour)
	for _, sql := range []string{
		"CREATE TABLE flows_view_p PARTITION OF flows FOR VALUES FROM ('" + day.Add(-24*time.Hour).Format(time.RFC3339) + "') TO ('" + day.Add(48*time.Hour).Format(time.RFC3339) + "')",
		// 3 flows Netflix (US) -> customer-a (par1), 1000 sampled bytes at 1:10.
		`INSERT INTO flows (time_received, sampling_rate, src_as, dst_as, src_as_name, src_country, dst_country, dst_net_name, dst_net_site, bytes, packets)
SELECT now(), 10, 2906, 64500, 'Netflix', 'US', 'FR', 'customer-a', 'par1', 1000, 1 FROM generate_series(1, 3)`,
		// 2 flows from customer-a (par1) to Netflix, 100 bytes at 1:10: the
		// same customer on the other side is the same line of its list.
		`INSERT INTO flows (time_received, sampling_rate, src_as, dst_as, dst_as_name, src_net_name, src_net_site, bytes, packets)
SELECT now(), 10, 0, 2906, 'Netflix', 'customer-a', 'par1', 100, 1 FROM generate_series(1, 2)`,
		// 2 flows with nothing enriched, 500 bytes at 1:1 (rate 0).
		`INSERT INTO flows (time_received, sampling_rate, src_as, dst_as, bytes, packets)
SELECT now(), 0, 64511, 64496, 500, 1 FROM generate_series(1, 2)`,
		// Outside the window: not counted.
		`INSERT INTO flows (time_received, sampling_rate, src_as, dst_as, src_as_name, bytes, packets) VALUES (now() - interval '2 hours', 1, 1, 2, 'Old', 99, 1)`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	v := &view{window: time.Minute, start: time.Now().Add(-time.Hour)}
	s, err := v.snapshot(ctx, conn, time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := [][]talker{
		{{"Netflix [US] -> customer-a [FR]", 30000, 3}, {"customer-a -> Netflix", 2000, 2}, {"AS64511 -> AS64496", 1000, 2}},
		{{"Netflix AS2906", 30000, 3}, {"(unnamed) AS0", 2000, 2}, {"(unnamed) AS64511", 1000, 2}},
		{{"US -> FR", 30000, 3}, {"?? -> ??", 3000, 4}},
		{{"customer-a (par1)", 32000, 5}, {"(no network)", 1000, 2}},
	}
	if !reflect.DeepEqual(s.lists, want) || s.windowFlows != 7 {
		t.Errorf("top lists %+v (window flows %d),\nwant %+v (7)", s.lists, s.windowFlows, want)
	}
	var out bytes.Buffer
	v.out = &out
	v.stored = func() uint64 { return 5 }
	v.refresh(ctx, conn, 5, true)
	for _, line := range []string{"Top talkers (network or AS name [country])", "  1  Netflix [US] -> customer-a [FR]", "  1  customer-a (par1)"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("the view lacks %q:\n%s", line, out.String())
		}
	}
}

// TestGeodata: present files are used as they are; missing ones are
// fetched once; when the fetch fails the demo says so once and runs
// without them.
func TestGeodata(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	marker := filepath.Join(t.TempDir(), "fetched")
	// A stand-in for .ci/geodata/fetch.sh: writes the three files into
	// $FLOWPIPELINE_GEODATA and counts its runs.
	fetch := []string{"sh", "-c", `echo x >> "` + marker + `" && mkdir -p "$FLOWPIPELINE_GEODATA/geo-whois-asn-country-mmdb" "$FLOWPIPELINE_GEODATA/asn" &&
touch "$FLOWPIPELINE_GEODATA/geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb" "$FLOWPIPELINE_GEODATA/asn/asn-ipv4.csv" "$FLOWPIPELINE_GEODATA/asn/asn-ipv6.csv"`}
	wantC, wantA := GeodataFiles(dir)
	for run := 1; run <= 2; run++ {
		var out bytes.Buffer
		c, a := Geodata(ctx, dir, fetch, &out)
		if c != wantC || !reflect.DeepEqual(a, wantA) {
			t.Fatalf("run %d: %q %q, want %q %q", run, c, a, wantC, wantA)
		}
		runs, _ := os.ReadFile(marker)
		if string(runs) != "x\n" {
			t.Errorf("run %d: the fetch ran %d times in all, want once", run, len(runs)/2)
		}
		if fetched := strings.Contains(out.String(), "fetching"); fetched != (run == 1) {
			t.Errorf("run %d: output %q", run, out.String())
		}
	}

	var out bytes.Buffer
	c, a := Geodata(ctx, t.TempDir(), []string{"false"}, &out)
	if c != "" || a != nil {
		t.Errorf("failed fetch: %q %q, want none", c, a)
	}
	if n := strings.Count(out.String(), "the demo runs with the networks and exporters files alone"); n != 1 {
		t.Errorf("failed fetch: said so %d times, want once:\n%s", n, out.String())
	}
	if c, a := Geodata(ctx, "", fetch, &out); c != "" || a != nil {
		t.Errorf("no directory: %q %q, want none", c, a)
	}
}

// TestAnotherProducer: a mocker pointed at the demo's broker through its
// fixed listen address adds exactly its flows to the stored ones, and the
// demo says that another producer is why stored differs from produced.
func TestAnotherProducer(t *testing.T) {
	pg := startPG(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx := context.Background()
	type result struct {
		sum Summary
		err error
	}
	done := make(chan result, 1)
	out := &syncBuffer{}
	go func() {
		sum, err := Run(ctx, Config{KafkaListen: addr, PostgresDSN: pg.DSN(), Rate: 500, Duration: 4 * time.Second, Refresh: 500 * time.Millisecond},
			out, testLogger(t))
		done <- result{sum, err}
	}()
	// Once the demo's pipeline runs (its start offsets are set), 300 flows
	// from elsewhere.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "] produced ") {
		if time.Now().After(deadline) {
			t.Fatalf("the demo never started:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var other *mocker.Mocker
	var err2 error
	for {
		other, err2 = mocker.New(mocker.Config{Brokers: []string{addr}, Count: 300, ProgressInterval: -1}, testLogger(t), prometheus.NewRegistry())
		if err2 == nil {
			if err2 = other.Run(ctx); err2 == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other mocker never reached %s: %v", addr, err2)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := <-done
	if !errors.Is(r.err, ErrMismatch) || !strings.Contains(r.err.Error(), "300 more than the demo's mocker produced: another producer") {
		t.Fatalf("error %v, want ErrMismatch naming 300 records from another producer\n%s", r.err, out.String())
	}
	if other.Produced() != 300 || r.sum.Produced == 0 || r.sum.Stored != r.sum.Produced+300 {
		t.Errorf("demo produced %d, stored %d, the other mocker %d: want stored = produced + 300", r.sum.Produced, r.sum.Stored, other.Produced())
	}
	if !strings.Contains(out.String(), "in-process Kafka broker on "+addr) {
		t.Errorf("the header does not name the fixed address %s:\n%s", addr, out.String())
	}
}

// syncBuffer is a bytes.Buffer a test may read while Run writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
