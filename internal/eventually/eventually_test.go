package eventually

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int64
		start := time.Now()
		if !poll(time.Second, func() bool { return calls.Add(1) == 5 }) {
			t.Fatal("a condition that turns true was not seen")
		}
		// 1+2+4+8 ms of back-off before the fifth call.
		if calls.Load() != 5 || time.Since(start) != 15*time.Millisecond {
			t.Fatalf("%d calls in %v, want 5 in 15ms", calls.Load(), time.Since(start))
		}

		start = time.Now()
		calls.Store(0)
		if poll(time.Second, func() bool { calls.Add(1); return false }) {
			t.Fatal("a condition that never holds was reported true")
		}
		if waited := time.Since(start); waited < time.Second || waited > time.Second+50*time.Millisecond {
			t.Fatalf("gave up after %v, want the deadline (1s) and at most one back-off more", waited)
		}
		if calls.Load() > 30 {
			t.Fatalf("%d calls in a second: the back-off should cap them near 25", calls.Load())
		}
	})
}
