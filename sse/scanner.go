package sse

import (
	"bytes"
	"errors"
	"io"
	"math"
	"slices"
	"sync"
	"time"
)

// ErrEventTooLong is returned by Scanner.Next when an event, complete or not,
// is longer than the Scanner's limit. The stream cannot be read further.
var ErrEventTooLong = errors.New("sse: event longer than the limit")

var bom = []byte("\xEF\xBB\xBF")

// keepBuf is the largest buffer Reset keeps, so that a pooled Scanner does
// not pin the memory of one rare huge event for good.
const keepBuf = 64 << 10

// Scanner splits a stream into events, incrementally: Feed it the bytes of
// each read, in any cut (an event, a line or a CRLF may be split anywhere),
// then call Next until it reports no event before the next Feed.
//
// It follows the WHATWG parsing rules: lines end in "\n", "\r\n" or "\r"; a
// blank line ends an event; lines starting with ':' are comments; the fields
// are data, event, id and retry, others are ignored; a line without ':' is a
// field with an empty value; one byte order mark may open the stream.
//
// With Next called until it reports no event before each Feed, memory is
// bounded by the event limit plus the size of one Feed. A Scanner is not
// safe for concurrent use.
type Scanner struct {
	// buf[start:] are the bytes not yet returned as events; buf[start:pos]
	// are the current event's complete lines, parsed; buf[pos:scan] is known
	// to hold no line end.
	buf []byte
	// pooled holds buf when it came from bufs (see Fill and Release);
	// first is where Fill waits for a released stream's next byte.
	pooled *[]byte
	first  [1]byte
	start  int
	pos    int
	scan   int
	max    int
	err    error
	ended  bool // End was called: no byte follows the buffer
	bomOK  bool // the stream's start was checked for a byte order mark

	// The current event's fields, as offsets from start, which compaction
	// keeps valid. data holds the joined data of events with several data
	// lines since the last Feed; the current one's begins at dataFrom.
	nData    int
	data0    span // the first data line's value
	data     []byte
	dataFrom int
	name, id span
	retry    time.Duration
}

// span is a field value's place in the current event.
type span struct {
	from, to int
	ok       bool
}

// NewScanner returns a Scanner for one stream whose events may be at most
// maxEvent bytes long (raw, blank line included). It panics if maxEvent is
// not positive.
func NewScanner(maxEvent int) *Scanner {
	if maxEvent <= 0 {
		panic("sse: NewScanner with a non-positive event limit")
	}
	s := &Scanner{max: maxEvent}
	s.clearEvent()
	return s
}

// Reset readies s for a new stream, keeping its buffers (unless one grew past
// 64 KiB), so Scanners can be pooled.
func (s *Scanner) Reset() {
	buf, data := s.buf[:0], s.data[:0]
	if cap(buf) > keepBuf {
		buf = nil
	}
	if cap(data) > keepBuf {
		data = nil
	}
	*s = Scanner{buf: buf, data: data, max: s.max}
	s.clearEvent()
}

// Feed appends the next bytes of the stream; s keeps no reference to p. It
// invalidates the slices of the events returned so far. After Next has
// returned an error, Feed discards p.
func (s *Scanner) Feed(p []byte) {
	if s.err != nil || len(p) == 0 {
		return
	}
	s.makeRoom(len(p))
	s.buf = append(s.buf, p...)
	s.fed()
}

// Fill reads from r, at most size bytes, straight into s's buffer: Feed
// without the caller's buffer and the copy. It returns what r.Read returned.
// After Release it waits for the stream's next byte before it takes a
// buffer, so a stream idle between events holds none, then reads what
// follows that byte: two reads, the second of bytes already at hand. After
// Next has returned an error the bytes are read and discarded, so a stream
// can still be drained.
func (s *Scanner) Fill(r io.Reader, size int) (int, error) {
	if s.buf == nil && s.err == nil && size > 1 {
		n, err := r.Read(s.first[:])
		if n == 0 {
			return 0, err
		}
		s.acquire(size)
		s.Feed(s.first[:])
		if err != nil {
			return 1, err
		}
		n, err = s.fill(r, size-1)
		return n + 1, err
	}
	if s.buf == nil {
		s.acquire(size)
	}
	return s.fill(r, size)
}

