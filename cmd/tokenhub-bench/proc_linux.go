package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// dieWithParent has the kernel send SIGTERM to the child if the benchmark dies
// without stopping it (killed with SIGKILL, say), so no gateway is left
// holding a port.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

// rss returns the resident set size of process pid, in bytes: VmRSS in
// /proc/<pid>/status.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("rss: %w", err)
	}
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		// "VmRSS:\t  123456 kB"
		kb, ok := bytes.CutSuffix(bytes.TrimSpace(rest), []byte(" kB"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(kb)), 10, 64)
		if !ok || err != nil {
			return 0, fmt.Errorf("rss: pid %d: unexpected %q", pid, bytes.TrimSpace(line))
		}
		return n << 10, nil
	}
	return 0, fmt.Errorf("rss: pid %d: no VmRSS in /proc/%d/status", pid, pid)
}

// raiseOpenFiles sets this process's open-file limit, which the processes it
// starts from now on inherit, to want if it can: above the hard limit only
// with the privilege to raise that (CAP_SYS_RESOURCE, as root), else as far
// as the hard limit. It returns the limit then in force.
func raiseOpenFiles(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("open-file limit: %w", err)
	}
	if lim.Max < want {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return want, nil
		}
	}
	// Set even when the soft limit is high enough already: Go raised it for
	// this process at start, but would give children the original one.
	lim.Cur = min(lim.Max, max(want, lim.Cur))
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("open-file limit: %w", err)
	}
	return lim.Cur, nil
}
