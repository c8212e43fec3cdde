//go:build unix && !linux

package testenv

import "syscall"

func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// groupAlive reports whether any process is left in group pgid.
func groupAlive(pgid int) bool { return syscall.Kill(-pgid, 0) == nil }
