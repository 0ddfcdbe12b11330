package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

const headerRequestID = "X-Request-Id"

// requestIDs makes request ids unique across restarts and nodes without
// coordination: a random per-process prefix and a counter.
type requestIDs struct {
	prefix [12]byte // hex of 6 random bytes
	seq    atomic.Uint64
}

func newRequestIDs() (*requestIDs, error) {
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, fmt.Errorf("proxy: request id prefix: %w", err)
	}
	ids := &requestIDs{}
	hex.Encode(ids.prefix[:], r[:])
	return ids, nil
}

// set puts the request's id on the response: the client's own X-Request-Id when
// it is sane (so ids can be followed across systems), else a new one.
func (ids *requestIDs) set(ctx *fasthttp.RequestCtx) {
	if in := ctx.Request.Header.Peek(headerRequestID); validRequestID(in) {
		ctx.Response.Header.SetBytesV(headerRequestID, in)
		return
	}
	var b [4 + 12 + 16]byte
	copy(b[:], "req_")
	copy(b[4:], ids.prefix[:])
	n := ids.seq.Add(1)
	for i := len(b) - 1; i >= 16; i-- {
		b[i] = hexDigits[n&0xf]
		n >>= 4
	}
	ctx.Response.Header.SetBytesV(headerRequestID, b[:])
}

// validRequestID accepts 1-128 bytes of characters that are safe to log and to
// send on in a header.
func validRequestID(b []byte) bool {
	if len(b) == 0 || len(b) > 128 {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == ':' || c == '/' || c == '+' || c == '=') {
			return false
		}
	}
	return true
}