func (s *Scanner) fill(r io.Reader, size int) (int, error) {
	if s.err != nil {
		if cap(s.buf) < size {
			s.buf = make([]byte, 0, size)
		}
		return r.Read(s.buf[:size:size])
	}
	s.makeRoom(size)
	if cap(s.buf)-len(s.buf) < size {
		s.buf = slices.Grow(s.buf, size)
	}
	n, err := r.Read(s.buf[len(s.buf) : len(s.buf)+size])
	if n > 0 {
		s.buf = s.buf[:len(s.buf)+n]
		s.fed()
	}
	return n, err
}

// makeRoom readies buf for n more bytes: emptied when every byte in it was
// returned, or its unfinished event moved to the front when n would not fit
// otherwise. An event then moves once at most, as start stays 0 until it is
// complete, so an event trickling in byte by byte costs linear time.
func (s *Scanner) makeRoom(n int) {
	switch {
	case s.start == len(s.buf):
		s.buf, s.start, s.pos, s.scan = s.buf[:0], 0, 0, 0
	case s.start > 0 && len(s.buf)+n > cap(s.buf):
		k := copy(s.buf, s.buf[s.start:])
		s.buf = s.buf[:k]
		s.pos -= s.start
		s.scan -= s.start
		s.start = 0
	}
}

// fed keeps data, the joined lines of multi-line data, to the current event.
func (s *Scanner) fed() {
	if s.nData < 2 {
		s.data = s.data[:0]
	} else if s.dataFrom > 0 {
		n := copy(s.data, s.data[s.dataFrom:])
		s.data, s.dataFrom = s.data[:n], 0
	}
}

// bufs are stream buffers not in use: an idle stream (one with no partial
// event, waiting for its next read) gives its buffer back with Release, so
// thousands of slow streams hold only the buffers of the few being read.
var bufs sync.Pool

// acquire takes a buffer from bufs, or makes one of size.
func (s *Scanner) acquire(size int) {
	p, _ := bufs.Get().(*[]byte)
	if p == nil {
		b := make([]byte, 0, size)
		p = &b
	}
	s.pooled, s.buf = p, (*p)[:0]
	s.start, s.pos, s.scan = 0, 0, 0
}

// Release gives s's buffer back for other streams when it holds no bytes
// not yet returned as events; the next Fill or Feed takes one again. It
// invalidates the slices of the events returned so far.
func (s *Scanner) Release() {
	if s.start != len(s.buf) || s.nData > 1 {
		return
	}
	if s.pooled != nil && cap(s.buf) <= keepBuf {
		*s.pooled = s.buf[:0]
		bufs.Put(s.pooled)
	}
	s.pooled, s.buf = nil, nil
	s.start, s.pos, s.scan = 0, 0, 0
}

// End tells s that the stream is over: the last Feed was its last byte. An
// event ending in a lone "\r" at the very end, held back in case a "\n"
// followed, is then complete and returned by Next.
func (s *Scanner) End() { s.ended = true }

// Pending returns the bytes of the stream not yet returned as events: an
// incomplete trailing event once the stream has ended. The gateway relays
// them so the client gets every byte; by the spec, a client discards them.
func (s *Scanner) Pending() []byte { return s.buf[s.start:len(s.buf):len(s.buf)] }

// Next returns the next complete event, if the bytes fed so far hold one.
// Once it has returned an error it returns the same error.
func (s *Scanner) Next() (Event, bool, error) {
	if s.err != nil {
		return Event{}, false, s.err
	}
	if !s.bomOK && !s.skipBOM() {
		return Event{}, false, nil
	}
	for {
		end, next, ok := s.line()
		if !ok {
			break
		}
		from := s.pos
		s.pos, s.scan = next, next
		if end > from {
			s.field(from, end)
			continue
		}
		raw := s.buf[s.start:next:next]
		if len(raw) > s.max {
			s.err = ErrEventTooLong
			return Event{}, false, s.err
		}
		ev := s.event(raw)
		s.start = next
		s.clearEvent()
		return ev, true, nil
	}
	if len(s.buf)-s.start > s.max {
		s.err = ErrEventTooLong
		return Event{}, false, s.err
	}
	return Event{}, false, nil
}

