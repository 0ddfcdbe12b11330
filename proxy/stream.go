package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/proxy/openai"
	"github.com/tokenhub/tokenhub/proxy/upstream"
	"github.com/tokenhub/tokenhub/sse"
)

var (
	headerCacheControl    = []byte(fasthttp.HeaderCacheControl)
	headerAccelBuffer     = []byte("X-Accel-Buffering")
	valueNoCache          = []byte("no-cache")
	valueNo               = []byte("no")
	contentTypeSSE        = []byte("text/event-stream")
	errStreamCut          = &apiError{typ: typeServer, code: "upstream_error", message: "The upstream stream ended abnormally for the model: "}
	errStreamEventTimed   = &apiError{typ: typeServer, code: "upstream_timeout", message: "The upstream stream stalled for the model: "}
	errStreamEventTooLong = &apiError{typ: typeServer, code: "upstream_error", message: "The upstream sent an event too long to relay for the model: "}
	errStreamBudget       = &apiError{typ: "insufficient_quota", code: "budget_exceeded",
		message: "The monthly budget ran out during the stream, which was cut at the cap; what was produced is billed. Model: "}
)

// streamRelay carries one stream from the upstream to the client. It takes
// the client's connection over from fasthttp (a hijack) once the upstream
// has answered, and writes the response itself: the headers at once, then
// each upstream read's events as one chunk, so a stream costs one goroutine
// and, between reads, no buffer of its own (see sse.Scanner.Release). When
// the stream ends the connection goes back to serving requests.
type streamRelay struct {
	s     *Server
	req   *fasthttp.Request
	resp  *fasthttp.Response
	claim claim
	reqID []byte
	// injected: the gateway asked the upstream for usage on the client's
	// behalf, so the usage chunk and the "usage":null fields it causes are
	// the gateway's to remove.
	injected bool
	sc       *sse.Scanner
	// events reads the stream's protocol: chat (and legacy completion)
	// chunks, or the Responses API's typed events.
	events    eventReader
	responses bool
	// claude, when set, translates the upstream's Messages events into chat
	// chunks, which are what the client gets (claude_stream.go).
	claude *claudeStream
	// sequence is how many events with data were relayed: the Responses
	// API numbers its events from 0, so it is the number of the next one.
	sequence int64

	usageKnown bool
	used       usd.Tokens // the upstream's usage, once usageKnown
	// contentEvents and contentBytes count the events with generated text and
	// that text's bytes: the running estimate of the output until (and
	// unless) the upstream reports its usage.
	contentEvents, contentBytes int64
	// journaled is contentEvents when the stream's count was last written
	// to the usage journal.
	journaled int64
	// reserveStep is what a stream extends its budget reservation by at a time.
	reserveStep usd.Pico
	clientGone  bool
	drainStart  time.Time

	// conn is the client's connection; head the response header, written
	// first. chunked: the body is chunked, so the connection can carry the
	// next request; else it is closed after the stream (HTTP/1.0 clients,
	// Connection: close).
	conn    net.Conn
	head    *[]byte // from outBufs until written
	chunked bool
	body    io.Reader // the upstream answer's body
	// out is the next write, taken from outBufs for the time between an
	// upstream read and its write: chunkHead reserved bytes for the chunk
	// size, then the events.
	out *[]byte
	// writeBy is the client connection's write deadline, moved on at most
	// once a second.
	writeBy time.Time
}

const (
	// maxStreamEvent bounds one event; a longer one ends the stream with an
	// error. A Responses stream's events may be longer (responsesEventLimit).
	maxStreamEvent = 1 << 20
	// streamReadSize is the most one upstream read takes.
	streamReadSize = 4 << 10
	// chunkHead is room for a chunk's size line: 8 hex digits and CRLF.
	chunkHead = 10
)

var outBufs = sync.Pool{New: func() any { b := make([]byte, 0, chunkHead+streamReadSize+512); return &b }}

// eventReader reads, from the data of one event, what the relay needs: its
// usage, whether it ends what is billed, and the generated text it carries.
// One implementation per protocol (openai.ChatEvents, openai.ResponsesEvents);
// they are empty structs, so holding one in the interface allocates nothing.
type eventReader interface {
	Read(data []byte) openai.Event
}

