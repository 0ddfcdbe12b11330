package mock

import (
	"bytes"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
)

// The scanners below read the few fields the mock needs in one pass over the
// request body, every message's content included. They assume the body is
// valid JSON (checked first with sonic.Valid) and only find where tokens end.
// Measured on a 400-byte chat body: six sonic.Get lookups cost about 580 ns
// and 4 allocations without reaching into the messages; this pass costs about
// 280 ns and allocates nothing.

// members iterates over the members of a JSON object. A member's value is
// skipped when the iteration moves on, unless the caller consumed it itself
// (consumed), so that a value that needs reading is scanned only once.
type members struct {
	b   []byte
	i   int // where to read on from
	val int // start of the current value; -1 once consumed or skipped
	// key holds an escaped key's decoded name: a provider reads
	// "include_\u0075sage" as include_usage, and so must its stand-in.
	key [32]byte
}

// newMembers starts an iteration over the object at b[i]; over anything but
// an object it yields nothing.
func newMembers(b []byte, i int) members {
	if i >= len(b) || b[i] != '{' {
		return members{b: b, i: len(b), val: -1}
	}
	return members{b: b, i: i + 1, val: -1}
}

// next moves to the next member and returns its key, escapes decoded (a
// name too long for any field the mock reads is returned raw). A repeated key
// is returned each time, so the last one read wins, as it does in Python's
// json and Go's encoding/json: the mock must read a body as providers do.
func (m *members) next() (key []byte, ok bool) {
	if m.val >= 0 {
		m.i = jsonscan.SkipValue(m.b, m.val)
		m.val = -1
	}
	i := jsonscan.SkipSpace(m.b, m.i)
	if i < len(m.b) && m.b[i] == ',' {
		i = jsonscan.SkipSpace(m.b, i+1)
	}
	if i >= len(m.b) || m.b[i] != '"' {
		m.i = min(i+1, len(m.b)) // past the '}'
		return nil, false
	}
	end := jsonscan.SkipString(m.b, i)
	key = m.b[i+1 : end-1]
	if bytes.IndexByte(key, '\\') >= 0 && len(key) <= 6*len(m.key) {
		if k, ok := jsonscan.AppendUnescaped(m.key[:0], m.b[i:end]); ok && len(k) <= len(m.key) {
			key = k
		}
	}
	i = jsonscan.SkipSpace(m.b, end) + 1 // past the ':'
	m.val = jsonscan.SkipSpace(m.b, i)
	return key, m.val < len(m.b)
}

// value returns the current member's raw value.
func (m *members) value() []byte {
	end := jsonscan.SkipValue(m.b, m.val)
	v := m.b[m.val:end]
	m.i, m.val = end, -1
	return v
}

// consumed records that the caller read the current value up to end.
func (m *members) consumed(end int) { m.i, m.val = end, -1 }

// end returns the index just past the object, once next has returned false.
func (m *members) end() int { return m.i }

// elements iterates over the elements of a JSON array, like members.
type elements struct {
	b   []byte
	i   int
	val int
}

// newElements starts an iteration over the array at b[i]; over anything but
// an array it yields nothing.
func newElements(b []byte, i int) elements {
	if i >= len(b) || b[i] != '[' {
		return elements{b: b, i: len(b), val: -1}
	}
	return elements{b: b, i: i + 1, val: -1}
}

// next moves to the next element and returns its start index in b.
func (e *elements) next() (start int, ok bool) {
	if e.val >= 0 {
		e.i = jsonscan.SkipValue(e.b, e.val)
		e.val = -1
	}
	i := jsonscan.SkipSpace(e.b, e.i)
	if i < len(e.b) && e.b[i] == ',' {
		i = jsonscan.SkipSpace(e.b, i+1)
	}
	if i >= len(e.b) || e.b[i] == ']' {
		e.i = min(i+1, len(e.b))
		return 0, false
	}
	e.val = i
	return i, true
}

// value returns the current element's raw bytes.
func (e *elements) value() []byte {
	end := jsonscan.SkipValue(e.b, e.val)
	v := e.b[e.val:end]
	e.i, e.val = end, -1
	return v
}

// consumed records that the caller read the current element up to end.
func (e *elements) consumed(end int) { e.i, e.val = end, -1 }

// end returns the index just past the array, once next has returned false.
func (e *elements) end() int { return e.i }

// parseInt parses a JSON integer token. It refuses fractions, exponents and
// anything past nine digits: no field the mock reads needs more.
func parseInt(b []byte) (int, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// maxInt bounds parameters that have no bound of their own; parseInt cannot
// exceed it anyway.
const maxInt = 999_999_999

// stringLen returns the length of a JSON string literal's contents (escapes
// counted as written) and whether v is a string at all.
func stringLen(v []byte) (int, bool) {
	if len(v) < 2 || v[0] != '"' {
		return 0, false
	}
	return len(v) - 2, true
}
