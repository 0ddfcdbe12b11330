//go:build !linux

package main

import (
	"errors"
	"os/exec"
	"time"
)

// startAttrs does nothing where the kernel cannot tie a child's life to its
// parent's; the benchmark still stops its children on every normal exit and
// on SIGINT and SIGTERM.
func startAttrs(*exec.Cmd) {}

// killGroup is not needed where startAttrs makes no group: stop kills the
// process itself.
func killGroup(int) {}

// errLinuxOnly is what the CPU and memory measurements answer elsewhere:
// they read /proc.
var errLinuxOnly = errors.New("measuring a process's CPU and memory needs Linux's /proc")

// memory is a process's memory; not measured outside Linux.
type memory struct{ RSS, Anon, Peak int64 }

func readMemory(int) (memory, error) { return memory{}, errLinuxOnly }

func rss(int) (int64, error) { return 0, errLinuxOnly }

func cpuTime(int) (time.Duration, error) { return 0, errLinuxOnly }

func children(int) []int { return nil }

// raiseOpenFiles is not needed where memory is not measured.
func raiseOpenFiles(uint64) (uint64, error) { return 0, errLinuxOnly }
