package load

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Streamed answers are read by a client of their own, HTTP/1.1 spoken by
// hand on a plain connection, so that the time an event arrived is the time
// the read that delivered it returned, not the time some library got round
// to handing it over.

// StreamResult is the outcome of a RunStreams: like a Result, but with the
// time to the first event and the whole stream's time, of correct streams
// only. A correct stream answers 200 and ends with "data: [DONE]".
type StreamResult struct {
	// Target names what was measured, for reports; RunStreams leaves it empty.
	Target string `json:"target"`
	Conns  int    `json:"conns"`
	// Elapsed is the recorded part of the run, until the last stream's end.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Streams is every stream requested in the recorded part.
	Streams uint64 `json:"streams"`
	OK      uint64 `json:"ok"`
	Errors  uint64 `json:"errors"`
	// ErrorsByKind counts errors as Result.ErrorsByKind does; "bad_body" is
	// a stream that did not end with [DONE].
	ErrorsByKind map[string]uint64 `json:"errors_by_kind,omitempty"`
	// Throughput is correct streams per second.
	Throughput float64 `json:"streams_per_second"`
	// Events is the mean number of events of a correct stream, [DONE]
	// included.
	Events float64 `json:"events_per_stream"`
	// FirstEvent is the time to first byte: from the request's sending (just
	// before the write) to the read that completed the first event.
	FirstEvent Latency `json:"first_event"`
	// Stream is the time from the request's sending to the read that
	// completed the response.
	Stream Latency `json:"stream"`
	// PerEvent is the mean Stream time divided by Events.
	PerEvent time.Duration `json:"per_event_ns"`
}

// RunStreams drives c's load like Run, but every request is a streamed
// answer, read event by event on a connection of its own; c.Requests counts
// streams. It ends early, with the streams recorded so far, when ctx is
// cancelled.
func RunStreams(ctx context.Context, c Config) (*StreamResult, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if len(c.Addrs) > 0 || c.Request.Keys != nil {
		return nil, errors.New("load: streams go to one Addr with the request's own headers: Addrs and Request.Keys are not supported")
	}
	raw, err := rawRequest(c.Addr, &c.Request)
	if err != nil {
		return nil, err
	}
	r := &run{cfg: &c, timeout: timeoutOr(c.Timeout)}
	workers := make([]*streamWorker, c.Conns)
	for i := range workers {
		workers[i] = &streamWorker{r: r, c: newStreamConn(raw)}
	}
	defer func() {
		for _, w := range workers {
			w.c.close()
		}
	}()
	elapsed, err := r.drive(ctx, func(i int) { workers[i].loop() })
	if err != nil {
		return nil, err
	}

	res := &StreamResult{Conns: c.Conns, Elapsed: elapsed}
	var first, whole Histogram
	var kinds errorCounts
	var events uint64
	for _, w := range workers {
		first.Merge(&w.first)
		whole.Merge(&w.whole)
		kinds.add(&w.errs)
		events += w.events
	}
	res.OK = whole.Count()
	res.ErrorsByKind, res.Errors = kinds.summary()
	res.Streams = res.OK + res.Errors
	if elapsed > 0 {
		res.Throughput = float64(res.OK) / elapsed.Seconds()
	}
	res.FirstEvent, res.Stream = first.Summary(), whole.Summary()
	if res.OK > 0 {
		res.Events = float64(events) / float64(res.OK)
		res.PerEvent = time.Duration(float64(res.Stream.Mean) / res.Events)
	}
	return res, nil
}

// streamWorker requests streams back to back, keeping its connection alive
// between them as a client would.
type streamWorker struct {
	r            *run
	c            *streamConn
	first, whole Histogram
	events       uint64
	errs         errorCounts
}

