package valkeytest

import "syscall"

// sysProcAttr makes the kernel kill valkey-server when the test process dies
// without running its cleanups (a panic in another goroutine, a timeout,
// SIGKILL), so crashed tests leave no servers behind. Pdeathsig fires when
// the forking OS thread exits; the Go runtime keeps its threads for the life
// of the process unless a goroutine exits while locked to one, which this
// package never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
