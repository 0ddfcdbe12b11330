package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
	"unsafe"

	"github.com/valyala/fasthttp"
)

var (
	headerCacheControl  = []byte(fasthttp.HeaderCacheControl)
	headerAccelBuffer   = []byte("X-Accel-Buffering")
	valueNoCache        = []byte("no-cache")
	valueNo             = []byte("no")
	contentTypeSSE      = []byte("text/event-stream")
	streamBufSize       = 16 << 10
	errStreamCut        = &apiError{typ: typeServer, code: "upstream_error", message: "The upstream stream ended abnormally for the model: "}
	errStreamEventTimed = &apiError{typ: typeServer, code: "upstream_timeout", message: "The upstream stream stalled for the model: "}
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
	// tail keeps the stream's last bytes, where the upstream's usage chunk
	// is; events counts data events, for an estimate when there is none.
	tail   []byte
	events int64
}

// streamTail is how much of a stream's end is kept to find its usage chunk.
const streamTail = 4 << 10

var streamBufs = sync.Pool{New: func() any { b := make([]byte, streamBufSize); return &b }}

// stream starts relaying resp, an upstream event stream, to the client. It takes
// ownership of req and resp.
func (s *Server) stream(ctx *fasthttp.RequestCtx, req *fasthttp.Request, resp *fasthttp.Response, f *requestFields, c *claim) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentTypeBytes(contentTypeSSE)
	ctx.Response.Header.SetCanonical(headerCacheControl, valueNoCache)
	ctx.Response.Header.SetCanonical(headerAccelBuffer, valueNo)
	// The model name lives in the client's body, which is recycled when the
	// handler returns; keep a copy for the error event.
	r := &streamRelay{s: s, req: req, resp: resp, model: append([]byte(nil), f.model...), claim: *c,
		reqID: append([]byte(nil), ctx.Response.Header.Peek(headerRequestID)...)}
	ctx.SetBodyStreamWriter(r.relay)
}

// relay copies the upstream's bytes as they arrive, flushing after each read
// so every event reaches the client at once. Bytes pass through untouched. If
// the upstream breaks off, the client gets a final OpenAI-shaped error event.
func (r *streamRelay) relay(w *bufio.Writer) {
	defer func() {
		r.resp.CloseBodyStream() //nolint:errcheck // discards the connection unless fully read
		fasthttp.ReleaseResponse(r.resp)
		fasthttp.ReleaseRequest(r.req)
		r.settle()
	}()
	bp := streamBufs.Get().(*[]byte)
	defer streamBufs.Put(bp)
	buf := *bp
	body := r.resp.BodyStream()
	var tail [2]byte // the last two bytes sent, to close a half-sent event
	for {
		n, err := body.Read(buf)
		if n > 0 {
			r.observe(buf[:n])
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the client went away
			}
			if werr := w.Flush(); werr != nil {
				return
			}
			if n >= 2 {
				tail[0], tail[1] = buf[n-2], buf[n-1]
			} else {
				tail[0], tail[1] = tail[1], buf[0]
			}
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			return
		}
		e := errStreamCut
		if isTimeout(err) {
			e = errStreamEventTimed
		}
		var ev []byte
		if tail != [2]byte{'\n', '\n'} {
			ev = append(ev, "\n\n"...)
		}
		ev = append(ev, "data: "...)
		ev = appendError(ev, e, r.model)
		ev = append(ev, "\n\n"...)
		w.Write(ev) //nolint:errcheck // best effort: the stream is over either way
		w.Flush()   //nolint:errcheck
		return
	}
}

var (
	dataPrefix = []byte("data: {")
	usageKey   = []byte(`"usage":{`)
)

// observe notes what passed: data events, and the latest bytes.
func (r *streamRelay) observe(p []byte) {
	r.events += int64(bytes.Count(p, dataPrefix))
	r.tail = append(r.tail, p...)
	if len(r.tail) > 2*streamTail {
		r.tail = append(r.tail[:0], r.tail[len(r.tail)-streamTail:]...)
	}
}

// settle bills the stream: the upstream's usage chunk when it sent one (it
// does when the client asked for stream_options.include_usage), else an
// estimate of one token per content event.
func (r *streamRelay) settle() {
	if i := bytes.LastIndex(r.tail, usageKey); i >= 0 {
		start := bytes.LastIndex(r.tail[:i], dataPrefix)
		end := bytes.IndexByte(r.tail[i:], '\n')
		if start >= 0 && end > 0 {
			if p, c, ok := readUsage(r.tail[start+len(dataPrefix)-1 : i+end]); ok {
				r.s.settle(&r.claim, p, c, true, r.reqID)
				return
			}
		}
	}
	// The first and last chunks of a chat stream carry no content.
	completion := min(max(r.events-2, 0), r.claim.maxOutput)
	r.s.settle(&r.claim, 0, completion, false, r.reqID)
}

// b2s views b as a string without copying; b must not change while it is used.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
