//go:build !linux

package main

import "os/exec"

// dieWithParent is a no-op where the kernel cannot tie a child's life to its
// parent's; the benchmark still stops its children on every normal exit and
// on SIGINT and SIGTERM.
func dieWithParent(*exec.Cmd) {}
