package load

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// An open loop sends requests on a fixed schedule, the i-th due at start +
// i/Rate, whatever the target does. A closed loop stops sending while the
// target stalls, so the requests that would have waited are never timed
// (coordinated omission) and its percentiles flatter the target; here every
// request is timed from when it was due, so a stall shows up in the latency
// of every request that it held up, as real clients would see it.
//
// One dispatcher keeps the schedule and hands each request, when due, to a
// free worker; requests in flight are bounded by Config.Conns, each worker
// having a connection and at most one request on it. A request due while
// every worker is busy is handed to the first that frees, counted as late,
// and its wait is part of its latency. Requests due in the recorded window
// but still not handed out when it closes are counted as unsent.
//
// The dispatcher sleeps with nanosleep on a thread of its own whose timer
// slack is 1µs: Go's timers wake no sooner than the next millisecond when
// the process is idle (the runtime waits for them in epoll with a timeout in
// milliseconds), which would add up to a millisecond, more to a lightly
// loaded target than to a busy one, to every latency. Measured on a 2-CPU
// VM: time.Sleep of 200µs overshoots by 0.9ms at the median, nanosleep by
// 33µs.

// OpenResult is the outcome of a RunOpen. Its Result's latencies are from
// each request's due time to its answer; Elapsed is the recorded window and
// Throughput the correct answers per second of it.
type OpenResult struct {
	Result
	// Rate is the schedule, in requests per second.
	Rate float64 `json:"rate_rps"`
	// Scheduled is the requests due in the recorded window.
	Scheduled uint64 `json:"scheduled"`
	// Late counts the requests sent after their due time because every
	// connection was busy then.
	Late uint64 `json:"late"`
	// Unsent counts the requests due in the window that were not sent by
	// its end: the target could not keep up with Rate at Conns in flight.
	Unsent uint64 `json:"unsent"`
	// Service summarises the correct answers' latencies from when each was
	// actually sent, as a closed loop would time them.
	Service Latency `json:"service"`
	// SendLag summarises how long after its due time each request was sent:
	// for requests on time the generator's own precision (tens of
	// microseconds on Linux), for late ones their wait for a connection.
	SendLag Latency `json:"send_lag"`
}

// Valid reports whether the run kept its schedule: every request sent when
// due, none held back for want of a connection. In a run that did not, the
// target (or Conns) could not take Rate, and the latencies include the wait.
func (r *OpenResult) Valid() bool { return r.Unsent == 0 && r.Late == 0 }

// schedule is an open loop's timetable: request i is due offset(i) after its
// start. The warmup is the requests due before the recorded window.
type schedule struct {
	perRequest float64 // nanoseconds between requests
	warmup     uint64  // requests due before the window
	end        uint64  // requests due before the window's end
}

func newSchedule(rate float64, warmup, duration time.Duration) schedule {
	s := schedule{perRequest: 1e9 / rate}
	s.warmup = s.dueBefore(warmup)
	s.end = s.dueBefore(warmup + duration)
	return s
}

// offset returns when request i is due, from the start.
func (s schedule) offset(i uint64) time.Duration {
	return time.Duration(math.Round(float64(i) * s.perRequest))
}

// dueBefore returns how many requests are due before d from the start.
func (s schedule) dueBefore(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	n := uint64(float64(d) / s.perRequest)
	// Rounding in either division can leave n one off.
	for n > 0 && s.offset(n-1) >= d {
		n--
	}
	for s.offset(n) < d {
		n++
	}
	return n
}

