package load

import (
	"runtime"
	"syscall"
	"time"
)

// prSetTimerSlack is prctl's PR_SET_TIMERSLACK: how much later than asked
// the kernel may wake this thread, to batch wakeups; 50µs by default.
const prSetTimerSlack = 29

// lockTimerThread wires the calling goroutine to its thread and makes that
// thread's sleeps end within a microsecond of their time, as far as the
// kernel can, until the function it returns puts things back. The thread
// goes back to the runtime rather than end with the goroutine: a child
// process started from it with Pdeathsig (as tokenhub-bench starts its)
// would be killed when it ended.
func lockTimerThread() (unlock func()) {
	runtime.LockOSThread()
	setTimerSlack(time.Microsecond)
	return func() {
		setTimerSlack(0) // 0 is the thread's default
		runtime.UnlockOSThread()
	}
}

func setTimerSlack(d time.Duration) {
	_, _, _ = syscall.Syscall(syscall.SYS_PRCTL, prSetTimerSlack, uintptr(d), 0)
}

// nanosleep sleeps for d in the kernel, blocking the thread: Go's own
// timers would round it up to a millisecond when the process is idle.
func nanosleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}