// responsesEventLimit bounds one event of a Responses stream for a body of
// bodyLen bytes and at most maxOutput output tokens. Unlike a chat chunk, an
// event may carry the whole response: response.created and the final event
// echo the request's instructions and tools (at most the body, re-escaped at
// up to three times its bytes: \u00e9 for é), and the done events repeat the
// whole output (16 bytes a token, escaped, is generous). The scanner grows to
// an event's size only when one is that long.
func responsesEventLimit(bodyLen int, maxOutput int64) int {
	return maxStreamEvent + 3*bodyLen + int(min(maxOutput, openai.MaxBoundTokens))*16
}

// stream relays resp, an upstream event stream, to the client once the
// handler returns. It takes ownership of req and resp.
func (s *Server) stream(ctx *fasthttp.RequestCtx, req *fasthttp.Request, resp *fasthttp.Response, f *openai.Request, c *claim, injected bool) {
	h := &ctx.Response.Header
	h.SetStatusCode(fasthttp.StatusOK)
	h.SetContentTypeBytes(contentTypeSSE)
	h.SetCanonical(headerCacheControl, valueNoCache)
	h.SetCanonical(headerAccelBuffer, valueNo)
	chunked := ctx.Request.Header.IsHTTP11() && !ctx.Request.Header.ConnectionClose()
	if chunked {
		h.SetContentLength(-1) // Transfer-Encoding: chunked
	} else {
		h.SetConnectionClose()
		h.SetContentLength(-2) // the body ends when the connection does
	}
	c.rec.stream = true
	c.rec.gatewayDur = time.Since(c.rec.start) - c.rec.upstreamDur
	s.metrics.openStreams.Add(1)
	eventLimit := maxStreamEvent
	if c.rec.ep == upstream.Responses {
		eventLimit = responsesEventLimit(len(ctx.PostBody()), c.maxOutput)
	}
	r := &streamRelay{s: s, req: req, resp: resp, claim: *c,
		reqID: append([]byte(nil), h.Peek(headerRequestID)...), injected: injected,
		sc: sse.NewScanner(eventLimit), reserveStep: c.model.price.Cost(0, streamReserveTokens*f.N),
		chunked: chunked, events: openai.ChatEvents{}}
	switch c.rec.ep {
	case upstream.Responses:
		r.events, r.responses = openai.ResponsesEvents{}, true
	case upstream.Messages:
		r.events = &messageEvents{maxOutput: c.maxOutput}
	}
	if c.claude {
		r.translateClaude(c.model.name, c.rec.start.Unix(), c.claudeInfo.IncludeUsage)
	}
	r.head = outBufs.Get().(*[]byte)
	*r.head = h.AppendBytes((*r.head)[:0])
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(r.serve)
}

// serve is the hijack handler. It takes the client's own connection from
// fasthttp's wrapper, relays up to the first event, then leaves the rest of
// the stream to a goroutine of its own, so that the handler returns and
// fasthttp drops the request's read buffer, which the wrapper holds, rather
// than keep it for the stream's whole life. The first event goes out before
// that goroutine starts: a new goroutine may wait for a thread to wake,
// which the time to first byte should not.
func (r *streamRelay) serve(hijacked net.Conn) {
	c := unwrapConn(hijacked)
	r.conn = c
	r.s.streams.track(c, fasthttp.StateNew)
	r.begin()
	for r.claim.rec.ttfb == 0 {
		if done, keep := r.step(); done {
			r.end(keep)
			return
		}
	}
	go r.run()
}

// run relays the rest of the stream.
func (r *streamRelay) run() {
	for {
		if done, keep := r.step(); done {
			r.end(keep)
			return
		}
	}
}

// end settles the stream and, when it ended cleanly and the gateway is not
// shutting down, serves the connection's next requests, as fasthttp would
// have; else closes it.
func (r *streamRelay) end(keep bool) {
	s, c := r.s, r.conn
	r.finishStream()
	s.streams.track(c, fasthttp.StateClosed)
	if !keep || s.draining.Load() {
		c.Close() //nolint:errcheck // the stream is over either way
		return
	}
	// Between the stream and the next request the connection is idle (see
	// handedConn); a connection that carried a stream before is one already.
	hc, ok := c.(*handedConn)
	if !ok {
		hc = &handedConn{Conn: c}
	}
	hc.idle.Store(true)
	s.conns.track(hc, fasthttp.StateNew)
	s.http.ServeConn(hc) //nolint:errcheck // it closes hc; what went wrong is the client's
}

