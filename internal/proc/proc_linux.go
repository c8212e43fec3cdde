package proc

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid:    true,
		Credential: cred,
		// Kill the service if we die without stopping it (a crash, kill -9,
		// a test binary's timeout): nothing outlives the process that started
		// it, so the next run finds its ports and directories free. Go sets
		// it after switching credentials, which would clear it.
		Pdeathsig: syscall.SIGKILL,
	}
}

// stat is what we use of /proc/<pid>/stat.
type stat struct {
	pid, ppid, pgrp int
	live            bool // neither zombie nor dead
}

func stats() []stat {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	out := make([]stat, 0, len(paths))
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		// Fields after the ")" closing the command name: state ppid pgrp ...
		i := strings.LastIndexByte(string(data), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 3 {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		ppid, _ := strconv.Atoi(f[1])
		pgrp, _ := strconv.Atoi(f[2])
		out = append(out, stat{pid: pid, ppid: ppid, pgrp: pgrp, live: f[0] != "Z" && f[0] != "X"})
	}
	return out
}

// descendants lists the children of pid, their children, and so on.
func descendants(pid int) []int {
	children := map[int][]int{}
	for _, s := range stats() {
		children[s.ppid] = append(children[s.ppid], s.pid)
	}
	var out []int
	for queue := children[pid]; len(queue) > 0; queue = queue[1:] {
		out = append(out, queue[0])
		queue = append(queue, children[queue[0]]...)
	}
	return out
}

// alive reports whether a live process is in group pgid or among pids.
// Zombies count as gone: orphans reparented to a PID 1 that never reaps
// them would otherwise look alive forever.
func alive(pgid int, pids []int) bool {
	for _, s := range stats() {
		if s.live && (s.pgrp == pgid || slices.Contains(pids, s.pid)) {
			return true
		}
	}
	return false
}
