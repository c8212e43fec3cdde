package inserter

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// BenchmarkDrain1M is what `make bench` reports: the time to drain
// 1,000,000 flows from the real Kafka broker into PostgreSQL, next to the
// database's own limit (a plain text COPY of the same rows into the same
// table) and the original design (one INSERT per row, measured on a
// sample and extrapolated). Filling the topic is not timed.
func BenchmarkDrain1M(b *testing.B) {
	const total = 1_000_000
	const insertSample = 10_000
	k := testenv.SharedKafka(b)
	// A private server with fsync back on, as in production: the test
	// servers run with fsync=off, which flatters one INSERT per row (a
	// commit each) far more than COPY.
	pg := testenv.StartPostgres(b)
	setFsync(b, pg.DSN())
	dsn := pg.CreateDB(b, testenv.UniqueName(b))
	topic := testenv.UniqueName(b)
	k.CreateTopic(b, topic, 6)
	base := time.Now().Add(-30 * time.Minute)
	fillStart := time.Now()
	want := flowtest.ProduceFlows(b, k.Brokers(), topic, 1, total, 1, base)
	b.Logf("filled %s with %d flows (one per record, 6 partitions) in %s (not timed)", topic, total, time.Since(fillStart).Round(time.Millisecond))
	runtime.GC()
	debug.FreeOSMemory()
	resetPeakRSS()
	rssBefore := readStatusKB("VmRSS")

	// 1. Drain.
	reg := newRegistry()
	in, err := New(Config{Brokers: k.Brokers(), Topic: topic, Group: "bench", PostgresDSN: dsn, KafkaVersion: k.Version()}, testLogger(b), reg)
	if err != nil {
		b.Fatal(err)
	}
	var peak atomic.Int64
	stopSampling := sampleRSS(&peak)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	t0 := time.Now()
	go func() { done <- in.Run(ctx) }()
	for in.Stored() < total {
		select {
		case err := <-done:
			b.Fatalf("Run returned %v after %d flows", err, in.Stored())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Since(t0) > 5*time.Minute {
			b.Fatalf("drained only %d flows in 5 minutes", in.Stored())
		}
	}
	drain := time.Since(t0)
	b.StopTimer()
	stopSampling()
	hwm := readStatusKB("VmHWM")
	var busy float64
	if mfs, err := reg.Gather(); err == nil {
		for _, mf := range mfs {
			if mf.GetName() == "flowpipeline_inserter_batch_duration_seconds" {
				busy = mf.GetMetric()[0].GetHistogram().GetSampleSum()
			}
		}
	}
	b.Logf("drained %d flows in %s; writer busy %.1fs; RSS %.0f MB before the drain", total, drain.Round(time.Millisecond), busy, float64(rssBefore)/1024)
	if path := os.Getenv("INSERTER_BENCH_HEAP"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	cancel()
	<-done
	flowtest.Check(b, dsn, want)

	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	bg := context.Background()

	// 2. Plain COPY of the same rows, from a file, into the same table.
	file := filepath.Join(b.TempDir(), "flows.copy")
	f, err := os.Create(file)
	if err != nil {
		b.Fatal(err)
	}
	cols := strings.Join(pgsink.ColumnNames(), ", ")
	if _, err := conn.PgConn().CopyTo(bg, f, "COPY (SELECT "+cols+" FROM flows) TO STDOUT"); err != nil {
		b.Fatal(err)
	}
	f.Close()
	mustExec(b, conn, "TRUNCATE flows, flows_5m, flows_5m_enriched")
	mustExec(b, conn, "CHECKPOINT")
	f, err = os.Open(file)
	if err != nil {
		b.Fatal(err)
	}
	t1 := time.Now()
	tag, err := conn.PgConn().CopyFrom(bg, bufio.NewReaderSize(f, 1<<20), "COPY flows ("+cols+") FROM STDIN")
	copyDur := time.Since(t1)
	f.Close()
	if err != nil || tag.RowsAffected() != total {
		b.Fatalf("plain COPY: %v, %d rows", err, tag.RowsAffected())
	}

	// 3. One INSERT per row, autocommit, as the original inserter did.
	mustExec(b, conn, "TRUNCATE flows, flows_5m, flows_5m_enriched")
	g := flowtest.NewGen(1)
	var m pb.FlowMessage
	insertSQL := insertStatement()
	t2 := time.Now()
	for i := range insertSample {
		g.Next(&m, base.Add(time.Duration(i)*10*time.Microsecond))
		if _, err := conn.Exec(bg, insertSQL, insertArgs(&m)...); err != nil {
			b.Fatal(err)
		}
	}
	insertDur := time.Since(t2)

	// For comparison only: the same INSERTs with fsync off, as the test
	// servers run. Not the target's baseline, since production syncs.
	mustExec(b, conn, "ALTER SYSTEM SET fsync = off")
	mustExec(b, conn, "SELECT pg_reload_conf()")
	time.Sleep(500 * time.Millisecond)
	mustExec(b, conn, "TRUNCATE flows, flows_5m, flows_5m_enriched")
	t3 := time.Now()
	for i := range insertSample {
		g.Next(&m, base.Add(time.Duration(insertSample+i)*10*time.Microsecond))
		if _, err := conn.Exec(bg, insertSQL, insertArgs(&m)...); err != nil {
			b.Fatal(err)
		}
	}
	insertNoSyncRate := insertSample / time.Since(t3).Seconds()

	drainRate := total / drain.Seconds()
	copyRate := total / copyDur.Seconds()
	insertRate := insertSample / insertDur.Seconds()
	fmt.Printf("\n%-42s %10s %9s %12s\n%-42s %10d %9.2f %12.0f\n%-42s %10d %9.2f %12.0f\n%-42s %10d %9.2f %12.0f  (sample of %d rows, rate extrapolated)\n"+
		"PostgreSQL with fsync=on, synchronous_commit=on (production settings)\n"+
		"drain / plain COPY = %.2fx (target >= 0.6x)   drain / INSERT = %.0fx (target >= 50x)\n"+
		"for comparison, one INSERT per row with fsync=off: %.0f rows/s (drain / that = %.0fx)\n"+
		"peak RSS while draining: %.0f MB sampled VmRSS, %.0f MB VmHWM since the topic was filled (target < 200 MB)",
		"method", "rows", "seconds", "rows/s",
		"inserter drain: Kafka -> binary COPY", total, drain.Seconds(), drainRate,
		"plain COPY flows FROM file (text)", total, copyDur.Seconds(), copyRate,
		"one INSERT per row (original design)", total, float64(total)/insertRate, insertRate, insertSample,
		drainRate/copyRate, drainRate/insertRate, insertNoSyncRate, drainRate/insertNoSyncRate, float64(peak.Load())/1024, float64(hwm)/1024)
	fmt.Println()
	b.ReportMetric(drainRate, "drain_rows/s")
	b.ReportMetric(copyRate, "copy_rows/s")
	b.ReportMetric(insertRate, "insert_rows/s")
	b.ReportMetric(insertNoSyncRate, "insert_nofsync_rows/s")
	b.ReportMetric(drainRate/copyRate, "drain/copy")
	b.ReportMetric(drainRate/insertRate, "drain/insert")
	// VmHWM catches a peak between two samples.
	b.ReportMetric(float64(max(peak.Load(), hwm))/1024, "peak_rss_MB")
}

func setFsync(b *testing.B, dsn string) {
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	mustExec(b, conn, "ALTER SYSTEM SET fsync = on")
	mustExec(b, conn, "SELECT pg_reload_conf()")
	var v string
	for range 50 {
		if err := conn.QueryRow(context.Background(), "SHOW fsync").Scan(&v); err != nil {
			b.Fatal(err)
		}
		if v == "on" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("fsync is %q after reload, want on", v)
}

func mustExec(b *testing.B, conn *pgx.Conn, sql string) {
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		b.Fatalf("%s: %v", sql, err)
	}
}

func insertStatement() string {
	cols := pgsink.ColumnNames()
	ph := make([]string, len(cols))
	for i := range ph {
		ph[i] = "$" + strconv.Itoa(i+1)
	}
	return "INSERT INTO flows (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(ph, ", ") + ")"
}

// insertArgs follows pgsink's column order.
func insertArgs(m *pb.FlowMessage) []any {
	ts := func(ns uint64) any {
		if ns == 0 {
			return nil
		}
		return time.Unix(0, int64(ns))
	}
	addr := func(b []byte) any {
		a, ok := pgsink.AddrOf(b)
		if !ok {
			return nil
		}
		return a
	}
	return []any{ts(m.TimeReceivedNs), ts(m.TimeFlowStartNs), ts(m.TimeFlowEndNs), int16(m.Type), int64(m.SequenceNum), int64(m.SamplingRate),
		addr(m.SamplerAddress), addr(m.SrcAddr), addr(m.DstAddr), int64(m.SrcAs), int64(m.DstAs), int32(m.Etype), int16(m.Proto),
		int32(m.SrcPort), int32(m.DstPort), int32(m.TcpFlags), int64(m.InIf), int64(m.OutIf), int64(m.Bytes), int64(m.Packets),
		m.SrcCountry, m.DstCountry, m.SrcAsName, m.DstAsName, m.SrcNetName, m.DstNetName, m.SrcNetRole, m.DstNetRole, m.SrcNetSite, m.DstNetSite,
		m.ExporterName, m.InIfName, m.OutIfName, m.InIfDescription, m.OutIfDescription, int64(m.InIfSpeed), int64(m.OutIfSpeed),
		int16(m.InIfBoundary), int16(m.OutIfBoundary), m.SamplingRateFromExporter}
}

// BenchmarkDrainEnriched1M is what `make bench` reports for enriched flows:
// in one session, the drain of 1,000,000 plain flows and of the same flows
// enriched (flowtest.Enrich: names, countries, networks, interfaces, as the
// enricher writes them), each from the real broker into its own database,
// alternated twice (best of two each: the shared machine is noisy), then a
// plain text COPY of the enriched rows into the same table.
func BenchmarkDrainEnriched1M(b *testing.B) {
	const total = 1_000_000
	k := testenv.SharedKafka(b)
	pg := testenv.StartPostgres(b)
	setFsync(b, pg.DSN())
	base := time.Now().Add(-30 * time.Minute)
	plainTopic, enrichedTopic := testenv.UniqueName(b)+"-plain", testenv.UniqueName(b)+"-enriched"
	k.CreateTopic(b, plainTopic, 6)
	k.CreateTopic(b, enrichedTopic, 6)
	want := flowtest.ProduceFlows(b, k.Brokers(), plainTopic, 1, total, 1, base)
	if got := flowtest.ProduceEnrichedFlows(b, k.Brokers(), enrichedTopic, 1, total, 1, base); got != want {
		b.Fatalf("enriched totals %v, plain %v", got, want)
	}
	drain := func(kind, topic, dsn string) time.Duration {
		in, err := New(Config{Brokers: k.Brokers(), Topic: topic, Group: "bench", PostgresDSN: dsn, KafkaVersion: k.Version()}, testLogger(b), newRegistry())
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		goCPU0, pgCPU0 := processCPU(), serverCPU(b, pg.DSN())
		t0 := time.Now()
		// Labelled, so that a CPU profile (-cpuprofile) tells the two
		// drains apart: go tool pprof -tagfocus drain=enriched.
		go pprof.Do(ctx, pprof.Labels("drain", kind), func(ctx context.Context) { done <- in.Run(ctx) })
		for in.Stored() < total {
			select {
			case err := <-done:
				b.Fatalf("Run returned %v after %d flows", err, in.Stored())
			case <-time.After(5 * time.Millisecond):
			}
			if time.Since(t0) > 5*time.Minute {
				b.Fatalf("drained only %d flows in 5 minutes", in.Stored())
			}
		}
		d := time.Since(t0)
		// Before Run returns: the server's CPU counts its live backends.
		goCPU, pgCPU := processCPU()-goCPU0, serverCPU(b, pg.DSN())-pgCPU0
		cancel()
		<-done
		flowtest.Check(b, dsn, want)
		b.Logf("%s drain: %s; CPU used: inserter (this process) %.1fs, PostgreSQL %.1fs", kind, d.Round(time.Millisecond), goCPU.Seconds(), pgCPU.Seconds())
		return d
	}
	b.ResetTimer()
	best := map[string]time.Duration{}
	var enrichedDSN string
	for round := range 2 {
		for _, topic := range []string{plainTopic, enrichedTopic} {
			dsn := pg.CreateDB(b, testenv.UniqueName(b)+fmt.Sprintf("-%d-%d", round, len(best)))
			kind := "plain"
			if topic == enrichedTopic {
				kind = "enriched"
			}
			d := drain(kind, topic, dsn)
			b.Logf("round %d: %s drained in %s", round+1, topic, d.Round(time.Millisecond))
			if old, ok := best[topic]; !ok || d < old {
				best[topic] = d
			}
			if topic == enrichedTopic {
				enrichedDSN = dsn
			}
		}
	}
	b.StopTimer()

	// Plain COPY of the enriched rows, from a file, into the same table.
	bg := context.Background()
	conn, err := pgx.Connect(bg, enrichedDSN)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(bg)
	file := filepath.Join(b.TempDir(), "flows.copy")
	f, err := os.Create(file)
	if err != nil {
		b.Fatal(err)
	}
	cols := strings.Join(pgsink.ColumnNames(), ", ")
	if _, err := conn.PgConn().CopyTo(bg, f, "COPY (SELECT "+cols+" FROM flows) TO STDOUT"); err != nil {
		b.Fatal(err)
	}
	f.Close()
	mustExec(b, conn, "TRUNCATE flows, flows_5m, flows_5m_enriched")
	mustExec(b, conn, "CHECKPOINT")
	if f, err = os.Open(file); err != nil {
		b.Fatal(err)
	}
	t1 := time.Now()
	tag, err := conn.PgConn().CopyFrom(bg, bufio.NewReaderSize(f, 1<<20), "COPY flows ("+cols+") FROM STDIN")
	copyDur := time.Since(t1)
	f.Close()
	if err != nil || tag.RowsAffected() != total {
		b.Fatalf("plain COPY: %v, %d rows", err, tag.RowsAffected())
	}
	plainRate := total / best[plainTopic].Seconds()
	enrichedRate := total / best[enrichedTopic].Seconds()
	copyRate := total / copyDur.Seconds()
	fmt.Printf("\n%-46s %10s %9s %12s\n%-46s %10d %9.2f %12.0f\n%-46s %10d %9.2f %12.0f\n%-46s %10d %9.2f %12.0f\n"+
		"PostgreSQL with fsync=on; best of two alternating drains each\n"+
		"enriched drain / plain drain = %.2fx (target >= 0.85x)   enriched drain / plain COPY of the enriched rows = %.2fx\n",
		"method", "rows", "seconds", "rows/s",
		"inserter drain, plain flows", total, best[plainTopic].Seconds(), plainRate,
		"inserter drain, enriched flows", total, best[enrichedTopic].Seconds(), enrichedRate,
		"plain COPY of the enriched rows (text)", total, copyDur.Seconds(), copyRate,
		enrichedRate/plainRate, enrichedRate/copyRate)
	b.ReportMetric(plainRate, "plain_drain_rows/s")
	b.ReportMetric(enrichedRate, "enriched_drain_rows/s")
	b.ReportMetric(copyRate, "enriched_copy_rows/s")
	b.ReportMetric(enrichedRate/plainRate, "enriched/plain")
}

// processCPU is the CPU time (user + system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU is the CPU time the PostgreSQL server at dsn has used: its
// postmaster's, the children it has reaped, and the live ones (Linux /proc).
func serverCPU(b *testing.B, dsn string) time.Duration {
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	var dir string
	if err := conn.QueryRow(context.Background(), "SHOW data_directory").Scan(&dir); err != nil {
		b.Fatal(err)
	}
	pidFile, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		b.Fatal(err)
	}
	postmaster, _, _ := strings.Cut(string(pidFile), "\n")
	// Fields after the command: state ppid ... utime(14) stime(15) cutime(16) cstime(17), in clock ticks.
	stat := func(pid string) (ppid string, ticks []int64) {
		data, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return "", nil
		}
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
		for _, v := range f[11:15] {
			n, _ := strconv.ParseInt(v, 10, 64)
			ticks = append(ticks, n)
		}
		return f[1], ticks
	}
	_, t := stat(postmaster)
	if t == nil {
		b.Fatalf("no /proc entry for the postmaster %s", postmaster)
	}
	total := t[0] + t[1] + t[2] + t[3]
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if ppid, t := stat(e.Name()); ppid == postmaster && t != nil {
			total += t[0] + t[1]
		}
	}
	const ticksPerSecond = 100 // USER_HZ
	return time.Duration(total) * time.Second / ticksPerSecond
}

// resetPeakRSS resets VmHWM (Linux: writing 5 to clear_refs).
func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func readStatusKB(field string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// sampleRSS records the largest VmRSS (kB) seen every 20 ms until stopped.
func sampleRSS(peak *atomic.Int64) (stop func()) {
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if v := readStatusKB("VmRSS"); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(quit); <-finished }
}