// unwrapConn returns the connection under fasthttp's hijacked wrapper, so
// that neither the stream nor the requests served after it read through
// the wrapper's buffer (each stream would otherwise add a layer). Bytes
// already buffered there, a pipelined request that clients all but never
// send, are kept in front of it.
func unwrapConn(hijacked net.Conn) net.Conn {
	u, ok := hijacked.(interface{ UnsafeConn() net.Conn })
	if !ok {
		return hijacked
	}
	c := u.UnsafeConn()
	// A deadline in the past makes the read return at once: the buffered
	// bytes if there are any, else a timeout, without a system call.
	var b [1]byte
	c.SetReadDeadline(time.Unix(1, 0)) //nolint:errcheck // the read then fails, which is the same
	n, _ := hijacked.Read(b[:])
	c.SetReadDeadline(time.Time{}) //nolint:errcheck // a failed reset shows on the next read
	if n == 0 {
		return c
	}
	return &prefixedConn{Conn: c, r: io.MultiReader(bytes.NewReader(b[:n]), hijacked)}
}

// prefixedConn reads r, bytes read off the connection already and then the
// connection, and writes to the connection.
type prefixedConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// begin sends the response header. The upstream has the request by now, so
// its buffers go back to serve other requests.
func (r *streamRelay) begin() {
	fasthttp.ReleaseRequest(r.req)
	r.req = nil
	r.body = r.resp.BodyStream()
	r.write(*r.head)
	outBufs.Put(r.head)
	r.head = nil
}

// step relays what one upstream read brings, writing its events at once so
// each reaches the client as it arrives, byte for byte (less what the
// gateway itself asked for). If the upstream breaks off, the client gets a
// final OpenAI-shaped error event at an event boundary. If the client goes
// away, the upstream is still read, within bounds, so that its usage is
// billed. It reports whether the stream is over and, if so, whether the
// client's connection can carry on.
func (r *streamRelay) step() (done, keep bool) {
	n, err := r.sc.Fill(r.body, streamReadSize)
	if n > 0 {
		if e := r.pass(); e != nil {
			return true, r.fail(e)
		}
		r.journal()
		r.flush(false)
	}
	r.sc.Release()
	if r.clientGone && (r.drainStart.IsZero() || time.Since(r.drainStart) > r.s.drainTimeout) {
		return true, false // no drain allowed, or it took too long: bill the estimate
	}
	switch {
	case err == nil:
		return false, false
	case errors.Is(err, io.EOF):
		r.sc.End()
		if e := r.pass(); e != nil {
			return true, r.fail(e)
		}
		if r.claude == nil {
			r.emit(r.sc.Pending())
		} else if !r.claude.t.Done() {
			// A Messages stream ends with message_stop or an error event:
			// one that stops short was cut.
			r.s.metrics.upstreamEvent(r.claim.rec.upstream, upstreamStreamCut)
			return true, r.fail(errStreamCut)
		}
		// Settling journals the final count before the client can see the end.
		r.settle()
		return true, r.flush(true)
	}
	e := errStreamCut
	if upstream.IsTimeout(err) {
		e = errStreamEventTimed
	}
	r.s.metrics.upstreamEvent(r.claim.rec.upstream, upstreamStreamCut)
	return true, r.fail(e)
}

// finishStream releases the upstream answer (its connection goes back to
// the pool when the stream was read to its end) and bills the stream.
func (r *streamRelay) finishStream() {
	r.resp.CloseBodyStream() //nolint:errcheck // discards the connection unless fully read
	fasthttp.ReleaseResponse(r.resp)
	r.resp, r.body = nil, nil
	r.sc.Release()
	r.settle() // unless the stream's end was written to the client, billed by now
	r.releaseClaude()
	if !r.drainStart.IsZero() {
		r.s.drains.Add(-1)
	}
	r.s.metrics.openStreams.Add(-1)
	r.s.finish(&r.claim.rec, fasthttp.StatusOK, r.reqID, time.Since(r.claim.rec.start))
}

// emit adds b to the next write.
func (r *streamRelay) emit(b []byte) {
	if r.clientGone || len(b) == 0 {
		return
	}
	if r.out == nil {
		r.out = outBufs.Get().(*[]byte)
		*r.out = (*r.out)[:chunkHead]
	}
	*r.out = append(*r.out, b...)
}

var lastChunk = []byte("0\r\n\r\n")

