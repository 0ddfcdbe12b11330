// Package load is a closed-loop HTTP load generator for benchmarking the
// gateway against its upstream on loopback: a fixed number of workers, each
// with its own keep-alive connection, send the same request back to back for
// a bounded time or count, check every answer, and record latencies in a
// log-linear histogram.
//
// Closed loop means a worker sends its next request only when the previous
// one is answered, so throughput is what the target sustains at that
// concurrency and latency is never inflated by a queue in the generator.
//
// RunStreams does the same with streamed answers, timing each stream's first
// event and its end; Hold opens many streams at once and keeps them open, so
// that what a target spends on each can be read off it.
package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Bounds that keep every run finite and modest.
const (
	// MaxDuration bounds a run that is bounded by count only.
	MaxDuration = 10 * time.Minute
	// MaxConns bounds the concurrency.
	MaxConns = 4096
	// DefaultTimeout bounds one request when Config.Timeout is zero.
	DefaultTimeout = 10 * time.Second
)

// Header is one request header.
type Header struct {
	Name, Value string
}

// Request is what every worker sends, and how its answer is judged.
type Request struct {
	// Method defaults to POST.
	Method string
	// Path is the request URI's path and query, such as /v1/chat/completions.
	Path    string
	Headers []Header
	Body    []byte
	// Expect, when set, must occur in the body of a 200 answer for it to count
	// as correct: a gateway that answers 200 with the wrong thing fails.
	Expect []byte
}

// Config describes one run against one target.
type Config struct {
	// Addr is the target's host:port. It must be a loopback address: a load
	// generator pointed elsewhere by mistake is an attack.
	Addr    string
	Request Request
	// Conns is the number of workers, each with its own connection.
	Conns int
	// Warmup is run first and not recorded: it opens the connections and
	// lets the target reach its steady state.
	Warmup time.Duration
	// Duration bounds the recorded part of the run; at most MaxDuration,
	// which is also the bound when it is zero.
	Duration time.Duration
	// Requests, when non-zero, ends the run after that many recorded requests.
	Requests uint64
	// Timeout bounds each request; DefaultTimeout when zero.
	Timeout time.Duration
}

// Result is the outcome of one run. Latencies and throughput count correct
// answers only; everything else is an error, counted by kind.
type Result struct {
	// Target names what was measured, for reports; Run leaves it empty.
	Target string `json:"target"`
	Conns  int    `json:"conns"`
	// Elapsed is the recorded part of the run, until the last answer.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Requests is every request answered (or failed) in the recorded part.
	Requests uint64 `json:"requests"`
	OK       uint64 `json:"ok"`
	Errors   uint64 `json:"errors"`
	// ErrorsByKind counts errors by HTTP status ("429", "502"), or by kind:
	// "bad_body" (200 without Request.Expect), "timeout", "conn_refused",
	// "conn_closed", "no_free_conns", "transport".
	ErrorsByKind map[string]uint64 `json:"errors_by_kind,omitempty"`
	// Throughput is correct answers per second.
	Throughput float64 `json:"throughput_rps"`
	Latency    Latency `json:"latency"`
}

// Latency summarises the latencies of the correct answers.
type Latency struct {
	Min  time.Duration `json:"min_ns"`
	Mean time.Duration `json:"mean_ns"`
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p99_9_ns"`
	Max  time.Duration `json:"max_ns"`
}

// phases of a run, in order.
const (
	phaseWarmup int32 = iota
	phaseRecord
	phaseStop
)

// Run drives c's load and returns what it measured. It ends early, with the
// requests recorded so far, when ctx is cancelled.
func Run(ctx context.Context, c Config) (*Result, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	hc := &fasthttp.HostClient{
		Addr:                      c.Addr,
		MaxConns:                  c.Conns,
		MaxConnWaitTimeout:        timeout,
		MaxIdleConnDuration:       time.Minute,
		ReadTimeout:               timeout,
		WriteTimeout:              timeout,
		MaxIdemponentCallAttempts: 1, // a retry would hide an error and skew a latency
		NoDefaultUserAgentHeader:  true,
		ReadBufferSize:            16 << 10,
		WriteBufferSize:           16 << 10,
	}
	defer hc.CloseIdleConnections()

	r := &run{cfg: &c, client: hc, timeout: timeout}
	workers := make([]*worker, c.Conns)
	for i := range workers {
		workers[i] = newWorker(r)
	}
	defer func() {
		for _, w := range workers {
			w.release()
		}
	}()
	elapsed, err := r.drive(ctx, func(i int) { workers[i].loop() })
	if err != nil {
		return nil, err
	}

	res := &Result{Conns: c.Conns, Elapsed: elapsed}
	var h Histogram
	var kinds errorCounts
	for _, w := range workers {
		h.Merge(&w.hist)
		kinds.add(&w.errs)
	}
	res.OK = h.Count()
	res.ErrorsByKind = kinds.byKind()
	for _, n := range res.ErrorsByKind {
		res.Errors += n
	}
	res.Requests = res.OK + res.Errors
	if elapsed > 0 {
		res.Throughput = float64(res.OK) / elapsed.Seconds()
	}
	res.Latency = h.Summary()
	return res, nil
}