// RunOpen sends c's request at c.Rate for c.Warmup and then c.Duration, at
// most c.Conns at a time, and returns what it measured in the recorded part.
// c.Requests is ignored. It ends early, with what was recorded so far, when
// ctx is cancelled.
func RunOpen(ctx context.Context, c Config) (*OpenResult, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if !(c.Rate > 0 && c.Rate <= MaxRate) {
		return nil, fmt.Errorf("load: rate %v: want more than 0 and at most %d per second", c.Rate, MaxRate)
	}
	if c.Duration <= 0 || c.Duration > MaxDuration || c.Warmup < 0 || c.Warmup > MaxDuration {
		return nil, fmt.Errorf("load: an open loop needs a duration of at most %v and a warmup of at most as much: got %v and %v",
			MaxDuration, c.Duration, c.Warmup)
	}
	r := newRun(&c)
	defer r.close()
	workers := r.workers()
	defer releaseWorkers(workers)

	o := &openLoop{run: r, sched: newSchedule(c.Rate, c.Warmup, c.Duration), due: make(chan uint64)}
	o.start = time.Now()
	o.windowEnd = o.start.Add(c.Warmup + c.Duration)
	if o.sched.warmup == 0 && c.OnRecord != nil {
		c.OnRecord()
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { o.work(w) })
	}
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		defer close(o.due)
		o.dispatch(ctx)
	}()
	if c.Warmup > 0 {
		// (The dispatcher calls OnRecord as the first recorded request
		// falls due.)
		if !sleepUntil(ctx, o.start.Add(c.Warmup)) {
			<-dispatched
			wg.Wait()
			return nil, fmt.Errorf("load: %s: stopped during the warmup: %w", c.addrs()[0], context.Cause(ctx))
		}
	}
	<-dispatched
	wg.Wait()
	if c.OnRecordEnd != nil {
		c.OnRecordEnd()
	}

	res := &OpenResult{Rate: c.Rate, Scheduled: o.sched.end - o.sched.warmup, Late: o.late}
	res.Conns = c.Conns
	res.Elapsed = c.Duration
	res.collect(workers)
	var service, lag Histogram
	for _, w := range workers {
		service.Merge(&w.service)
		lag.Merge(&w.lag)
	}
	res.Service, res.SendLag = service.Summary(), lag.Summary()
	if res.Requests < res.Scheduled {
		res.Unsent = res.Scheduled - res.Requests
	}
	if err := ctx.Err(); err != nil {
		// Cut short: rate the window by how far it got.
		res.Elapsed = max(min(time.Since(o.start)-c.Warmup, c.Duration), 0)
	}
	if res.Elapsed > 0 {
		res.Throughput = float64(res.OK) / res.Elapsed.Seconds()
	}
	return res, nil
}

// openLoop is the state of one RunOpen.
type openLoop struct {
	*run
	sched     schedule
	start     time.Time
	windowEnd time.Time
	// due hands the workers the index of each request as it falls due.
	due chan uint64
	// late counts the recorded requests no worker was free for when due;
	// only the dispatcher writes it, and it is read once the dispatcher is
	// done.
	late uint64
}

// dispatch hands out the requests of the schedule, each when it falls due,
// until the schedule or the window is over or ctx ends. After a warmup it
// calls OnRecord as the first recorded request falls due and before it is
// handed out, so that no recorded request is sent before the hook has
// read the target: called from another goroutine at the window's start, a
// loaded machine could run it after the first recorded requests went out.
func (o *openLoop) dispatch(ctx context.Context) {
	defer lockTimerThread()()
	window := time.NewTimer(time.Until(o.windowEnd))
	defer window.Stop()
	// waitedUntil is when the last hand-off that had to wait for a worker
	// completed: requests due before then found no worker free either.
	var waitedUntil time.Time
	for i := uint64(0); i < o.sched.end; i++ {
		due := o.start.Add(o.sched.offset(i))
		if !sleepPrecise(ctx, due) {
			return
		}
		recorded := i >= o.sched.warmup
		if i == o.sched.warmup && i > 0 && o.cfg.OnRecord != nil {
			o.cfg.OnRecord()
		}
		select {
		case o.due <- i:
			if recorded && due.Before(waitedUntil) {
				o.late++
			}
			continue
		default:
		}
		if recorded {
			o.late++
		}
		select {
		case o.due <- i:
			waitedUntil = time.Now()
		case <-window.C:
			return // the rest are unsent
		case <-ctx.Done():
			return
		}
	}
}

// work sends the requests handed to w, each timed from when it was due.
func (o *openLoop) work(w *worker) {
	for i := range o.due {
		due := o.start.Add(o.sched.offset(i))
		sent := time.Now()
		err := w.do()
		done := time.Now()
		if i < o.sched.warmup {
			continue
		}
		w.lag.Record(sent.Sub(due))
		switch w.judge(err) {
		case outcomeOK:
			w.hist.Record(done.Sub(due))
			w.service.Record(done.Sub(sent))
		case outcomeRefused:
			w.refused.Record(done.Sub(due))
		}
	}
}

// sleepPrecise waits until t, to within some tens of microseconds, and
// reports false if ctx ended first.
func sleepPrecise(ctx context.Context, t time.Time) bool {
	for {
		d := time.Until(t)
		if d <= 0 {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		// Long waits in slices, to notice ctx.
		nanosleep(min(d, 10*time.Millisecond))
	}
}

// sleepUntil waits until t, and reports false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
