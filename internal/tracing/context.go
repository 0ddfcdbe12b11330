package tracing

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
)

// SpanContext is a request's W3C trace context, decided when the request
// starts: the trace it belongs to (the client's, from its traceparent, or a
// new one), the gateway span's own id, which the upstream is told as its
// parent, and the client's span, the gateway span's parent. A fixed-size
// value: it lives in the request's state and costs no allocation.
type SpanContext struct {
	TraceID [16]byte
	SpanID  [8]byte
	// ParentID is the client's span id; Remote tells whether there is one.
	ParentID [8]byte
	Remote   bool
	// Sampled: the span is exported, and the upstream is told so.
	Sampled bool
}

// Begin decides a request's trace context from the client's traceparent
// headers (every value the request carried, so that two of them, which W3C
// Trace Context makes invalid, start a new trace). A valid one keeps its
// trace id and sampled flag, the gateway span becoming a child of the
// client's; otherwise a new trace is sampled at the configured ratio. It
// allocates nothing.
func (t *Tracer) Begin(traceparents [][]byte) SpanContext {
	var c SpanContext
	if len(traceparents) == 1 {
		if traceID, parentID, flags, ok := ParseTraceparent(traceparents[0]); ok {
			c.TraceID, c.ParentID, c.Remote, c.Sampled = traceID, parentID, true, flags&flagSampled != 0
		}
	}
	if !c.Remote {
		for c.TraceID == ([16]byte{}) {
			binary.BigEndian.PutUint64(c.TraceID[:8], rand.Uint64())
			binary.BigEndian.PutUint64(c.TraceID[8:], rand.Uint64())
		}
		c.Sampled = t.samples(c.TraceID)
	}
	for c.SpanID == ([8]byte{}) {
		binary.BigEndian.PutUint64(c.SpanID[:], rand.Uint64())
	}
	return c
}

// samples applies the ratio to a new trace as OpenTelemetry's
// TraceIDRatioBased sampler does, from the trace id's low 63 bits: every
// node and every SDK that samples by ratio agrees on the same trace.
func (t *Tracer) samples(traceID [16]byte) bool {
	return binary.BigEndian.Uint64(traceID[8:])>>1 < t.sampleBound
}

// sampleBound is the TraceIDRatioBased bound of a ratio: a trace is sampled
// when its id's low 63 bits are below it.
func sampleBound(ratio float64) uint64 {
	if ratio >= 1 {
		return math.MaxUint64
	}
	return uint64(max(ratio, 0) * (1 << 63))
}

const (
	flagSampled = 0x01
	// TraceparentLen is the length of a version 00 traceparent.
	TraceparentLen = 55
)

// ParseTraceparent reads a W3C traceparent header
// (version-traceid-parentid-flags, lowercase hex). Version ff, an all-zero
// id and upper-case hex are invalid; a version above 00 may carry more
// fields after a dash, which are ignored, as the specification asks.
func ParseTraceparent(h []byte) (traceID [16]byte, parentID [8]byte, flags byte, ok bool) {
	if len(h) < TraceparentLen || h[2] != '-' || h[35] != '-' || h[52] != '-' {
		return traceID, parentID, 0, false
	}
	var version [1]byte
	if !hexDecode(version[:], h[0:2]) || version[0] == 0xff {
		return traceID, parentID, 0, false
	}
	if version[0] == 0 && len(h) != TraceparentLen || version[0] != 0 && len(h) > TraceparentLen && h[TraceparentLen] != '-' {
		return traceID, parentID, 0, false
	}
	var f [1]byte
	if !hexDecode(traceID[:], h[3:35]) || !hexDecode(parentID[:], h[36:52]) || !hexDecode(f[:], h[53:55]) {
		return traceID, parentID, 0, false
	}
	if traceID == ([16]byte{}) || parentID == ([8]byte{}) {
		return traceID, parentID, 0, false
	}
	return traceID, parentID, f[0], true
}

// AppendTraceparent appends the version 00 traceparent that names c's span
// as the parent: what the upstream is sent.
func AppendTraceparent(dst []byte, c *SpanContext) []byte {
	dst = append(dst, '0', '0', '-')
	dst = appendHex(dst, c.TraceID[:])
	dst = append(dst, '-')
	dst = appendHex(dst, c.SpanID[:])
	if c.Sampled {
		return append(dst, '-', '0', '1')
	}
	return append(dst, '-', '0', '0')
}

const hexDigits = "0123456789abcdef"

func appendHex(dst, b []byte) []byte {
	for _, c := range b {
		dst = append(dst, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return dst
}

// hexDecode decodes lowercase hex src into dst, len(src) == 2*len(dst).
func hexDecode(dst, src []byte) bool {
	for i := range dst {
		hi, ok1 := hexValue(src[2*i])
		lo, ok2 := hexValue(src[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func hexValue(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