// flush writes what emit gathered as one chunk, with the last chunk after it
// when last is set, and gives the buffer back. It reports whether the
// connection can carry on after the body.
func (r *streamRelay) flush(last bool) (keep bool) {
	keep = last && r.chunked && !r.clientGone
	if r.out == nil {
		if !keep {
			return keep
		}
		r.out = outBufs.Get().(*[]byte)
		*r.out = (*r.out)[:chunkHead]
	}
	b, from := *r.out, chunkHead
	events := len(b) - chunkHead
	if events > 0 && r.chunked {
		// The size line goes right before the events: hex digits, CRLF.
		from -= 2
		b[from], b[from+1] = '\r', '\n'
		for n := events; n > 0; n >>= 4 {
			from--
			b[from] = hexDigits[n&0xf]
		}
		b = append(b, '\r', '\n')
	}
	if keep {
		b = append(b, lastChunk...)
	}
	if r.write(b[from:]) && events > 0 && r.claim.rec.ttfb == 0 {
		r.claim.rec.ttfb = time.Since(r.claim.rec.start)
	}
	*r.out = b[:0]
	outBufs.Put(r.out)
	r.out = nil
	return keep && !r.clientGone
}

// write writes b to the client, moving the write deadline on at most once a
// second: a client that takes nothing for the idle timeout is gone.
func (r *streamRelay) write(b []byte) bool {
	if r.clientGone {
		return false
	}
	if now := time.Now(); r.writeBy.Sub(now) < r.s.streamWriteTimeout-time.Second {
		r.writeBy = now.Add(r.s.streamWriteTimeout)
		r.conn.SetWriteDeadline(r.writeBy) //nolint:errcheck // a failed write says the same
	}
	if _, err := r.conn.Write(b); err != nil {
		r.lost()
		return false
	}
	return true
}

// lost notes that the client went away. The upstream is drained for its
// usage if a drain slot is free (max_stream_drains), else abandoned.
func (r *streamRelay) lost() {
	r.clientGone = true
	r.claim.rec.streamError = "client_disconnected"
	if r.s.drains.Add(1) <= r.s.maxDrains {
		r.drainStart = time.Now()
		return
	}
	r.s.drains.Add(-1)
}

// pass writes every complete event, noting usage and content as they go.
// It stops with the error to end the stream with when an event is too long
// to be an event, or when the monthly budget cannot cover the next one.
func (r *streamRelay) pass() *apiError {
	for {
		ev, ok, err := r.sc.Next()
		if err != nil {
			return errStreamEventTooLong
		}
		if !ok {
			return nil
		}
		if r.claim.billed {
			continue // past the protocol's end nothing is billed, so nothing is relayed
		}
		if r.claude != nil {
			if e := r.passClaude(ev); e != nil {
				return e
			}
			continue
		}
		raw := ev.Raw
		if !ev.HasData {
			r.emit(raw) // a comment or a stray blank line
			continue
		}
		e := r.events.Read(ev.Data)
		// A running usage (a native Messages stream's) counts the event's
		// own text: a cut before it is relayed bills the usage before it.
		prevUsed, prevKnown := r.used, r.usageKnown
		if e.HasUsage {
			r.used, r.usageKnown = e.Usage, true
			if r.injected && e.UsageOnly {
				continue // the client did not ask for it
			}
		}
		if e.Created && r.claim.remember {
			// Before the event is relayed, so before the client reads the id.
			r.s.rememberResponse(&r.claim, ev.Data, r.reqID)
		}
		if e.Done {
			// The client's SDK stops reading here and may ask for its usage
			// at once: bill before it can see the end.
			r.settle()
		}
		if n := e.ContentBytes; n > 0 && !e.Done {
			r.contentEvents++
			r.contentBytes += int64(n)
			if !r.covered() {
				// Not relayed, so not billed.
				r.contentEvents--
				r.contentBytes -= int64(n)
				r.used, r.usageKnown = prevUsed, prevKnown
				return errStreamBudget
			}
		}
		if r.injected {
			if i, n := usageNull(raw); i >= 0 {
				r.emit(raw[:i])
				raw = raw[i+n:]
			}
		}
		r.sequence++
		r.emit(raw)
	}
}

// journal writes the stream's count so far to the usage journal before the
// text it counts is written to the client, so that a crash before the
// stream settles still bills what the client received.
func (r *streamRelay) journal() {
	if r.contentEvents == r.journaled {
		// Nothing new to bill; the last count is copied forward if the
		// journal moved on, so a stream without text does not hold back
		// the recycling of every segment filled since its last.
		r.s.gate.RenewProgress(&r.claim.ticket)
		return
	}
	r.journaled = r.contentEvents
	used := usd.Tokens{Prompt: r.claim.prompt, Completion: r.produced()}
	if r.usageKnown {
		used = r.used
	}
	r.s.gate.Progress(&r.claim.ticket, used, r.claim.model.price, time.Now())
}

