//go:build !linux

package load

import "time"

// lockTimerThread does nothing where the kernel's timer slack cannot be set.
func lockTimerThread() (unlock func()) { return func() {} }

// nanosleep is time.Sleep where nanosleep is not at hand.
func nanosleep(d time.Duration) { time.Sleep(d) }