func (w *streamWorker) loop() {
	r := w.r
	for {
		phase := r.phase.Load()
		if phase == phaseStop {
			return
		}
		if phase == phaseRecord && !r.claimRecorded() {
			return
		}
		ttfb, took, events, err := w.stream()
		if err != nil {
			if phase == phaseRecord {
				w.errs.count(err)
			}
			if isTransport(err) {
				backOff()
			}
			continue
		}
		if phase == phaseRecord {
			w.first.Record(ttfb)
			w.whole.Record(took)
			w.events += uint64(events)
		}
	}
}

// stream requests one stream and reads it to its end, dialling first if
// the previous stream left no connection.
func (w *streamWorker) stream() (ttfb, took time.Duration, events int, err error) {
	c := w.c
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", w.r.cfg.Addr, w.r.timeout)
		if err != nil {
			return 0, 0, 0, err
		}
		c.attach(conn)
	}
	if err := c.conn.SetDeadline(time.Now().Add(w.r.timeout)); err != nil {
		c.close()
		return 0, 0, 0, err
	}
	if ttfb, err = c.begin(); err == nil {
		took, events, err = c.finish()
	}
	return ttfb, took, events, err
}

// count adds err, the error of one stream, to the counts.
func (e *errorCounts) count(err error) {
	var status statusError
	switch {
	case errors.As(err, &status):
		e.status[min(max(int(status), 0), len(e.status)-1)]++
	case errors.Is(err, errBadStream):
		e.badBody++
	default:
		e.transport[transportKind(err)]++
	}
}

// isTransport reports whether err, the error of one stream, is the
// connection's rather than the answer's: a worker backs off after one.
func isTransport(err error) bool {
	var status statusError
	return !errors.As(err, &status) && !errors.Is(err, errBadStream)
}

// MaxHeld bounds HoldConfig.Streams.
const MaxHeld = 100000

// HoldConfig describes many streams held open at once, to see what a target
// spends on each.
type HoldConfig struct {
	// Addr is the target's host:port, a loopback address as for Config.
	Addr    string
	Request Request
	// Streams is how many streams are opened, each on a connection of its
	// own; at most MaxHeld.
	Streams int
	// Openers bounds the streams being opened at a time (dialled, requested,
	// waiting for their first event); 64 when zero.
	Openers int
	// Timeout bounds the whole Hold: every stream still open that long after
	// it began is cut. DefaultTimeout when zero.
	Timeout time.Duration
}

// HoldResult is the outcome of a Hold.
type HoldResult struct {
	// Target names what was measured, for reports; Hold leaves it empty.
	Target  string `json:"target"`
	Streams int    `json:"streams"`
	// Opened counts the streams that received their first event.
	Opened int `json:"opened"`
	// Open is how many streams were open, their first event received and
	// their end not yet, when every stream had been opened or had failed:
	// when Hold called its allOpen.
	Open int `json:"open"`
	// OK counts the streams that ended correctly, with [DONE].
	OK           uint64            `json:"ok"`
	Errors       uint64            `json:"errors"`
	ErrorsByKind map[string]uint64 `json:"errors_by_kind,omitempty"`
	// OpenTime is from the start of the Hold to the last first event.
	OpenTime time.Duration `json:"open_time_ns"`
	// FirstEvent is the streams' time to first byte, under the load of
	// opening the others.
	FirstEvent Latency `json:"first_event"`
}

