// Package load is an HTTP load generator for benchmarking the gateway against
// its upstream on loopback: workers, each with its own keep-alive connection,
// send the same request (with, optionally, a key of their own each time) for
// a bounded time or count, check every answer, and record latencies in a
// log-linear histogram.
//
// Run is a closed loop: a worker sends its next request only when the
// previous one is answered, so throughput is what the target sustains at that
// concurrency. Its latencies are those of a client that waits, not those of
// traffic that keeps coming while the target stalls; RunOpen measures those,
// sending at a fixed rate and timing each request from when it was due.
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
	// MaxRate bounds the rate of RunOpen, in requests per second.
	MaxRate = 1_000_000
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
	// Keys, when set, gives every request an Authorization header of its
	// own, drawn from many keys; it replaces any Authorization in Headers.
	// RunStreams and Hold do not support it.
	Keys *Keys
	// Refusal, when its Status is set, is an answer some requests are meant
	// to get instead of a 200, such as a 429 past a rate limit.
	Refusal Refusal
}

// Refusal describes an expected refusal. An answer with its Status counts as
// refused when it has everything the Refusal asks for, and as the error
// "bad_refusal" otherwise.
type Refusal struct {
	Status int
	// Expect must each occur in the body.
	Expect [][]byte
	// Headers must each be present, with a value.
	Headers []string
}

// accepts reports whether resp, whose status is r.Status, is a correct
// refusal.
func (r *Refusal) accepts(resp *fasthttp.Response) bool {
	body := resp.Body()
	for _, e := range r.Expect {
		if !bytes.Contains(body, e) {
			return false
		}
	}
	for _, h := range r.Headers {
		if len(resp.Header.Peek(h)) == 0 {
			return false
		}
	}
	return true
}

// Config describes one run against one target.
type Config struct {
	// Addr is the target's host:port. It must be a loopback address: a load
	// generator pointed elsewhere by mistake is an attack.
	Addr string
	// Addrs, when set, replaces Addr with several targets serving the same
	// thing, such as gateway nodes sharing a store: the workers are dealt
	// out among them in turn, as a load balancer would, and the result is
	// theirs together. Each must be a loopback address.
	Addrs   []string
	Request Request
	// Conns is the number of workers, each with its own connection: in
	// RunOpen, the most requests in flight at once.
	Conns int
	// Rate is RunOpen's schedule, in requests per second; Run ignores it.
	Rate float64
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
	// OnRecord, when set, is called as the recorded part of the run begins
	// (before any of its requests is sent), and OnRecordEnd once it has
	// ended and every request is answered: to read off a target what it
	// spent on the recorded requests. Requests of
	// the warmup still in flight as it ends are a small error in the first
	// reading, at most Conns of them.
	OnRecord, OnRecordEnd func()
}

// addrs returns the targets of c: Addrs, or Addr alone.
func (c *Config) addrs() []string {
	if len(c.Addrs) > 0 {
		return c.Addrs
	}
	return []string{c.Addr}
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
	// "bad_body" (200 without Request.Expect), "bad_refusal" (a refusal
	// without what Request.Refusal asks for), "timeout", "conn_refused",
	// "conn_closed", "no_free_conns", "transport".
	ErrorsByKind map[string]uint64 `json:"errors_by_kind,omitempty"`
	// Refused counts the correct refusals of Request.Refusal, which are not
	// errors; RefusedLatency summarises their latencies.
	Refused        uint64   `json:"refused,omitempty"`
	RefusedLatency *Latency `json:"refused_latency,omitempty"`
	// Throughput is correct answers per second, refusals not included.
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
	r := newRun(&c)
	defer r.close()
	workers := r.workers()
	defer releaseWorkers(workers)
	elapsed, err := r.drive(ctx, func(i int) { workers[i].loop() })
	if err != nil {
		return nil, err
	}
	res := &Result{Conns: c.Conns, Elapsed: elapsed}
	res.collect(workers)
	if elapsed > 0 {
		res.Throughput = float64(res.OK) / elapsed.Seconds()
	}
	return res, nil
}

