//go:build !linux

package main

import (
	"errors"
	"os/exec"
)

// dieWithParent is a no-op where the kernel cannot tie a child's life to its
// parent's; the benchmark still stops its children on every normal exit and
// on SIGINT and SIGTERM.
func dieWithParent(*exec.Cmd) {}

// errLinuxOnly is what the memory measurements answer elsewhere: they read
// /proc.
var errLinuxOnly = errors.New("measuring a process's memory needs Linux's /proc")

// rss is not measured outside Linux.
func rss(int) (int64, error) { return 0, errLinuxOnly }

// raiseOpenFiles is not needed where memory is not measured.
func raiseOpenFiles(uint64) (uint64, error) { return 0, errLinuxOnly }