// Hold opens c.Streams streams, c.Openers at a time, and calls allOpen, with
// the number of streams then open, once every one has received its first
// event or failed; then it reads every stream to its end. Every stream is
// closed when Hold returns, which is at the latest c.Timeout after it began
// and at once when ctx is cancelled.
func Hold(ctx context.Context, c HoldConfig, allOpen func(open int)) (*HoldResult, error) {
	cc := Config{Addr: c.Addr, Request: c.Request, Conns: 1, Requests: 1}
	if err := cc.check(); err != nil {
		return nil, err
	}
	if c.Streams < 1 || c.Streams > MaxHeld {
		return nil, fmt.Errorf("load: streams %d: want 1 to %d", c.Streams, MaxHeld)
	}
	raw, err := rawRequest(c.Addr, &c.Request)
	if err != nil {
		return nil, err
	}
	openers := c.Openers
	if openers <= 0 {
		openers = 64
	}
	start := time.Now()
	h := &hold{
		ctx:      ctx,
		addr:     c.Addr,
		req:      raw,
		deadline: start.Add(timeoutOr(c.Timeout)),
		start:    start,
		slots:    make(chan struct{}, openers),
		firstAt:  make([]time.Duration, c.Streams),
		ttfbs:    make([]time.Duration, c.Streams),
		errs:     make([]error, c.Streams),
	}
	var ended sync.WaitGroup
	h.opened.Add(c.Streams)
	for i := range c.Streams {
		ended.Go(func() { h.stream(i) })
	}
	allOpened := make(chan struct{})
	go func() { h.opened.Wait(); close(allOpened) }()
	res := &HoldResult{Streams: c.Streams}
	select {
	case <-allOpened:
		res.Open = int(h.open.Load())
		if allOpen != nil {
			allOpen(res.Open)
		}
	case <-ctx.Done():
	}
	ended.Wait()
	<-allOpened
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load: %s: holding streams: %w", c.Addr, context.Cause(ctx))
	}

	var first Histogram
	var kinds errorCounts
	for i := range c.Streams {
		if h.firstAt[i] > 0 {
			res.Opened++
			res.OpenTime = max(res.OpenTime, h.firstAt[i])
			first.Record(h.ttfbs[i])
		}
		if h.errs[i] != nil {
			kinds.count(h.errs[i])
		} else {
			res.OK++
		}
	}
	res.FirstEvent = first.Summary()
	res.ErrorsByKind, res.Errors = kinds.summary()
	return res, nil
}

// hold is the state the streams of one Hold share; stream i writes only
// the i-th element of each slice.
type hold struct {
	ctx      context.Context
	addr     string
	req      []byte
	deadline time.Time // of every stream
	start    time.Time
	slots    chan struct{}  // one per stream being opened
	opened   sync.WaitGroup // one Done per stream, at its first event or failure
	open     atomic.Int64   // streams past their first event and not ended
	firstAt  []time.Duration
	ttfbs    []time.Duration
	errs     []error
}

// stream opens stream i and reads it to its end.
func (h *hold) stream(i int) {
	s, done, err := h.begin(i)
	h.opened.Done()
	if err != nil {
		h.errs[i] = err
		return
	}
	defer done()
	_, _, h.errs[i] = s.finish()
	h.open.Add(-1)
}