// timeoutOr is the timeout d sets: DefaultTimeout when d is not positive.
func timeoutOr(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultTimeout
	}
	return d
}

// newRun returns the state of a run of c, with a client per target.
func newRun(c *Config) *run {
	timeout := timeoutOr(c.Timeout)
	r := &run{cfg: c, timeout: timeout}
	addrs := c.addrs()
	for i, addr := range addrs {
		// Workers are dealt out in turn: target i gets every len(addrs)-th.
		conns := (c.Conns - i + len(addrs) - 1) / len(addrs)
		r.clients = append(r.clients, &fasthttp.HostClient{
			Addr:                      addr,
			MaxConns:                  max(conns, 1),
			MaxConnWaitTimeout:        timeout,
			MaxIdleConnDuration:       time.Minute,
			ReadTimeout:               timeout,
			WriteTimeout:              timeout,
			MaxIdemponentCallAttempts: 1, // a retry would hide an error and skew a latency
			NoDefaultUserAgentHeader:  true,
			ReadBufferSize:            16 << 10,
			WriteBufferSize:           16 << 10,
		})
	}
	if k := c.Request.Keys; k != nil {
		r.bearers = k.bearers()
	}
	return r
}

// close closes the run's idle connections.
func (r *run) close() {
	for _, hc := range r.clients {
		hc.CloseIdleConnections()
	}
}

// workers returns a worker for each of the run's Conns.
func (r *run) workers() []*worker {
	ws := make([]*worker, r.cfg.Conns)
	for i := range ws {
		ws[i] = newWorker(r, i)
	}
	return ws
}

func releaseWorkers(ws []*worker) {
	for _, w := range ws {
		w.release()
	}
}

// collect fills res's counts and latencies from the workers' records.
func (res *Result) collect(workers []*worker) {
	var h, refused Histogram
	var kinds errorCounts
	for _, w := range workers {
		h.Merge(&w.hist)
		refused.Merge(&w.refused)
		kinds.add(&w.errs)
	}
	res.OK = h.Count()
	res.Refused = refused.Count()
	res.ErrorsByKind, res.Errors = kinds.summary()
	res.Requests = res.OK + res.Refused + res.Errors
	res.Latency = h.Summary()
	if res.Refused > 0 {
		l := refused.Summary()
		res.RefusedLatency = &l
	}
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
		r.beginRecord()
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
			return 0, fmt.Errorf("load: %s: stopped during the warmup: %w", c.addrs()[0], context.Cause(ctx))
		}
		r.beginRecord()
		start = time.Now()
	}
	r.waitPhase(ctx, finished, duration)
	r.phase.Store(phaseStop)
	<-finished
	elapsed := time.Since(start)
	if c.OnRecordEnd != nil {
		c.OnRecordEnd()
	}
	return elapsed, nil
}

// beginRecord calls the OnRecord hook and starts the recorded phase.
func (r *run) beginRecord() {
	if r.cfg.OnRecord != nil {
		r.cfg.OnRecord()
	}
	r.phase.Store(phaseRecord)
}

func (c *Config) check() error {
	for _, addr := range c.addrs() {
		if err := checkAddr(addr); err != nil {
			return err
		}
	}
	if c.Conns < len(c.addrs()) || c.Conns > MaxConns {
		if len(c.Addrs) > 1 {
			return fmt.Errorf("load: conns %d: want %d (one per target) to %d", c.Conns, len(c.Addrs), MaxConns)
		}
		return fmt.Errorf("load: conns %d: want 1 to %d", c.Conns, MaxConns)
	}
	if c.Duration <= 0 && c.Requests == 0 {
		return errors.New("load: set a duration, a request count, or both")
	}
	if c.Request.Path == "" || c.Request.Path[0] != '/' {
		return fmt.Errorf("load: request path %q: want an absolute path", c.Request.Path)
	}
	if k := c.Request.Keys; k != nil {
		if err := k.check(); err != nil {
			return err
		}
	}
	return nil
}

// checkAddr accepts a loopback host:port only.
func checkAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("load: addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("load: addr %q: only loopback targets are allowed", addr)
	}
	return nil
}