// produced is the output so far: the upstream's count once it reported one,
// else an estimate from what was relayed, a token per event with text or a
// token per four bytes of it, whichever is more, within what was admitted.
func (r *streamRelay) produced() int64 {
	if r.usageKnown {
		return r.used.Completion
	}
	return r.estimatedOutput()
}

// estimatedOutput is produced's estimate from what was relayed.
func (r *streamRelay) estimatedOutput() int64 {
	return min(max(r.contentEvents, (r.contentBytes+3)/4), r.claim.maxOutput)
}

// covered reports whether the stream's budget reservation covers the cost of
// what it has produced, extending the reservation a step when it falls short
// (or, at the end of the budget, by just what is short). False means the
// monthly cap has no room for it: the stream must end.
func (r *streamRelay) covered() bool {
	c := &r.claim
	if !c.ticket.Capped() {
		return true // no monthly budget to hold the running cost against
	}
	// Before its usage, the stream cannot know its cached part: the bound
	// holds whichever price the prompt turns out at.
	cost := c.model.price.Bound(c.prompt, r.produced())
	held := c.ticket.Reserved()
	if cost <= held {
		return true
	}
	g, now := r.s.gate, time.Now()
	return g.Extend(context.Background(), &c.ticket, max(cost-held, r.reserveStep), now) ||
		g.Extend(context.Background(), &c.ticket, cost-held, now)
}

var (
	usageNullAfter  = []byte(`,"usage":null`)
	usageNullBefore = []byte(`"usage":null,`)
)

// usageNull finds the "usage":null field that asking for usage adds to every
// chunk, which the relay leaves out so the client sees chunks as it asked
// for them: its offset in raw and its length, with its comma; -1 if none.
// Inside a JSON string those quotes would be escaped, so a match is always
// the field.
func usageNull(raw []byte) (int, int) {
	if i := bytes.LastIndex(raw, usageNullAfter); i >= 0 {
		return i, len(usageNullAfter)
	}
	return bytes.Index(raw, usageNullBefore), len(usageNullBefore)
}

// fail ends the client's stream with an OpenAI-shaped error event, at an
// event boundary: an incomplete event from the upstream is dropped. It
// reports whether the connection can carry on.
func (r *streamRelay) fail(e *apiError) bool {
	if !r.clientGone {
		r.claim.rec.streamError = e.code
	}
	if e == errStreamBudget {
		r.s.log.Info("stream cut at the monthly budget", "model", r.claim.model.name, "request_id", string(r.reqID),
			"client_gone", r.clientGone)
	}
	var b [320]byte
	// The model's name is the client's: the model table is looked up by it.
	var ev []byte
	switch {
	case r.responses:
		ev = appendResponsesErrorEvent(b[:0], e, []byte(r.claim.model.name), r.sequence)
	case r.claim.rec.ep == upstream.Messages:
		ev = appendAnthropicErrorEvent(b[:0], e, []byte(r.claim.model.name))
	default:
		ev = append(b[:0], "data: "...)
		ev = appendError(ev, e, []byte(r.claim.model.name))
		ev = append(ev, "\n\n"...)
	}
	r.emit(ev)
	r.settle()
	return r.flush(true)
}

// appendResponsesErrorEvent appends the Responses API's error event, as
// OpenAI sends it when a response fails midway (openai-go's
// responses.ResponseErrorEvent): typed "error", with the code and message
// flat in the data, numbered seq, the next in the stream.
func appendResponsesErrorEvent(b []byte, e *apiError, detail []byte, seq int64) []byte {
	b = append(b, "event: error\ndata: {\"type\":\"error\",\"code\":"...)
	b = appendNullableString(b, e.code)
	b = append(b, `,"message":"`...)
	b = appendEscaped(b, e.message)
	b = appendEscapedBytes(b, detail)
	b = append(b, `","param":null,"sequence_number":`...)
	b = strconv.AppendInt(b, seq, 10)
	return append(b, "}\n\n"...)
}

// settle bills the stream, once: the upstream's usage when it sent it (the
// gateway asks for it on every stream), else an estimate from the content
// relayed. It runs before the write that tells the client the stream is over
// ([DONE], the last chunk, a final error event; the connection's close comes
// after finishStream), so a client reading its usage right after the stream
// finds it counted.
func (r *streamRelay) settle() {
	if r.claim.billed {
		return
	}
	if r.usageKnown {
		r.s.settle(&r.claim, r.used, true, r.reqID)
		return
	}
	r.s.settle(&r.claim, usd.Tokens{Completion: r.produced()}, false, r.reqID)
}

// b2s views b as a string without copying; b must not change while it is used.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
