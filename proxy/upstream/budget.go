package upstream

import (
	"sync"
	"sync/atomic"
	"time"
)

// budgetWindow is the span a retry budget counts over: the current window
// and the one before it, so 10 to 20 seconds.
const budgetWindow = 10 * time.Second

// retryBudget bounds the failovers an upstream takes, as Finagle's retry
// budget does: at most ratio of the requests it got first, over the last
// one or two windows, plus floor per window, so that when another route
// fails the failovers it sends here cannot multiply this one's load, and
// a dying provider is not hammered by the retries of the others.
type retryBudget struct {
	ratio float64
	floor int64
	epoch time.Time

	window  atomic.Int64 // the index of the current window
	firsts  atomic.Int64 // requests sent here first, this window
	retries atomic.Int64 // failovers sent here, this window
	// prevFirsts and prevRetries are the window before.
	prevFirsts, prevRetries atomic.Int64

	mu sync.Mutex // only to turn the window
}

func newRetryBudget(ratio float64, floor int) *retryBudget {
	return &retryBudget{ratio: ratio, floor: int64(floor), epoch: time.Now()}
}

// turn starts a new window when now is past the current one.
func (b *retryBudget) turn(now time.Time) {
	w := int64(now.Sub(b.epoch) / budgetWindow)
	if b.window.Load() == w {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.window.Load()
	if cur == w {
		return
	}
	if w == cur+1 {
		b.prevFirsts.Store(b.firsts.Load())
		b.prevRetries.Store(b.retries.Load())
	} else {
		b.prevFirsts.Store(0)
		b.prevRetries.Store(0)
	}
	b.firsts.Store(0)
	b.retries.Store(0)
	b.window.Store(w)
}

// first counts a request sent here first.
func (b *retryBudget) first(now time.Time) {
	b.turn(now)
	b.firsts.Add(1)
}

// retry takes a failover from the budget, reporting whether there was one.
// Two at once may both take the last; the budget is a bound, not a count.
func (b *retryBudget) retry(now time.Time) bool {
	b.turn(now)
	allowed := b.floor + int64(b.ratio*float64(b.firsts.Load()+b.prevFirsts.Load()))
	if b.retries.Load()+b.prevRetries.Load() >= allowed {
		return false
	}
	b.retries.Add(1)
	return true
}

// FirstAttempt counts a request sent to u as its first attempt: it earns u's
// retry budget.
func (u *Upstream) FirstAttempt(now time.Time) { u.budget.first(now) }

// Failover reports whether u's retry budget allows it one more failover,
// and takes it if so.
func (u *Upstream) Failover(now time.Time) bool { return u.budget.retry(now) }
