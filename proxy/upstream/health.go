package upstream

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenhub/tokenhub/config"
)

// State is where a route stands in passive health checking.
type State int32

// The states of a route. Only a Healthy route is chosen; an Ejected or
// CoolingDown one whose time is up becomes HalfOpen for one trial request,
// whose outcome makes it Healthy again or ejects it for longer.
const (
	Healthy     State = iota
	Ejected           // failed too often in a row: no traffic until its time is up
	CoolingDown       // the upstream asked for a pause (retry-after on a 429, 503 or 529)
	HalfOpen          // one trial request is in flight
)

var stateNames = [...]string{"healthy", "ejected", "cooling_down", "half_open"}

func (s State) String() string { return stateNames[s] }

// latencyDecay is the peak-EWMA's time constant: a sample weighs half after
// about 7 seconds (Finagle's and Linkerd's default is 10s).
const latencyDecay = 10 * time.Second

// Outcome is what one attempt on a route came to, for its health.
type Outcome struct {
	// Failed: a connect failure, timeout, drop, unreadable answer, 5xx or 429.
	Failed bool
	// Latency is the time to the answer (a stream's: to its headers), or to
	// the timeout; 0 when there is no sample (the request never left).
	Latency time.Duration
	// CoolDown is the upstream's retry-after on a 429 or 503, 0 if none.
	CoolDown time.Duration
	// Trial: the attempt was the half-open trial Pick handed out.
	Trial bool
	// Sent is when the attempt started: an answer to a request sent before
	// the route was ejected says nothing about it since.
	Sent time.Time
}

// Change is a route's state change, for the one log line it deserves.
type Change struct {
	To State
	// For is how long an ejection or cool-down lasts.
	For time.Duration
}

// Health is the passive health and the latency of one route, shared by
// every request that takes it. The choice reads it with atomic loads only;
// a request's outcome updates it with atomics, and takes mu only for a
// state change (an ejection, a trial, a recovery), which is rare.
type Health struct {
	opts config.Health
	// epoch is the zero of the nanosecond clock readings kept in atomics:
	// differences of the monotonic clock, immune to wall-clock jumps.
	epoch time.Time
	// healthy counts the Healthy routes of the model, shared by its routes:
	// the last one is never ejected.
	healthy *atomic.Int32

	state atomic.Int32 // State
	until atomic.Int64 // while Ejected or CoolingDown: when it ends
	since atomic.Int64 // when it last left Healthy
	back  atomic.Int64 // when it last became Healthy again
	fails atomic.Int32 // consecutive failures
	// streak is ejections without a stable healthy spell between them:
	// each lasts twice as long as the one before.
	streak    atomic.Int32
	ejections atomic.Int64 // ejections and cool-downs since start

	inFlight atomic.Int64
	// ewma is the peak-EWMA latency in nanoseconds (float64 bits), as of
	// stamp: it jumps to a slower sample at once and decays towards faster
	// ones, so a route that slows down sheds load before it fails.
	ewma  atomic.Uint64
	stamp atomic.Int64

	mu sync.Mutex
}

func newHealth(opts config.Health, healthy *atomic.Int32) *Health {
	healthy.Add(1)
	return &Health{opts: opts, epoch: time.Now(), healthy: healthy}
}

func (h *Health) clock(t time.Time) int64 { return int64(t.Sub(h.epoch)) }

// State is the route's state now.
func (h *Health) State() State { return State(h.state.Load()) }

// InFlight is how many requests wait on the route for their answer (a
// stream: for its headers).
func (h *Health) InFlight() int64 { return h.inFlight.Load() }

// Ejections is how many times the route was ejected or cooled down.
func (h *Health) Ejections() int64 { return h.ejections.Load() }

// ConsecutiveFailures is the failures in a row so far.
func (h *Health) ConsecutiveFailures() int { return int(h.fails.Load()) }

// Latency is the peak-EWMA latency as of now; 0 before any sample.
func (h *Health) Latency(now time.Time) time.Duration { return time.Duration(h.latency(h.clock(now))) }

// Until is when an ejection or cool-down ends; zero when Healthy or HalfOpen.
func (h *Health) Until() time.Time {
	if s := h.State(); s != Ejected && s != CoolingDown {
		return time.Time{}
	}
	return h.epoch.Add(time.Duration(h.until.Load()))
}

// latency is the peak-EWMA at now, decayed since its last sample: a route
// that got no traffic for a while looks better and better, until it gets a
// request and so a fresh sample.
func (h *Health) latency(now int64) float64 {
	v := math.Float64frombits(h.ewma.Load())
	if v == 0 {
		return 0
	}
	if dt := now - h.stamp.Load(); dt > 0 {
		v *= math.Exp(-float64(dt) / float64(latencyDecay))
	}
	return v
}

// observe folds a latency sample into the peak-EWMA: a slower sample than
// the average (as decayed by latency) replaces it, a faster one is averaged
// in with the time since the last sample as its weight. Two samples at
// once may lose one of them; the average does not need every sample.
func (h *Health) observe(now int64, sample time.Duration) {
	s := float64(max(sample, time.Microsecond))
	for {
		old := h.ewma.Load()
		if v := h.latency(now); s < v {
			w := math.Exp(-float64(max(now-h.stamp.Load(), 0)) / float64(latencyDecay))
			s = v*w + s*(1-w)
		}
		if h.ewma.CompareAndSwap(old, math.Float64bits(s)) {
			h.stamp.Store(now)
			return
		}
	}
}

