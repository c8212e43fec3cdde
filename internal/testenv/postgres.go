package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	pgStartTimeout = 30 * time.Second
	pgStopTimeout  = 30 * time.Second
)

// Postgres is a throwaway PostgreSQL server: fresh data directory, trust
// authentication, superuser "postgres", listening on 127.0.0.1 only.
type Postgres struct {
	bin  string              // directory holding initdb and postgres
	dir  string              // postgres.log and data/
	port int                 // kept across restarts
	cred *syscall.Credential // user to run as when we are root, else nil

	mu sync.Mutex
	p  *proc
}

// StartPostgres starts a private server for this test, stopped and removed
// when the test ends. Use it when the test stops or kills the server;
// otherwise prefer SharedPostgres with CreateDB.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	start := time.Now()
	pg, err := startPostgres()
	if err != nil {
		report(t, "PostgreSQL", err)
		return nil
	}
	t.Cleanup(pg.close)
	t.Logf("testenv: PostgreSQL (%s) on 127.0.0.1:%d started in %s", pg.bin, pg.port, time.Since(start).Round(time.Millisecond))
	return pg
}

// SharedPostgres returns this test binary's server, starting it on first
// use; testenv.Main stops it. Tests must not stop it and should each use
// their own database (CreateDB).
func SharedPostgres(t testing.TB) *Postgres {
	t.Helper()
	requireMain(t, "SharedPostgres")
	shared.Lock()
	defer shared.Unlock()
	if shared.pg == nil && shared.pgErr == nil {
		start := time.Now()
		shared.pg, shared.pgErr = startPostgres()
		if shared.pgErr == nil {
			t.Logf("testenv: shared PostgreSQL (%s) on 127.0.0.1:%d started in %s", shared.pg.bin, shared.pg.port, time.Since(start).Round(time.Millisecond))
		}
	}
	if shared.pgErr != nil {
		report(t, "PostgreSQL", shared.pgErr)
		return nil
	}
	return shared.pg
}

// DSN is the URL of the server's "postgres" database.
func (pg *Postgres) DSN() string { return pg.dsn("postgres") }

func (pg *Postgres) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", pg.port, url.PathEscape(db))
}

// CreateDB creates an empty database, dropped when the test ends, and
// returns its DSN. Tests sharing a server stay apart this way.
func (pg *Postgres) CreateDB(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %q: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE: a pool the test forgot to close must not keep the database.
		if err := pg.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("testenv: drop database %q: %v", name, err)
		}
	})
	return pg.dsn(name)
}

func (pg *Postgres) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Start restarts a stopped server on the same port and data and waits until
// it accepts connections (after crash recovery, following Kill).
func (pg *Postgres) Start() error {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.p != nil && !pg.p.exited() {
		return errors.New("testenv: PostgreSQL is already running")
	}
	// postgres directly rather than pg_ctl: we own its pid, so Stop and Kill
	// signal the server itself.
	cmd := exec.Command(filepath.Join(pg.bin, "postgres"), "-D", pg.dataDir())
	cmd.Dir = pg.dir
	cmd.Env = cleanEnv()
	p, err := startProc(cmd, pg.logPath(), pg.cred)
	if err != nil {
		return err
	}
	pg.p = p
	for deadline := time.Now().Add(pgStartTimeout); ; time.Sleep(50 * time.Millisecond) {
		if p.exited() {
			return fmt.Errorf("PostgreSQL exited during start (%v)\n%s", p.err, tail(pg.logPath(), 40))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := pg.exec(ctx, "SELECT 1")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("PostgreSQL did not accept connections within %s (last error: %v)\n%s", pgStartTimeout, err, tail(pg.logPath(), 40))
		}
	}
}

// Stop shuts the server down ("fast" shutdown: SIGINT, sessions are ended)
// and waits for it to exit.
func (pg *Postgres) Stop() error {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.p == nil || pg.p.exited() {
		return errors.New("testenv: PostgreSQL is not running")
	}
	pg.p.stop(syscall.SIGINT, pgStopTimeout)
	return nil
}

