package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/limits"
	"github.com/tokenhub/tokenhub/sse"
)

var (
	headerCacheControl    = []byte(fasthttp.HeaderCacheControl)
	headerAccelBuffer     = []byte("X-Accel-Buffering")
	valueNoCache          = []byte("no-cache")
	valueNo               = []byte("no")
	contentTypeSSE        = []byte("text/event-stream")
	streamBufSize         = 16 << 10
	errStreamCut          = &apiError{typ: typeServer, code: "upstream_error", message: "The upstream stream ended abnormally for the model: "}
	errStreamEventTimed   = &apiError{typ: typeServer, code: "upstream_timeout", message: "The upstream stream stalled for the model: "}
	errStreamEventTooLong = &apiError{typ: typeServer, code: "upstream_error", message: "The upstream sent an event too long to relay for the model: "}
	errStreamBudget       = &apiError{typ: "insufficient_quota", code: "budget_exceeded",
		message: "The monthly budget ran out during the stream, which was cut at the cap; what was produced is billed. Model: "}
)

// streamRelay carries one stream from the upstream to the client. It outlives
// the handler: fasthttp calls the body writer after the handler returns.
type streamRelay struct {
	s     *Server
	req   *fasthttp.Request
	resp  *fasthttp.Response
	model []byte
	claim claim
	reqID []byte
	// injected: the gateway asked the upstream for usage on the client's
	// behalf, so the usage chunk and the "usage":null fields it causes are
	// the gateway's to remove.
	injected bool
	sc       *sse.Scanner
	scratch  []byte

	usageKnown         bool
	prompt, completion int64
	// contentEvents and contentBytes count the events with generated text and
	// that text's bytes: the running estimate of the output until (and
	// unless) the upstream reports its usage.
	contentEvents, contentBytes int64
	// step is what a stream extends its budget reservation by at a time.
	step       limits.PicoUSD
	clientGone bool
	drainStart time.Time
}

// maxStreamEvent bounds one event; a longer one ends the stream with an error.
const maxStreamEvent = 1 << 20

var streamBufs = sync.Pool{New: func() any { b := make([]byte, streamBufSize); return &b }}

// stream starts relaying resp, an upstream event stream, to the client. It
// takes ownership of req and resp.
func (s *Server) stream(ctx *fasthttp.RequestCtx, req *fasthttp.Request, resp *fasthttp.Response, f *requestFields, c *claim, injected bool) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentTypeBytes(contentTypeSSE)
	ctx.Response.Header.SetCanonical(headerCacheControl, valueNoCache)
	ctx.Response.Header.SetCanonical(headerAccelBuffer, valueNo)
	c.rec.stream = true
	c.rec.gatewayDur = time.Since(c.rec.start) - c.rec.upstreamDur
	s.metrics.openStreams.Add(1)
	// The model name lives in the client's body, which is recycled when the
	// handler returns; keep a copy for the error event.
	r := &streamRelay{s: s, req: req, resp: resp, model: append([]byte(nil), f.model...), claim: *c,
		reqID: append([]byte(nil), ctx.Response.Header.Peek(headerRequestID)...), injected: injected,
		sc: sse.NewScanner(maxStreamEvent), step: c.model.price.Cost(0, streamReserveTokens*f.n)}
	ctx.SetBodyStreamWriter(r.relay)
}

