package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel send SIGTERM to the child if the benchmark dies
// without stopping it (killed with SIGKILL, say), so no gateway is left
// holding a port.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
