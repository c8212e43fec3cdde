// Package testenv starts the services flow-pipeline's tests run against:
// an in-process fake Kafka (kfake), a real Apache Kafka 4 broker (a JVM
// started from the jars `make kafka-libs` fetches) or a cluster of them
// (StartKafkaCluster), and a throwaway PostgreSQL server. Nothing here
// needs Docker.
//
// A missing service (no java, no jars, no PostgreSQL binaries) skips the
// test loudly, or fails it when FLOWPIPELINE_REQUIRE_SERVICES=1 (set by CI),
// so a CI run can never pass by skipping everything.
//
// Starting a JVM costs seconds, so packages share one broker and one
// PostgreSQL server per test binary through SharedKafka and SharedPostgres;
// such a package must call Main from its TestMain so they are stopped:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// RequireServices reports whether a missing service must fail tests rather
// than skip them (FLOWPIPELINE_REQUIRE_SERVICES=1, set by .ci/run).
func RequireServices() bool { return os.Getenv("FLOWPIPELINE_REQUIRE_SERVICES") == "1" }

// Unavailable reports a service the test needs but cannot have: it skips the
// test with a loud reason, or fails it when RequireServices is true.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if RequireServices() {
		t.Fatalf("FAILED: %s (FLOWPIPELINE_REQUIRE_SERVICES=1 forbids skipping)", msg)
		return // only reached with a fake testing.TB
	}
	t.Skipf("SKIPPED: %s", msg)
}

// errUnavailable marks start errors caused by a missing prerequisite, which
// are reported with Unavailable instead of failing outright.
var errUnavailable = errors.New("unavailable")

func unavailablef(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUnavailable}, args...)...)
}

// report turns a start error into a skip (missing prerequisite) or a failure.
func report(t testing.TB, what string, err error) {
	t.Helper()
	if errors.Is(err, errUnavailable) {
		msg := strings.TrimPrefix(err.Error(), errUnavailable.Error()+": ")
		Unavailable(t, "%s unavailable: %s", what, msg)
		return
	}
	t.Fatalf("%s: %v", what, err)
}

// service is what testenv starts: a broker or a database server.
type service interface {
	describe() string // what runs where, for the test log
	close()           // stop it and remove its directory
}

// start starts a service for test t only, closed when the test ends. A
// failed start skips or fails t (report) and returns nil.
func start[S service](t testing.TB, what string, startFn func() (S, error)) S {
	t.Helper()
	begin := time.Now()
	s, err := startFn()
	if err != nil {
		report(t, what, err)
		var none S
		return none
	}
	t.Cleanup(s.close)
	t.Logf("testenv: %s started in %s", s.describe(), time.Since(begin).Round(time.Millisecond))
	return s
}

// shared is a service of the whole test binary, started by the first test
// that asks for it and closed by Main. A failed start is remembered so later
// tests do not wait for it again.
type shared[S service] struct {
	what  string // for report
	start func() (S, error)

	mu    sync.Mutex
	tried bool
	s     S
	err   error
}

// get returns the service, starting it on first use; fn is the exported
// function asking, for the message when Main is missing.
func (sh *shared[S]) get(t testing.TB, fn string) S {
	t.Helper()
	requireMain(t, fn)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !sh.tried {
		sh.tried = true
		begin := time.Now()
		sh.s, sh.err = sh.start()
		if sh.err == nil {
			t.Logf("testenv: shared %s started in %s", sh.s.describe(), time.Since(begin).Round(time.Millisecond))
		}
	}
	if sh.err != nil {
		report(t, sh.what, sh.err)
		var none S
		return none
	}
	return sh.s
}

func (sh *shared[S]) close() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.tried && sh.err == nil {
		sh.s.close()
	}
}

var mainCalled atomic.Bool

// Main runs the tests, then stops the shared services. Call it from
// TestMain in every package that uses SharedKafka or SharedPostgres.
func Main(m *testing.M) {
	mainCalled.Store(true)
	code := m.Run()
	sharedKafka.close()
	sharedPG.close()
	os.Exit(code)
}

// requireMain fails a test that uses a shared service without Main: nothing
// would stop the service nor remove its directory.
func requireMain(t testing.TB, fn string) {
	t.Helper()
	if !mainCalled.Load() {
		t.Fatalf("testenv.%s needs `func TestMain(m *testing.M) { testenv.Main(m) }` in this package so the shared service is stopped", fn)
	}
}

var nameSeq atomic.Int64

// UniqueName returns a name unique within this test binary, derived from the
// test's name, valid both as a Kafka topic and a PostgreSQL database name.
// Tests on shared services use it so they never see each other's data.
func UniqueName(t testing.TB) string {
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	base := b.String()
	if len(base) > 40 {
		base = base[:40]
	}
	return fmt.Sprintf("t_%s_%d", base, nameSeq.Add(1))
}

// repoRoot walks up from the working directory (a package dir under `go
// test`) to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// serviceDir makes a fresh directory for a service, named after it and
// holding the test binary's pid. Cleanup removes it, but a binary that dies
// abruptly (timeout, ^C, os.Exit in a test) cannot; so first remove the
// directories of binaries that no longer run (their services died with them,
// see internal/proc), and those a removal half-emptied (no owner.pid).
func serviceDir(kind string) (string, error) {
	prefix := "flowpipeline-" + kind + "-"
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, dir := range old {
		data, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			// Being created right now, unless it has long been so.
			if fi, err := os.Stat(dir); err == nil && time.Since(fi.ModTime()) > 10*time.Minute {
				os.RemoveAll(dir)
			}
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err == nil && pid > 0 && syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(dir)
		}
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}