// Kill crashes the server (SIGKILL to the postmaster and every backend);
// Start then runs crash recovery.
func (pg *Postgres) Kill() error {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.p == nil || pg.p.exited() {
		return errors.New("testenv: PostgreSQL is not running")
	}
	pg.p.kill()
	return nil
}

func (pg *Postgres) dataDir() string { return filepath.Join(pg.dir, "data") }
func (pg *Postgres) logPath() string { return filepath.Join(pg.dir, "postgres.log") }

// close stops the server and removes its directory (test cleanup, Main).
func (pg *Postgres) close() {
	pg.mu.Lock()
	if pg.p != nil && !pg.p.exited() {
		pg.p.stop(syscall.SIGINT, pgStopTimeout)
	}
	pg.mu.Unlock()
	os.RemoveAll(pg.dir)
}

// startPostgres finds the binaries, runs initdb into a fresh directory,
// configures and starts the server. Missing binaries are errUnavailable.
func startPostgres() (*Postgres, error) {
	bin, err := findPGBin()
	if err != nil {
		return nil, err
	}
	cred, err := pgCredential()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := serviceDir("pg")
	if err != nil {
		return nil, err
	}
	pg := &Postgres{bin: bin, dir: dir, port: port, cred: cred}
	if err := pg.setup(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := pg.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return pg, nil
}

func (pg *Postgres) setup() error {
	// The server user must reach data/ through dir, which MkdirTemp made 0700.
	if err := os.Chmod(pg.dir, 0o755); err != nil {
		return err
	}
	data := pg.dataDir()
	if err := os.Mkdir(data, 0o700); err != nil {
		return err
	}
	if pg.cred != nil {
		if err := os.Chown(data, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
			return err
		}
	}
	cmd := exec.Command(filepath.Join(pg.bin, "initdb"), "-D", data,
		"-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C",
		"--no-sync", "--no-instructions")
	cmd.Dir = pg.dir
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		hint := ""
		if pg.cred != nil {
			hint = fmt.Sprintf(" (initdb runs as uid %d: every parent of %s must be traversable by it; set TMPDIR elsewhere if not)", pg.cred.Uid, data)
		}
		return fmt.Errorf("initdb%s: %w\n%s", hint, err, out)
	}
	conf := fmt.Sprintf(`
# Written by internal/testenv.
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
# The data is thrown away after the test. fsync only protects against an OS
# crash or power loss: after a PostgreSQL crash (Kill) written WAL is still in
# the page cache, so crash-recovery tests stay meaningful. Saves time per commit.
fsync = off
`, pg.port, data)
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// findPGBin locates initdb and postgres: $FLOWPIPELINE_PG_BIN, then
// `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin (Debian
// keeps them off PATH), then PATH.
func findPGBin() (string, error) {
	has := func(dir string) bool {
		return isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres"))
	}
	if dir := os.Getenv("FLOWPIPELINE_PG_BIN"); dir != "" {
		if has(dir) {
			return dir, nil
		}
		return "", unavailablef("FLOWPIPELINE_PG_BIN=%s holds no initdb and postgres", dir)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); has(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	major := func(dir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return major(dirs[i]) > major(dirs[j]) })
	for _, dir := range dirs {
		if has(dir) {
			return dir, nil
		}
	}
	if initdb, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(initdb)) {
		return filepath.Dir(initdb), nil
	}
	return "", unavailablef("PostgreSQL server binaries (initdb, postgres) not found; install them (apt-get install postgresql) or set FLOWPIPELINE_PG_BIN")
}

// pgCredential returns the user to run PostgreSQL as: nobody else when we
// are not root, else Debian's "postgres" user (initdb and postgres refuse to
// run as root).
func pgCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, unavailablef("running as root and there is no \"postgres\" user to run PostgreSQL as (it refuses root); create one: useradd --system postgres")
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// cleanEnv is our environment without PG* variables, which would point
// initdb and the server elsewhere (PGDATA, PGPORT, ...).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}
