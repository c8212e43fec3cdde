package pgserver

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// proc is the postmaster, in its own process group: a terminal's Ctrl-C
// reaches only our process (which then stops the server in order), and Kill
// takes the backends down with the postmaster, as a crash would.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // Wait's result, set before done is closed
}

// startProc starts cmd with its output appended to logPath, as cred when
// not nil.
func startProc(cmd *exec.Cmd, logPath string, cred *syscall.Credential) (*proc, error) {
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "=== pgserver %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr(cred)
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop signals the process and waits up to grace for it and its group to
// exit, then kills them; it reports whether the stop was clean.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) bool {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		waitGroupGone(p.cmd.Process.Pid)
		return true
	case <-time.After(grace):
		p.kill()
		return false
	}
}

// kill SIGKILLs the whole process group and waits until all of it is gone:
// a restart fails while an orphaned backend still holds the old shared
// memory.
func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	waitGroupGone(p.cmd.Process.Pid)
}

func waitGroupGone(pgid int) {
	for deadline := time.Now().Add(10 * time.Second); groupAlive(pgid) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}