// run is the state the workers of one run share.
type run struct {
	cfg     *Config
	clients []*fasthttp.HostClient // one per target
	timeout time.Duration
	phase   atomic.Int32
	issued  atomic.Uint64 // recorded requests started, against Config.Requests
	// bearers are the Authorization values of Request.Keys, and cycle the
	// next one's index when they are sent in turn.
	bearers [][]byte
	cycle   atomic.Uint64
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

// worker sends requests on its own connection.
type worker struct {
	r      *run
	client *fasthttp.HostClient
	req    *fasthttp.Request
	resp   *fasthttp.Response
	keys   keyPicker
	// hist holds the latencies of correct answers, refused those of correct
	// refusals. RunOpen times both from when a request was due; it keeps in
	// service the times from when it was sent and in lag how late that was.
	hist, refused, service, lag Histogram
	errs                        errorCounts
}

func newWorker(r *run, i int) *worker {
	c := r.cfg
	req := fasthttp.AcquireRequest()
	rq := &c.Request
	client := r.clients[i%len(r.clients)]
	req.SetRequestURI("http://" + client.Addr + rq.Path)
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
	w := &worker{r: r, client: client, req: req, resp: fasthttp.AcquireResponse()}
	if rq.Keys != nil {
		w.keys = newKeyPicker(rq.Keys, r.bearers, &r.cycle, uint64(i))
	}
	return w
}

func (w *worker) release() {
	fasthttp.ReleaseRequest(w.req)
	fasthttp.ReleaseResponse(w.resp)
}

// do sends the worker's request, with the next key if it draws keys.
func (w *worker) do() error {
	if w.keys.bearers != nil {
		w.req.Header.SetBytesV(fasthttp.HeaderAuthorization, w.keys.next())
	}
	return w.client.DoTimeout(w.req, w.resp, w.r.timeout)
}

// Outcomes of a request, as judge tells them.
const (
	outcomeOK = iota
	outcomeRefused
	outcomeError
)

// judge counts the error of a recorded request, if it has one, and tells
// what its answer was.
func (w *worker) judge(err error) int {
	rq := &w.r.cfg.Request
	status := w.resp.StatusCode()
	switch {
	case err != nil:
		w.errs.transport[transportKind(err)]++
	case status == fasthttp.StatusOK:
		if len(rq.Expect) == 0 || bytes.Contains(w.resp.Body(), rq.Expect) {
			return outcomeOK
		}
		w.errs.badBody++
	case rq.Refusal.Status != 0 && status == rq.Refusal.Status:
		if rq.Refusal.accepts(w.resp) {
			return outcomeRefused
		}
		w.errs.badRefusal++
	default:
		w.errs.status[min(max(status, 0), len(w.errs.status)-1)]++
	}
	return outcomeError
}

func (w *worker) loop() {
	r := w.r
	for {
		phase := r.phase.Load()
		if phase == phaseStop {
			return
		}
		if phase == phaseRecord && !r.claimRecorded() {
			return
		}
		start := time.Now()
		err := w.do()
		latency := time.Since(start)
		if phase != phaseRecord {
			if err != nil {
				backOff()
			}
			continue
		}
		switch w.judge(err) {
		case outcomeOK:
			w.hist.Record(latency)
		case outcomeRefused:
			w.refused.Record(latency)
		}
		if err != nil {
			backOff()
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
	status     [600]uint64 // by HTTP status; the last slot takes anything larger
	transport  [numKinds]uint64
	badBody    uint64
	badRefusal uint64
}

func (e *errorCounts) add(o *errorCounts) {
	for i, n := range o.status {
		e.status[i] += n
	}
	for i, n := range o.transport {
		e.transport[i] += n
	}
	e.badBody += o.badBody
	e.badRefusal += o.badRefusal
}

// summary returns the errors by kind, nil when there were none, and their
// total.
func (e *errorCounts) summary() (map[string]uint64, uint64) {
	m := e.byKind()
	var total uint64
	for _, n := range m {
		total += n
	}
	return m, total
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
	if e.badRefusal > 0 {
		m["bad_refusal"] = e.badRefusal
	}
	if len(m) == 0 {
		return nil
	}
	return m
}