// begin opens stream i once an opener's slot is free, and returns it past
// its first event, counted open, with the function that closes it.
func (h *hold) begin(i int) (*streamConn, func(), error) {
	select {
	case h.slots <- struct{}{}:
	case <-h.ctx.Done():
		return nil, nil, context.Cause(h.ctx)
	}
	defer func() { <-h.slots }()
	dialer := net.Dialer{Deadline: h.deadline}
	conn, err := dialer.DialContext(h.ctx, "tcp", h.addr)
	if err != nil {
		return nil, nil, err
	}
	if err := conn.SetDeadline(h.deadline); err != nil {
		conn.Close() //nolint:errcheck // a failed stream: its error is the one reported
		return nil, nil, err
	}
	// SetDeadline may be called while another goroutine reads: a deadline in
	// the past cuts the read short.
	stop := context.AfterFunc(h.ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	s := newStreamConn(h.req)
	s.attach(conn)
	done := func() { stop(); s.close() }
	if h.ttfbs[i], err = s.begin(); err != nil {
		done()
		return nil, nil, err
	}
	h.firstAt[i] = time.Since(h.start)
	h.open.Add(1)
	return s, done, nil
}

// Errors of a stream that is not an error of the transport.
var (
	// errBadStream is a 200 that is not an event stream ending with [DONE].
	errBadStream = errors.New("load: not an event stream ending with [DONE]")
	// errBadFraming is an answer that is not HTTP/1.1 as this client reads it.
	errBadFraming = errors.New("load: malformed HTTP/1.1 response")
)

// statusError is an answer with a status other than 200.
type statusError int

func (e statusError) Error() string { return "load: status " + strconv.Itoa(int(e)) }

// maxStreamBody bounds the body of one stream, so that a target streaming
// for ever cannot exhaust the generator's memory before the timeout.
const maxStreamBody = 16 << 20

// doneEvent ends every correct stream.
var doneEvent = []byte("data: [DONE]\n\n")

// streamConn is one connection to a target, over which streams are
// requested one after the other.
type streamConn struct {
	req  []byte // the whole request, head and body
	conn net.Conn
	tr   timedReader
	br   *bufio.Reader

	// Of the stream in progress:
	sent       time.Time // when the request was written
	chunked    bool
	length     int  // Content-Length, -1 if none
	closeAfter bool // the connection cannot be reused after this answer
	crlfDue    bool // a chunk's data was read, not the CRLF after it
	payload    []byte
	scanned    int // bytes of payload searched for the end of an event
}

func newStreamConn(req []byte) *streamConn {
	return &streamConn{req: req}
}

// attach makes conn the connection streams are requested on.
func (s *streamConn) attach(conn net.Conn) {
	s.conn = conn
	s.tr = timedReader{conn: conn}
	if s.br == nil {
		s.br = bufio.NewReaderSize(&s.tr, 4096)
	} else {
		s.br.Reset(&s.tr)
	}
}

// close closes the connection, if any; the next stream needs a new one.
func (s *streamConn) close() {
	if s.conn != nil {
		s.conn.Close() //nolint:errcheck // dropped: the next stream dials anew
		s.conn = nil
	}
}

// begin sends the request and reads the answer up to the end of its first
// event, and returns the time from the request's sending to the read that
// completed that event. A failed stream closes the connection.
func (s *streamConn) begin() (time.Duration, error) {
	s.payload, s.scanned, s.crlfDue = s.payload[:0], 0, false
	// Timed from before the write: after it, the goroutine may be descheduled
	// long enough for the answer to be waiting when it reads.
	s.sent = time.Now()
	if _, err := s.conn.Write(s.req); err != nil {
		s.close()
		return 0, err
	}
	status, err := s.readHead()
	if err != nil {
		s.close()
		return 0, err
	}
	if status != 200 {
		s.discard()
		return 0, statusError(status)
	}
	if !s.chunked {
		// Every target streams with chunked encoding; anything else, even a
		// body of known length, is not a stream being relayed as it comes.
		s.close()
		return 0, errBadStream
	}
	for {
		last, err := s.readChunk()
		if err != nil {
			s.close()
			return 0, err
		}
		if i := bytes.Index(s.payload[max(s.scanned-1, 0):], []byte("\n\n")); i >= 0 {
			return s.tr.at.Sub(s.sent), nil
		}
		s.scanned = len(s.payload)
		if last {
			s.close()
			return 0, errBadStream
		}
	}
}

// finish reads the rest of a stream begun with begin, and returns the time
// from the request's sending to the read that completed the answer, and the
// number of events. A failed stream closes the connection, and so does an
// answer that said Connection: close.
func (s *streamConn) finish() (time.Duration, int, error) {
	for {
		last, err := s.readChunk()
		if err != nil {
			s.close()
			return 0, 0, err
		}
		if last {
			break
		}
	}
	took := s.tr.at.Sub(s.sent)
	if s.closeAfter {
		s.close()
	}
	if !bytes.HasSuffix(s.payload, doneEvent) {
		return 0, 0, errBadStream
	}
	return took, bytes.Count(s.payload, []byte("\n\n")), nil
}

// readHead reads the status line and the headers, noting how the body is
// framed, and returns the status.
func (s *streamConn) readHead() (int, error) {
	line, err := s.br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, errBadFraming
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, errBadFraming
	}
	s.chunked, s.length, s.closeAfter = false, -1, line[7] == '0'
	for range 100 {
		line, err := s.br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return status, nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, errBadFraming
		}
		value = bytes.ToLower(bytes.TrimSpace(value))
		switch {
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			s.chunked = bytes.Contains(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Content-Length")):
			if s.length, err = strconv.Atoi(string(value)); err != nil || s.length < 0 {
				return 0, errBadFraming
			}
		case bytes.EqualFold(name, []byte("Connection")):
			s.closeAfter = s.closeAfter || bytes.Contains(value, []byte("close"))
		}
	}
	return 0, errBadFraming
}

