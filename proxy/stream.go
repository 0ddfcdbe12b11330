package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

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
	contentBytes       int64 // of content and text, for an estimate without usage
	clientGone         bool
	drainStart         time.Time
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
	// The model name lives in the client's body, which is recycled when the
	// handler returns; keep a copy for the error event.
	r := &streamRelay{s: s, req: req, resp: resp, model: append([]byte(nil), f.model...), claim: *c,
		reqID: append([]byte(nil), ctx.Response.Header.Peek(headerRequestID)...), injected: injected,
		sc: sse.NewScanner(maxStreamEvent)}
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
	}()
	bp := streamBufs.Get().(*[]byte)
	defer streamBufs.Put(bp)
	buf := *bp
	body := r.resp.BodyStream()
	for {
		n, err := body.Read(buf)
		if n > 0 {
			r.sc.Feed(buf[:n])
			if !r.pass(w) {
				r.fail(w, errStreamEventTooLong)
				return
			}
			if !r.clientGone && w.Flush() != nil {
				r.lost()
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
			r.pass(w)
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
		r.fail(w, e)
		return
	}
}

// lost notes that the client went away. The upstream is drained for its
// usage if a drain slot is free (max_stream_drains), else abandoned.
func (r *streamRelay) lost() {
	r.clientGone = true
	if r.s.drains.Add(1) <= r.s.maxDrains {
		r.drainStart = time.Now()
		return
	}
	r.s.drains.Add(-1)
}

// pass writes every complete event, noting usage and content as they go.
// It reports false when an event is too long to be an event.
func (r *streamRelay) pass(w *bufio.Writer) bool {
	for {
		ev, ok, err := r.sc.Next()
		if err != nil {
			return false
		}
		if !ok {
			return true
		}
		raw := ev.Raw
		if ev.HasData && !ev.IsDone() {
			if p, c, ok := sse.ChunkUsage(ev.Data); ok {
				r.prompt, r.completion, r.usageKnown = p, c, true
				if r.injected && sse.IsUsageOnlyChunk(ev.Data) {
					continue // the client did not ask for it
				}
			}
			r.contentBytes += int64(sse.ContentBytes(ev.Data))
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
	completion := min((r.contentBytes+3)/4, r.claim.maxOutput)
	r.s.settle(&r.claim, 0, completion, false, r.reqID)
}

// b2s views b as a string without copying; b must not change while it is used.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
