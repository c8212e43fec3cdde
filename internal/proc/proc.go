// Package proc runs the service processes of flow-pipeline's tools and
// tests (a PostgreSQL postmaster, a Kafka JVM) as children that cannot
// outlive us: each in its own process group, so that a terminal's Ctrl-C
// reaches only our process, which then stops the service in order; on Linux
// each also gets SIGKILL when our process dies. Kill takes the service's own
// children (PostgreSQL backends) down with it, as a crash would.
package proc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// ErrExited means the process exited while AwaitReady waited for it.
var ErrExited = errors.New("the process exited")

// Proc is a started child process.
type Proc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has exited
	err     error         // Wait's result, set before done is closed
}

// Start starts cmd in its own process group with its output appended to
// logPath, as the user cred when not nil (services such as PostgreSQL refuse
// to run as root). cmd's Stdout, Stderr and SysProcAttr are set here.
func Start(cmd *exec.Cmd, logPath string, cred *syscall.Credential) (*Proc, error) {
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the log of %s: %w", cmd.Path, err)
	}
	fmt.Fprintf(log, "=== %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr(cred)
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &Proc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

// Running reports whether the process is alive; false for a nil Proc.
func (p *Proc) Running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Wait waits for the process to exit and returns how it ended, as
// exec.Cmd.Wait does; it may be called any number of times.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Stop signals the process and waits up to grace for it and the rest of
// its group to exit, then kills them; it reports whether the stop was clean.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) bool {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		waitGone(p.cmd.Process.Pid, nil)
		return true
	case <-time.After(grace):
		p.Kill()
		return false
	}
}

// Kill SIGKILLs the process, its group and (on Linux) all its descendants,
// and waits until all of them are gone: PostgreSQL backends each lead a
// session of their own, so the group alone misses them, and a restart fails
// while an orphaned backend still holds the old shared memory.
func (p *Proc) Kill() {
	pid := p.cmd.Process.Pid
	// Frozen, it forks nothing we would miss while we list its descendants.
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	kids := descendants(pid)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for _, kid := range kids {
		_ = syscall.Kill(kid, syscall.SIGKILL)
	}
	<-p.done
	waitGone(pid, kids)
}

// AwaitReady calls ready every interval until it succeeds. It fails with
// ErrExited when the process exits first, and kills the process and fails
// when ctx ends first; both errors carry ready's last error.
func (p *Proc) AwaitReady(ctx context.Context, interval time.Duration, ready func(context.Context) error) error {
	for {
		if !p.Running() {
			return fmt.Errorf("%w (%v)", ErrExited, p.err)
		}
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			p.Kill()
			return fmt.Errorf("no answer in time (last error: %v)", err)
		case <-p.done:
		case <-time.After(interval):
		}
	}
}

// LogTail returns the last n lines of the process's log, headed by its
// path, for error messages.
func (p *Proc) LogTail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- last %d lines of %s ---\n%s", len(lines), p.logPath, strings.Join(lines, "\n"))
}

// waitGone waits up to 10 s until no live process is left in group pgid or
// among pids.
func waitGone(pgid int, pids []int) {
	for deadline := time.Now().Add(10 * time.Second); alive(pgid, pids) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

// FreePort returns a TCP port free on 127.0.0.1 right now. Another process
// may take it before the caller's service binds it; on a test or demo
// machine that is rare enough.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
