package proc

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func startSh(t *testing.T, script string) *Proc {
	t.Helper()
	p, err := Start(exec.Command("sh", "-c", script), filepath.Join(t.TempDir(), "log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.Running() {
			p.Kill()
		}
	})
	return p
}

func TestStop(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		clean        bool
	}{
		{"obeys", "exec sleep 60", true},
		{"ignores", "trap '' TERM; sleep 60", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startSh(t, tc.script)
			time.Sleep(100 * time.Millisecond) // let sh set its trap
			if !p.Running() {
				t.Fatal("not running after Start")
			}
			if clean := p.Stop(syscall.SIGTERM, time.Second); clean != tc.clean {
				t.Errorf("Stop reported clean=%v, want %v", clean, tc.clean)
			}
			if p.Running() {
				t.Error("running after Stop")
			}
			if err := p.Wait(); err == nil {
				t.Error("Wait = nil for a signalled process")
			}
		})
	}
}

// Kill takes down the group and every descendant, also one that leads a
// session of its own, as each PostgreSQL backend does.
func TestKill(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("descendants are found through /proc")
	}
	p := startSh(t, "setsid sleep 60 & echo $!; sleep 60 & sleep 60")
	var kid int
	for deadline := time.Now().Add(5 * time.Second); kid == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the shell did not report its setsid child")
		}
		data, _ := os.ReadFile(p.logPath)
		_, line, _ := strings.Cut(string(data), "\n") // after Start's header
		kid, _ = strconv.Atoi(strings.TrimSpace(line))
	}
	pid := p.cmd.Process.Pid
	if !alive(pid, nil) || !alive(-1, []int{kid}) {
		t.Fatal("alive = false for running processes")
	}
	if !slices.Contains(descendants(pid), kid) {
		t.Fatalf("descendants(%d) = %v, lacks %d", pid, descendants(pid), kid)
	}
	p.Kill()
	if p.Running() || alive(pid, []int{kid}) {
		t.Fatal("a process is still alive after Kill")
	}
}

func TestAwaitReady(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		p := startSh(t, "exec sleep 60")
		calls := 0
		err := p.AwaitReady(context.Background(), time.Millisecond, func(context.Context) error {
			if calls++; calls < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		if err != nil || calls != 3 {
			t.Fatalf("AwaitReady = %v after %d calls, want nil after 3", err, calls)
		}
	})
	t.Run("exited", func(t *testing.T) {
		p := startSh(t, "exit 3")
		err := p.AwaitReady(context.Background(), 10*time.Millisecond, func(context.Context) error { return errors.New("no") })
		if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "exit status 3") {
			t.Fatalf("AwaitReady = %v, want ErrExited with the exit status", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		p := startSh(t, "exec sleep 60")
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err := p.AwaitReady(ctx, 10*time.Millisecond, func(context.Context) error { return errors.New("refused") })
		if err == nil || errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("AwaitReady = %v, want a timeout naming the last error", err)
		}
		if p.Running() {
			t.Error("still running after a timed-out AwaitReady")
		}
	})
}

func TestLogTail(t *testing.T) {
	p := startSh(t, "echo one; echo two >&2; echo three")
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	got := p.LogTail(2)
	if !strings.HasSuffix(got, "\ntwo\nthree") || strings.Contains(got, "one") || !strings.Contains(got, p.logPath) {
		t.Errorf("LogTail(2) = %q, want the path then two and three", got)
	}
}

func TestFreePort(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("FreePort returned %d, which cannot be bound: %v", port, err)
	}
	l.Close()
}
