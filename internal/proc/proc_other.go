//go:build unix && !linux

package proc

import "syscall"

// sysProcAttr cannot ask for a parent-death signal outside Linux: a service
// whose starter crashed must be stopped by hand.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// descendants cannot be listed without /proc: Kill reaches the process
// group only.
func descendants(int) []int { return nil }

// alive reports whether any process is left in group pgid or among pids;
// signal 0 tells, though it cannot tell a zombie from a live process.
func alive(pgid int, pids []int) bool {
	if syscall.Kill(-pgid, 0) == nil {
		return true
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			return true
		}
	}
	return false
}