// noSamplePenalty is the cost of a route with requests in flight and no
// latency sample yet: it may be hung, so every route with a sample is
// preferred (as Finagle's peak-EWMA does).
const noSamplePenalty = float64(time.Hour)

// cost is the route's load score at now: its latency times the requests it
// would have in flight with this one, over its weight.
func (h *Health) cost(now int64, weight int) float64 {
	n := h.inFlight.Load()
	l := h.latency(now)
	if l == 0 {
		if n == 0 {
			return 0
		}
		return noSamplePenalty * float64(n)
	}
	return l * float64(n+1) / float64(weight)
}

// trialDue reports whether the route is out and its time is up at now:
// the next request to claim it is its trial.
func (h *Health) trialDue(now int64) bool {
	s := State(h.state.Load())
	return (s == Ejected || s == CoolingDown) && now >= h.until.Load()
}

// claimTrial makes the route HalfOpen for the caller's trial request; it
// fails when another request claimed it first.
func (h *Health) claimTrial(now int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := State(h.state.Load())
	if (s != Ejected && s != CoolingDown) || now < h.until.Load() {
		return false
	}
	h.state.Store(int32(HalfOpen))
	return true
}

// begin counts a request going to the route.
func (h *Health) begin() { h.inFlight.Add(1) }

// Begin counts a request sent to the route without Routes.Pick: one pinned
// to it by what it continues (a Responses API previous_response_id). Done
// or Abandon ends it, as for a picked one.
func (h *Health) Begin() { h.begin() }

// Done records the outcome of an attempt begun on the route (by Routes.Pick)
// at now, and returns the state change it caused, if any, for the caller to
// log once.
func (h *Health) Done(o Outcome, now time.Time) (Change, bool) {
	h.inFlight.Add(-1)
	t := h.clock(now)
	if o.Latency > 0 {
		h.observe(t, o.Latency)
	}
	s := State(h.state.Load())
	if !o.Failed && o.CoolDown == 0 {
		if h.fails.Load() != 0 {
			h.fails.Store(0)
		}
		if s == Healthy {
			if h.streak.Load() != 0 && t-h.back.Load() >= int64(h.opts.MaxEjection) {
				h.streak.Store(0) // healthy long enough: the next ejection starts short again
			}
			return Change{}, false
		}
		return h.recover(o, t)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s = State(h.state.Load())
	if o.CoolDown > 0 && h.opts.MaxCoolDown > 0 {
		if (s == HalfOpen && o.Trial) || (s == Healthy && h.leaveHealthy()) {
			return h.exclude(CoolingDown, t, min(o.CoolDown, h.opts.MaxCoolDown)), true
		}
	}
	n := h.fails.Add(1)
	switch {
	case s == HalfOpen && o.Trial:
		return h.exclude(Ejected, t, h.ejection()), true
	case s == Healthy && int(n) >= h.opts.ConsecutiveFailures && h.leaveHealthy():
		return h.exclude(Ejected, t, h.ejection()), true
	}
	return Change{}, false
}

// recover makes the route Healthy on a success that tells about it now: the
// trial's, or a request sent while it was out (the model's routes all out,
// or the last one kept in).
func (h *Health) recover(o Outcome, t int64) (Change, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := State(h.state.Load())
	if s == Healthy || (s == HalfOpen && !o.Trial) || (s != HalfOpen && h.clock(o.Sent) < h.since.Load()) {
		return Change{}, false
	}
	h.back.Store(t)
	h.state.Store(int32(Healthy))
	h.healthy.Add(1)
	return Change{To: Healthy}, true
}

// leaveHealthy takes the route out of the model's healthy count, unless it
// is the last healthy route: that one stays in, the least bad, rather than
// fail every request of the model.
func (h *Health) leaveHealthy() bool {
	for {
		n := h.healthy.Load()
		if n <= 1 {
			return false
		}
		if h.healthy.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// ejection is how long the next ejection lasts: Ejection, doubled for each
// ejection of the streak before it, at most MaxEjection.
func (h *Health) ejection() time.Duration {
	d := h.opts.Ejection
	for i := h.streak.Load(); i > 0 && d < h.opts.MaxEjection; i-- {
		d *= 2
	}
	return min(d, h.opts.MaxEjection)
}

// exclude puts the route out for d from t; with h.mu held.
func (h *Health) exclude(s State, t int64, d time.Duration) Change {
	if s == Ejected {
		h.streak.Add(1)
	}
	h.ejections.Add(1)
	h.fails.Store(0)
	if State(h.state.Load()) == Healthy {
		h.since.Store(t)
	}
	h.until.Store(t + int64(d))
	h.state.Store(int32(s))
	return Change{To: s, For: d}
}

// Abandon takes back a Pick whose attempt was not made after all (the
// request's deadline or the upstream's retry budget ruled it out): the
// request leaves the in-flight count, and a trial goes back for another
// request to claim.
func (h *Health) Abandon(trial bool) {
	h.inFlight.Add(-1)
	if trial {
		h.mu.Lock()
		if State(h.state.Load()) == HalfOpen {
			h.state.Store(int32(Ejected))
		}
		h.mu.Unlock()
	}
}
