package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// startAttrs puts the child in a process group of its own, so that a Ctrl-C
// at the terminal reaches only the benchmark, which then stops its children
// in order, and so that stop can kill the whole group (nginx's workers
// with their master). And it has the kernel send SIGTERM to the child if the
// benchmark dies without stopping it (killed with SIGKILL, say), so no
// gateway is left holding a port.
func startAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// killGroup kills every process of the group that pid leads.
func killGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }

// memory is what /proc/<pid>/status says of a process's memory, in bytes.
type memory struct {
	// RSS is the resident set (VmRSS); Anon the part of it that is not
	// mapped from files (RssAnon): the heap and stacks, without the binary
	// and an embedded store's mapped file.
	RSS, Anon int64
	// Peak is the largest RSS since the process started (VmHWM).
	Peak int64
}

// readMemory reads the memory of process pid.
func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memory{}, fmt.Errorf("memory: %w", err)
	}
	var m memory
	found := 0
	for line := range bytes.Lines(b) {
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(name) {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.Peak
		case "RssAnon":
			dst = &m.Anon
		default:
			continue
		}
		// "VmRSS:\t  123456 kB"
		kb, ok := bytes.CutSuffix(bytes.TrimSpace(rest), []byte(" kB"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(kb)), 10, 64)
		if !ok || err != nil {
			return memory{}, fmt.Errorf("memory: pid %d: unexpected %q", pid, bytes.TrimSpace(line))
		}
		*dst = n << 10
		found++
	}
	if found != 3 {
		return memory{}, fmt.Errorf("memory: pid %d: no VmRSS, VmHWM and RssAnon in /proc/%d/status", pid, pid)
	}
	return m, nil
}

// rss returns the resident set size of process pid, in bytes.
func rss(pid int) (int64, error) {
	m, err := readMemory(pid)
	return m.RSS, err
}

// clockTicks is the unit of the CPU times in /proc/<pid>/stat (USER_HZ),
// which is 100 on every Linux architecture Go runs on.
const clockTicks = 100

// cpuTime returns the CPU time process pid has used so far, in user and
// kernel mode together: utime and stime in /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
	// the fields are counted from the last ')'. utime and stime are the 14th
	// and 15th fields, the 12th and 13th after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu time: pid %d: unexpected /proc/%d/stat", pid, pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu time: pid %d: unexpected /proc/%d/stat", pid, pid)
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cpu time: pid %d: unexpected /proc/%d/stat", pid, pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// children returns the ids of process pid's children (nginx's workers, for
// its master), from /proc/<pid>/task/<tid>/children: each thread lists the
// children it forked.
func children(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var ids []int
	for _, t := range tasks {
		b, err := os.ReadFile(dir + t.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range bytes.Fields(b) {
			if id, err := strconv.Atoi(string(f)); err == nil {
				ids = append(ids, id)
			}
		}
	}
	return ids
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