// drive runs loop(i) for each of the run's Conns workers through the warmup
// and the recorded phase, and returns how long the recorded phase lasted, to
// the end of the last worker's last request. A loop returns when the phase
// is phaseStop or, in the recorded phase, when claimRecorded says so.
func (r *run) drive(ctx context.Context, loop func(i int)) (time.Duration, error) {
	c := r.cfg
	duration := c.Duration
	if duration <= 0 || duration > MaxDuration {
		duration = MaxDuration
	}
	if c.Warmup <= 0 {
		r.phase.Store(phaseRecord)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range c.Conns {
		wg.Go(func() { loop(i) })
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()

	if c.Warmup > 0 {
		if !r.waitPhase(ctx, finished, c.Warmup) {
			r.phase.Store(phaseStop)
			<-finished
			return 0, fmt.Errorf("load: %s: stopped during the warmup: %w", c.Addr, context.Cause(ctx))
		}
		start = time.Now()
		r.phase.Store(phaseRecord)
	}
	r.waitPhase(ctx, finished, duration)
	r.phase.Store(phaseStop)
	<-finished
	return time.Since(start), nil
}

func (c *Config) check() error {
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("load: addr %q: %w", c.Addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("load: addr %q: only loopback targets are allowed", c.Addr)
	}
	if c.Conns < 1 || c.Conns > MaxConns {
		return fmt.Errorf("load: conns %d: want 1 to %d", c.Conns, MaxConns)
	}
	if c.Duration <= 0 && c.Requests == 0 {
		return errors.New("load: set a duration, a request count, or both")
	}
	if c.Request.Path == "" || c.Request.Path[0] != '/' {
		return fmt.Errorf("load: request path %q: want an absolute path", c.Request.Path)
	}
	return nil
}

// run is the state the workers of one run share.
type run struct {
	cfg     *Config
	client  *fasthttp.HostClient
	timeout time.Duration
	phase   atomic.Int32
	issued  atomic.Uint64 // recorded requests started, against Config.Requests
}

// claimRecorded counts one more recorded request, and reports whether
// Config.Requests allows it.
func (r *run) claimRecorded() bool {
	limit := r.cfg.Requests
	return limit == 0 || r.issued.Add(1) <= limit
}

// waitPhase waits d, or less if ctx is cancelled or the workers are all done.
// It reports whether the full d passed.
func (r *run) waitPhase(ctx context.Context, finished <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-finished:
	}
	return false
}

// worker sends requests back to back on its own connection.
type worker struct {
	r    *run
	req  *fasthttp.Request
	resp *fasthttp.Response
	hist Histogram
	errs errorCounts
}

func newWorker(r *run) *worker {
	req := fasthttp.AcquireRequest()
	rq := &r.cfg.Request
	req.SetRequestURI("http://" + r.cfg.Addr + rq.Path)
	method := rq.Method
	if method == "" {
		method = fasthttp.MethodPost
	}
	req.Header.SetMethod(method)
	for _, h := range rq.Headers {
		req.Header.Set(h.Name, h.Value)
	}
	if len(rq.Body) > 0 {
		if len(req.Header.ContentType()) == 0 {
			req.Header.SetContentType("application/json")
		}
		req.SetBody(rq.Body)
	}
	return &worker{r: r, req: req, resp: fasthttp.AcquireResponse()}
}

func (w *worker) release() {
	fasthttp.ReleaseRequest(w.req)
	fasthttp.ReleaseResponse(w.resp)
}

func (w *worker) loop() {
	r := w.r
	expect := r.cfg.Request.Expect
	for {
		phase := r.phase.Load()
		if phase == phaseStop {
			return
		}
		if phase == phaseRecord && !r.claimRecorded() {
			return
		}
		start := time.Now()
		err := r.client.DoTimeout(w.req, w.resp, r.timeout)
		latency := time.Since(start)
		if phase != phaseRecord {
			if err != nil {
				backOff()
			}
			continue
		}
		switch {
		case err != nil:
			w.errs.transport[transportKind(err)]++
			backOff()
		case w.resp.StatusCode() != fasthttp.StatusOK:
			w.errs.status[min(max(w.resp.StatusCode(), 0), len(w.errs.status)-1)]++
		case len(expect) > 0 && !bytes.Contains(w.resp.Body(), expect):
			w.errs.badBody++
		default:
			w.hist.Record(latency)
		}
	}
}

// backOff pauses a worker after a transport error, so a target that refuses
// connections is not hammered in a busy loop that would only measure the
// generator.
func backOff() { time.Sleep(time.Millisecond) }

// Transport error kinds, as counted in errorCounts.transport.
const (
	kindTimeout = iota
	kindRefused
	kindClosed
	kindNoFreeConns
	kindOther
	numKinds
)

var kindNames = [numKinds]string{"timeout", "conn_refused", "conn_closed", "no_free_conns", "transport"}

func transportKind(err error) int {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout),
		errors.As(err, &ne) && ne.Timeout():
		return kindTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return kindRefused
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return kindClosed
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return kindNoFreeConns
	}
	return kindOther
}

// errorCounts are one worker's errors, in arrays so that counting one costs
// no allocation.
type errorCounts struct {
	status    [600]uint64 // by HTTP status; the last slot takes anything larger
	transport [numKinds]uint64
	badBody   uint64
}

func (e *errorCounts) add(o *errorCounts) {
	for i, n := range o.status {
		e.status[i] += n
	}
	for i, n := range o.transport {
		e.transport[i] += n
	}
	e.badBody += o.badBody
}

func (e *errorCounts) byKind() map[string]uint64 {
	m := make(map[string]uint64)
	for code, n := range e.status {
		if n > 0 {
			m[strconv.Itoa(code)] = n
		}
	}
	for k, n := range e.transport {
		if n > 0 {
			m[kindNames[k]] = n
		}
	}
	if e.badBody > 0 {
		m["bad_body"] = e.badBody
	}
	if len(m) == 0 {
		return nil
	}
	return m
}