// readChunk reads the next chunk of a chunked body onto the payload, and
// reports whether it was the last. The CRLF after a chunk's data is left to
// the next call, so that reading a chunk never waits for bytes past it.
func (s *streamConn) readChunk() (last bool, err error) {
	if s.crlfDue {
		line, err := s.br.ReadSlice('\n')
		if err != nil {
			return false, err
		}
		if len(bytes.TrimRight(line, "\r\n")) != 0 {
			return false, errBadFraming
		}
		s.crlfDue = false
	}
	line, err := s.br.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	size, ok := chunkSize(line)
	if !ok {
		return false, errBadFraming
	}
	if size == 0 {
		// Trailers, if any, then the empty line that ends the body.
		for range 100 {
			line, err := s.br.ReadSlice('\n')
			if err != nil {
				return false, err
			}
			if len(bytes.TrimRight(line, "\r\n")) == 0 {
				return true, nil
			}
		}
		return false, errBadFraming
	}
	if len(s.payload)+size > maxStreamBody {
		return false, errBadStream
	}
	n := len(s.payload)
	s.payload = slices.Grow(s.payload, size)[:n+size]
	if _, err := io.ReadFull(s.br, s.payload[n:]); err != nil {
		return false, err
	}
	s.crlfDue = true
	return false, nil
}

// chunkSize parses a chunk-size line, "1a\r\n" or "1a;ext=v\r\n".
func chunkSize(line []byte) (int, bool) {
	line = bytes.TrimRight(line, "\r\n")
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || len(line) > 8 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(line), 16, 32)
	if err != nil {
		return 0, false
	}
	return int(n), true
}

// discard reads the body of an answer that is not a stream, so that the
// connection can serve the next request; it closes the connection when the
// body cannot be read to its end.
func (s *streamConn) discard() {
	switch {
	case s.closeAfter:
	case s.chunked:
		for range 1 << 16 {
			last, err := s.readChunk()
			if err != nil {
				break
			}
			if last {
				return
			}
		}
	case s.length >= 0 && s.length <= maxStreamBody:
		if _, err := s.br.Discard(s.length); err == nil {
			return
		}
	}
	s.close()
}

// timedReader notes when each read that returned bytes did.
type timedReader struct {
	conn net.Conn
	at   time.Time
}

func (r *timedReader) Read(p []byte) (int, error) {
	n, err := r.conn.Read(p)
	if n > 0 {
		r.at = time.Now()
	}
	return n, err
}

// rawRequest is the bytes of r sent to addr: its head, with Host,
// Content-Type and Content-Length, and its body.
func rawRequest(addr string, r *Request) ([]byte, error) {
	method := r.Method
	if method == "" {
		method = "POST"
	}
	b := []byte(method + " " + r.Path + " HTTP/1.1\r\nHost: " + addr + "\r\n")
	hasType := false
	for _, h := range r.Headers {
		if bytes.ContainsAny([]byte(h.Name+h.Value), "\r\n") || h.Name == "" {
			return nil, fmt.Errorf("load: header %q: want a name and a value without line breaks", h.Name)
		}
		hasType = hasType || bytes.EqualFold([]byte(h.Name), []byte("Content-Type"))
		b = append(b, h.Name+": "+h.Value+"\r\n"...)
	}
	if len(r.Body) > 0 {
		if !hasType {
			b = append(b, "Content-Type: application/json\r\n"...)
		}
		b = append(b, "Content-Length: "+strconv.Itoa(len(r.Body))+"\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, r.Body...), nil
}
