// Package eventually is the one way tests wait for something that real
// processes, sockets and goroutines make true in their own time: poll a
// condition until it holds or a generous deadline passes, then fail saying
// what was awaited. It never judges how long that took: on a busy two-core
// machine a wait can be ten times longer than on a quiet one, and a test
// that fails for that is a defect. Speed is measured by benchmarks.
//
// Clock-driven code (buckets, leases, back-offs) is better tested in a
// testing/synctest bubble, where waiting costs nothing and is exact.
package eventually

import (
	"testing"
	"time"
)

// Deadline is how long True waits: long enough that only a broken
// condition reaches it, however loaded the machine.
const Deadline = 30 * time.Second

// True polls cond until it returns true, or fails t after Deadline saying
// "still not <what>".
func True(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Deadline, what, cond)
}

// Within is True with a deadline of d, for a condition the test proves
// holds within a bound (a guarantee with a number in it, such as "revoked on
// every node within 5 seconds"); d should still leave ample room for load.
func Within(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(d, cond) {
		t.Fatalf("still not %s after %v", what, d)
	}
}

// poll calls cond until it holds or d has passed, backing off from 1 ms to
// 50 ms between calls so a slow condition is not hammered. It reports
// whether cond held.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
	}
}
