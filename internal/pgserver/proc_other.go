//go:build !linux

package pgserver

import "syscall"

func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// groupAlive cannot look without /proc; signal 0 to the group tells
// whether any member remains.
func groupAlive(pgid int) bool { return syscall.Kill(-pgid, 0) == nil }
