package proxy

import (
	"bufio"
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
	req   *fasthttp.Request
	resp  *fasthttp.Response
	model []byte
}

var streamBufs = sync.Pool{New: func() any { b := make([]byte, streamBufSize); return &b }}

// stream starts relaying resp, an upstream event stream, to the client. It takes
// ownership of req and resp.
func (s *Server) stream(ctx *fasthttp.RequestCtx, req *fasthttp.Request, resp *fasthttp.Response, f *requestFields) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentTypeBytes(contentTypeSSE)
	ctx.Response.Header.SetCanonical(headerCacheControl, valueNoCache)
	ctx.Response.Header.SetCanonical(headerAccelBuffer, valueNo)
	// The model name lives in the client's body, which is recycled when the
	// handler returns; keep a copy for the error event.
	r := &streamRelay{req: req, resp: resp, model: append([]byte(nil), f.model...)}
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
	}()
	bp := streamBufs.Get().(*[]byte)
	defer streamBufs.Put(bp)
	buf := *bp
	body := r.resp.BodyStream()
	var tail [2]byte // the last two bytes sent, to close a half-sent event
	for {
		n, err := body.Read(buf)
		if n > 0 {
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

// b2s views b as a string without copying; b must not change while it is used.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
