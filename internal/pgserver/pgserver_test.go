package pgserver_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/internal/pgserver"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// tempDir is a directory the server user can reach when we are root:
// t.TempDir makes its directories 0700.
func tempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir() // <TMPDIR>/<TestName><n>/<seq>
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// requireBinaries skips (or fails under FLOWPIPELINE_REQUIRE_SERVICES=1)
// when this machine has no PostgreSQL server.
func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := pgserver.FindBinDir(); err != nil {
		testenv.Unavailable(t, "PostgreSQL server binaries: %v", err)
	}
}

func queryInt(t *testing.T, dsn, sql string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	defer conn.Close(context.Background())
	var n int64
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func execSQL(t *testing.T, dsn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestLifecycle: initdb, query, stop, restart on the same data (it
// persists, the port stays), crash and recover, then a second Server on
// the same directory reuses the cluster without initdb.
func TestLifecycle(t *testing.T) {
	requireBinaries(t)
	ctx := context.Background()
	data := filepath.Join(tempDir(t), "pgdata")
	s, err := pgserver.Start(ctx, pgserver.Options{DataDir: data, NoSync: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.Running() {
			s.Stop()
		}
	})
	if !s.Created() {
		t.Error("Created() = false for a fresh data directory")
	}
	if s.Port() == 0 {
		t.Fatal("Port() = 0 after Start")
	}
	port := s.Port()
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		t.Fatalf("no cluster in %s: %v", data, err)
	}

	execSQL(t, s.DSN(), "CREATE TABLE t (v bigint); INSERT INTO t SELECT generate_series(1, 1000)")
	if got := queryInt(t, s.DSN(), "SELECT sum(v) FROM t"); got != 500500 {
		t.Fatalf("sum = %d, want 500500", got)
	}

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Fatal("Running() after Stop")
	}
	if err := s.Stop(); err == nil {
		t.Error("second Stop: want an error")
	}
	if _, err := pgx.Connect(ctx, s.DSN()+"&connect_timeout=1"); err == nil {
		t.Fatal("connected after Stop")
	}

	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Port() != port {
		t.Errorf("port changed across restart: %d then %d", port, s.Port())
	}
	if got := queryInt(t, s.DSN(), "SELECT count(*) FROM t"); got != 1000 {
		t.Fatalf("after restart: %d rows, want 1000", got)
	}

	// A committed row survives a crash.
	execSQL(t, s.DSN(), "INSERT INTO t VALUES (1001)")
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatalf("restart after Kill: %v", err)
	}
	if got := queryInt(t, s.DSN(), "SELECT sum(v) FROM t"); got != 501501 {
		t.Fatalf("after crash recovery: sum = %d, want 501501", got)
	}
	if err := s.Start(ctx); err == nil {
		t.Error("Start while running: want an error")
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}

	// A new Server on the same directory reuses the cluster.
	s2, err := pgserver.Start(ctx, pgserver.Options{DataDir: data, NoSync: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop()
	if s2.Created() {
		t.Error("Created() = true when reusing a cluster")
	}
	if got := queryInt(t, s2.DSN(), "SELECT count(*) FROM t"); got != 1001 {
		t.Fatalf("reused cluster: %d rows, want 1001", got)
	}
	log, err := os.ReadFile(s2.LogPath())
	if err != nil || !strings.Contains(string(log), "database system is ready") {
		t.Errorf("log %s lacks the server's start line (err %v)", s2.LogPath(), err)
	}

	// NoSync's fsync = off is in postgresql.conf, where ALTER SYSTEM (a
	// benchmark wanting real commits) can still override it.
	if got := queryInt(t, s2.DSN(), "SELECT (current_setting('fsync') = 'off')::int"); got != 1 {
		t.Fatal("fsync is on in a NoSync cluster")
	}
	execSQL(t, s2.DSN(), "ALTER SYSTEM SET fsync = on")
	execSQL(t, s2.DSN(), "SELECT pg_reload_conf()")
	for deadline := time.Now().Add(5 * time.Second); queryInt(t, s2.DSN(), "SELECT (current_setting('fsync') = 'on')::int") != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("ALTER SYSTEM SET fsync = on did not take effect")
		}
	}
}

func TestFixedPort(t *testing.T) {
	requireBinaries(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port

	dir := tempDir(t)
	s, err := pgserver.New(pgserver.Options{DataDir: filepath.Join(dir, "a"), Port: port, NoSync: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "port "+strconv.Itoa(port)+" on 127.0.0.1 is in use") {
		t.Fatalf("Start on a busy port: got %v, want a clear 'in use' error", err)
	}
	l.Close()
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if !strings.Contains(s.DSN(), ":"+strconv.Itoa(port)+"/") {
		t.Errorf("DSN %s does not use port %d", s.DSN(), port)
	}
	if got := queryInt(t, s.DSN(), "SELECT current_setting('port')::int"); got != int64(port) {
		t.Errorf("server port %d, want %d", got, port)
	}
}

func TestMissingBinaries(t *testing.T) {
	t.Setenv(pgserver.BinEnv, "/nonexistent")
	_, err := pgserver.New(pgserver.Options{DataDir: t.TempDir()}, nil)
	if !errors.Is(err, pgserver.ErrNotFound) {
		t.Fatalf("New with %s=/nonexistent: got %v, want ErrNotFound", pgserver.BinEnv, err)
	}
	if !strings.Contains(err.Error(), pgserver.BinEnv) {
		t.Errorf("error does not name %s: %v", pgserver.BinEnv, err)
	}
	_, err = pgserver.New(pgserver.Options{DataDir: t.TempDir(), BinDir: t.TempDir()}, nil)
	if !errors.Is(err, pgserver.ErrNotFound) || !strings.Contains(err.Error(), "apt-get install postgresql") {
		t.Fatalf("New with an empty BinDir: got %v, want ErrNotFound naming the package", err)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []pgserver.Options{{}, {DataDir: "x", Port: -1}, {DataDir: "x", Port: 70000}, {DataDir: "x", StartTimeout: -time.Second}} {
		if _, err := pgserver.New(o, nil); err == nil {
			t.Errorf("New(%+v): want an error", o)
		}
	}
}

func TestNotACluster(t *testing.T) {
	requireBinaries(t)
	dir := tempDir(t)
	if err := os.WriteFile(filepath.Join(dir, "junk"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := pgserver.New(pgserver.Options{DataDir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "neither empty nor a PostgreSQL cluster") {
		t.Fatalf("Start on a non-empty non-cluster directory: got %v", err)
	}
}
