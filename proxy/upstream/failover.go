package upstream

import (
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

var (
	errPeerClosed  = errors.New("closed by the upstream")
	errUnsolicited = errors.New("the upstream sent bytes before the request")
)

// errNotSent is what every error that proves the upstream never received
// the request matches (errors.Is).
var errNotSent = errors.New("the request was never sent")

// notSentError is a request found unsendable before a byte of it was
// written: the connection was closed by the upstream (reused: a pooled
// one), or the first write failed.
type notSentError struct {
	reused bool
	err    error
}

func (e *notSentError) Error() string {
	return "the upstream connection was closed before the request was written: " + e.err.Error()
}
func (e *notSentError) Is(target error) bool { return target == errNotSent }
func (e *notSentError) Unwrap() error        { return e.err }

// retryStale lets fasthttp send a request again on another connection
// only when a pooled one was found closed before a byte of the request was
// written (see upstreamConn.Write): the upstream never saw it, so the second
// send is the first it gets. A request that may have been read, even if the
// upstream then closed without a byte of answer, is never sent again: the
// provider may have run and billed it. A fresh connection failing is not
// retried here but reported, for the caller to fail over (see NeverSent).
func retryStale(_ *fasthttp.Request, _ int, err error) (resetTimeout, retry bool) {
	var e *notSentError
	return false, errors.As(err, &e) && e.reused
}

// dialError marks a failure to connect, which always allows failover.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// IsTimeout reports whether err is the upstream taking too long (as opposed to
// refusing or dropping the connection): a connect timeout is not one.
func IsTimeout(err error) bool {
	var de *dialError
	if errors.As(err, &de) {
		return false // a connect timeout is a connection failure: fail over
	}
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// NeverSent reports whether err proves the request never reached the
// upstream: no connection could be made (refused, unreachable, no free
// connection) or it was found closed before the request was written. Only
// those may fail over to the next route; a request the upstream may have
// read is not sent to a second provider.
func NeverSent(err error) bool {
	var de *dialError
	return errors.As(err, &de) || errors.Is(err, errNotSent) || errors.Is(err, fasthttp.ErrNoFreeConns)
}

// IsDropped reports whether err is the connection closed or reset after the
// request was written, before a complete answer: the upstream may have run
// the request, which must not be sent again.
func IsDropped(err error) bool {
	return !NeverSent(err) && (errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
}

// FailsOver reports whether an answer with status may be given up for the
// next route instead: 429 (the upstream is out of capacity or quota) or a
// 5xx (it failed), answers that carry no result the provider bills. The
// last route's answer is relayed whatever it is.
func FailsOver(status int) bool {
	return status == fasthttp.StatusTooManyRequests || status >= 500
}

// RetryAfter is the pause an upstream asks for in its answer's
// retry-after-ms (milliseconds, as OpenAI and Azure send it) or retry-after
// (seconds, or an HTTP date) header; 0 when it asks for none or the value
// is unreadable. The caller bounds it.
func RetryAfter(h *fasthttp.ResponseHeader, now time.Time) time.Duration {
	if v := h.Peek("Retry-After-Ms"); len(v) > 0 {
		if ms, err := fasthttp.ParseUfloat(v); err == nil && ms > 0 {
			return time.Duration(min(ms, float64(24*time.Hour/time.Millisecond)) * float64(time.Millisecond))
		}
		return 0
	}
	v := h.Peek(fasthttp.HeaderRetryAfter)
	if len(v) == 0 {
		return 0
	}
	if s, err := fasthttp.ParseUint(v); err == nil {
		return time.Duration(min(s, 86400)) * time.Second
	}
	if t, err := fasthttp.ParseHTTPDate(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
