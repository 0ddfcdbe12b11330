//go:build !linux

package valkeytest

import "syscall"

// sysProcAttr has no parent-death signal to offer outside Linux; there the
// cleanup registered by Start is the only thing that stops the server.
func sysProcAttr() *syscall.SysProcAttr { return nil }