// skipBOM steps over a byte order mark at the start of the stream, leaving it
// in the first event's Raw. It reports false while too few bytes have come
// to tell.
func (s *Scanner) skipBOM() bool {
	b := s.buf[s.pos:]
	if len(b) < len(bom) && !s.ended && bytes.HasPrefix(bom, b) {
		return false
	}
	if bytes.HasPrefix(b, bom) {
		s.pos += len(bom)
		s.scan = s.pos
	}
	s.bomOK = true
	return true
}

// line finds the end of the line at s.pos: the line is buf[s.pos:end] and the
// next one starts at next. It reports false if the line is not complete yet;
// a "\r" that ends the buffer is not, until the next byte shows whether it
// is half of a "\r\n" (or End shows there is none).
func (s *Scanner) line() (end, next int, ok bool) {
	b := s.buf[s.scan:]
	lf := bytes.IndexByte(b, '\n')
	if lf < 0 {
		lf = len(b)
	}
	if cr := bytes.IndexByte(b[:lf], '\r'); cr >= 0 {
		end = s.scan + cr
		switch {
		case cr+1 < len(b) && b[cr+1] == '\n':
			return end, end + 2, true
		case cr+1 < len(b) || s.ended:
			return end, end + 1, true
		}
		s.scan = end
		return 0, 0, false
	}
	if lf == len(b) {
		s.scan = len(s.buf)
		return 0, 0, false
	}
	return s.scan + lf, s.scan + lf + 1, true
}

// field applies the non-blank line buf[from:end] to the current event.
func (s *Scanner) field(from, end int) {
	line := s.buf[from:end]
	if line[0] == ':' {
		return // a comment
	}
	name, at := line, end // a line without ':' is a name with an empty value
	if c := bytes.IndexByte(line, ':'); c >= 0 {
		name, at = line[:c], from+c+1
		if at < end && s.buf[at] == ' ' {
			at++
		}
	}
	v := span{from: at - s.start, to: end - s.start, ok: true}
	switch string(name) {
	case "data":
		s.addData(v)
	case "event":
		s.name = v
	case "id":
		if bytes.IndexByte(s.buf[at:end], 0) < 0 {
			s.id = v
		}
	case "retry":
		if ms, ok := parseMillis(s.buf[at:end]); ok {
			s.retry = ms
		}
	}
}

// addData adds a data line's value. The first stays where it is in buf, so
// the usual single-line event is not copied; a second one starts the join.
func (s *Scanner) addData(v span) {
	switch s.nData {
	case 0:
		s.data0 = v
	case 1:
		s.dataFrom = len(s.data)
		s.data = append(s.data, s.value(s.data0)...)
		fallthrough
	default:
		s.data = append(s.data, '\n')
		s.data = append(s.data, s.value(v)...)
	}
	s.nData++
}

// value returns the bytes of a field value of the current event.
func (s *Scanner) value(v span) []byte {
	if !v.ok {
		return nil
	}
	return s.buf[s.start+v.from : s.start+v.to : s.start+v.to]
}

// event builds the current event, whose bytes are raw.
func (s *Scanner) event(raw []byte) Event {
	ev := Event{Raw: raw, Name: s.value(s.name), ID: s.value(s.id), Retry: s.retry, HasData: s.nData > 0}
	switch {
	case s.nData == 1:
		ev.Data = s.value(s.data0)
	case s.nData > 1:
		ev.Data = s.data[s.dataFrom:len(s.data):len(s.data)]
	}
	return ev
}

// clearEvent forgets the fields of the event just returned.
func (s *Scanner) clearEvent() {
	s.nData, s.data0, s.name, s.id, s.retry = 0, span{}, span{}, span{}, -1
}

// parseMillis reads a retry value: ASCII digits only, in milliseconds.
func parseMillis(b []byte) (time.Duration, bool) {
	if len(b) == 0 {
		return 0, false
	}
	const limit = math.MaxInt64 / int64(time.Millisecond)
	var ms int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		ms = ms*10 + int64(c-'0')
		if ms > limit {
			return 0, false
		}
	}
	return time.Duration(ms) * time.Millisecond, true
}