// relay passes the upstream's events on as they arrive, flushing after each
// read so every event reaches the client at once, byte for byte (less what
// the gateway itself asked for). If the upstream breaks off, the client gets
// a final OpenAI-shaped error event at an event boundary. If the client goes
// away, the upstream is still read, within bounds, so that its usage is
// billed.
func (r *streamRelay) relay(w *bufio.Writer) {
	defer func() {
		r.resp.CloseBodyStream() //nolint:errcheck // discards the connection unless fully read
		fasthttp.ReleaseResponse(r.resp)
		fasthttp.ReleaseRequest(r.req)
		r.settle()
		if !r.drainStart.IsZero() {
			r.s.drains.Add(-1)
		}
		r.s.metrics.openStreams.Add(-1)
		r.s.finish(&r.claim.rec, fasthttp.StatusOK, r.reqID, time.Since(r.claim.rec.start))
	}()
	bp := streamBufs.Get().(*[]byte)
	defer streamBufs.Put(bp)
	buf := *bp
	body := r.resp.BodyStream()
	for {
		n, err := body.Read(buf)
		if n > 0 {
			r.sc.Feed(buf[:n])
			if e := r.pass(w); e != nil {
				r.fail(w, e)
				return
			}
			if !r.clientGone {
				if w.Flush() != nil {
					r.lost()
				} else if r.claim.rec.ttfb == 0 {
					r.claim.rec.ttfb = time.Since(r.claim.rec.start)
				}
			}
		}
		if r.clientGone && (r.drainStart.IsZero() || time.Since(r.drainStart) > r.s.drainTimeout) {
			return // no drain allowed, or it took too long: bill the estimate
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			r.sc.End()
			if e := r.pass(w); e != nil {
				r.fail(w, e)
				return
			}
			if !r.clientGone {
				w.Write(r.sc.Pending()) //nolint:errcheck // the stream is over either way
				w.Flush()               //nolint:errcheck
			}
			return
		}
		e := errStreamCut
		if isTimeout(err) {
			e = errStreamEventTimed
		}
		r.s.metrics.upstreamEvent(r.claim.rec.upstream, upstreamStreamCut)
		r.fail(w, e)
		return
	}
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
func (r *streamRelay) pass(w *bufio.Writer) *apiError {
	for {
		ev, ok, err := r.sc.Next()
		if err != nil {
			return errStreamEventTooLong
		}
		if !ok {
			return nil
		}
		raw := ev.Raw
		if ev.HasData && !ev.IsDone() {
			if p, c, ok := sse.ChunkUsage(ev.Data); ok {
				r.prompt, r.completion, r.usageKnown = p, c, true
				if r.injected && sse.IsUsageOnlyChunk(ev.Data) {
					continue // the client did not ask for it
				}
			}
			if n := sse.ContentBytes(ev.Data); n > 0 {
				r.contentEvents++
				r.contentBytes += int64(n)
				if !r.covered() {
					// Not relayed, so not billed.
					r.contentEvents--
					r.contentBytes -= int64(n)
					return errStreamBudget
				}
			}
			if r.injected {
				raw = r.stripUsageNull(raw)
			}
		}
		if !r.clientGone {
			if _, err := w.Write(raw); err != nil {
				r.lost()
			}
		}
	}
}

// produced is the output so far: the upstream's count once it reported one,
// else an estimate from what was relayed, a token per event with text or a
// token per four bytes of it, whichever is more, within what was admitted.
func (r *streamRelay) produced() int64 {
	if r.usageKnown {
		return r.completion
	}
	return min(max(r.contentEvents, (r.contentBytes+3)/4), r.claim.maxOutput)
}

// covered reports whether the stream's budget reservation covers the cost of
// what it has produced, extending the reservation a step when it falls short
// (or, at the end of the budget, by just what is short). False means the
// monthly cap has no room for it: the stream must end.
func (r *streamRelay) covered() bool {
	c := &r.claim
	cost := c.model.price.Cost(c.prompt, r.produced())
	held := c.ticket.Reserved()
	if cost <= held {
		return true
	}
	g, now := r.s.gate, time.Now()
	return g.Extend(context.Background(), &c.ticket, max(cost-held, r.step), now) ||
		g.Extend(context.Background(), &c.ticket, cost-held, now)
}

var (
	usageNullAfter  = []byte(`,"usage":null`)
	usageNullBefore = []byte(`"usage":null,`)
)

// stripUsageNull removes the "usage":null field that asking for usage adds
// to every chunk, so the client sees chunks as it asked for them. Inside a
// JSON string those quotes would be escaped, so a match is always the field.
func (r *streamRelay) stripUsageNull(raw []byte) []byte {
	i, n := bytes.LastIndex(raw, usageNullAfter), len(usageNullAfter)
	if i < 0 {
		if i, n = bytes.Index(raw, usageNullBefore), len(usageNullBefore); i < 0 {
			return raw
		}
	}
	r.scratch = append(append(r.scratch[:0], raw[:i]...), raw[i+n:]...)
	return r.scratch
}

// fail ends the client's stream with an OpenAI-shaped error event, at an
// event boundary: an incomplete event from the upstream is dropped.
func (r *streamRelay) fail(w *bufio.Writer, e *apiError) {
	if !r.clientGone {
		r.claim.rec.streamError = e.code
	}
	if e == errStreamBudget {
		r.s.log.Info("stream cut at the monthly budget", "model", string(r.model), "request_id", string(r.reqID),
			"client_gone", r.clientGone)
	}
	if r.clientGone {
		return
	}
	var b [256]byte
	ev := append(b[:0], "data: "...)
	ev = appendError(ev, e, r.model)
	ev = append(ev, "\n\n"...)
	w.Write(ev) //nolint:errcheck // best effort: the stream is over either way
	w.Flush()   //nolint:errcheck
}

// settle bills the stream: the upstream's usage when it sent it (the gateway
// asks for it on every stream), else an estimate from the content relayed.
func (r *streamRelay) settle() {
	if r.usageKnown {
		r.s.settle(&r.claim, r.prompt, r.completion, true, r.reqID)
		return
	}
	r.s.settle(&r.claim, 0, r.produced(), false, r.reqID)
}

// b2s views b as a string without copying; b must not change while it is used.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
