package sse

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// scan runs a stream, cut into chunks, through a Scanner and describes what
// came out: one line per event, then the error or the pending bytes. It also
// returns the concatenated Raw of the events.
func scan(max int, chunks ...[]byte) (out []string, raw []byte) {
	s := NewScanner(max)
	drain := func() bool {
		for {
			ev, ok, err := s.Next()
			if err != nil {
				out = append(out, "error: "+err.Error())
				return false
			}
			if !ok {
				return true
			}
			out = append(out, describe(ev))
			raw = append(raw, ev.Raw...)
		}
	}
	for _, c := range chunks {
		s.Feed(c)
		if !drain() {
			return out, raw
		}
	}
	s.End()
	if drain() && len(s.Pending()) > 0 {
		out = append(out, fmt.Sprintf("pending %q", s.Pending()))
	}
	return out, raw
}

// chunkReader returns one chunk per Read (less when p is shorter), then EOF.
type chunkReader struct{ chunks [][]byte }

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.chunks) > 0 && len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	return n, nil
}

// scanFilled is scan reading with Fill, size bytes at most a read, and
// releasing the buffer after each read's events, as the gateway's relay does.
func scanFilled(max, size int, chunks ...[]byte) (out []string, raw []byte) {
	s := NewScanner(max)
	r := &chunkReader{chunks: slices.Clone(chunks)}
	for {
		_, err := s.Fill(r, size)
		for {
			ev, ok, err := s.Next()
			if err != nil {
				return append(out, "error: "+err.Error()), raw
			}
			if !ok {
				break
			}
			out = append(out, describe(ev))
			raw = append(raw, ev.Raw...)
		}
		s.Release()
		if err != nil {
			break
		}
	}
	s.End()
	for {
		ev, ok, err := s.Next()
		if err != nil {
			return append(out, "error: "+err.Error()), raw
		}
		if !ok {
			break
		}
		out = append(out, describe(ev))
		raw = append(raw, ev.Raw...)
	}
	if len(s.Pending()) > 0 {
		out = append(out, fmt.Sprintf("pending %q", s.Pending()))
	}
	return out, raw
}

// describe renders an event's raw bytes and the fields it has.
func describe(ev Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q", ev.Raw)
	if ev.HasData {
		fmt.Fprintf(&b, " data=%q", ev.Data)
	}
	if ev.Name != nil {
		fmt.Fprintf(&b, " event=%q", ev.Name)
	}
	if ev.ID != nil {
		fmt.Fprintf(&b, " id=%q", ev.ID)
	}
	if ev.Retry >= 0 {
		fmt.Fprintf(&b, " retry=%s", ev.Retry)
	}
	return b.String()
}

// cuts splits in at the given offsets.
func cuts(in []byte, at ...int) [][]byte {
	var out [][]byte
	prev := 0
	for _, i := range at {
		out = append(out, in[prev:i])
		prev = i
	}
	return append(out, in[prev:])
}

func TestScanner(t *testing.T) {
	f := func(in string, want ...string) {
		t.Helper()
		got, raw := scan(64, []byte(in))
		if !slices.Equal(got, want) {
			t.Fatalf("scan(%q):\n got %q\nwant %q", in, got, want)
		}
		checkAddsUp(t, []byte(in), got, raw)
		// The same events whatever the cut: every cut in two, and byte by byte.
		for i := 1; i < len(in); i++ {
			if got, _ := scan(64, cuts([]byte(in), i)...); !slices.Equal(got, want) {
				t.Fatalf("scan(%q) cut at %d:\n got %q\nwant %q", in, i, got, want)
			}
		}
		var bytewise [][]byte
		for i := range len(in) {
			bytewise = append(bytewise, []byte(in[i:i+1]))
		}
		if got, _ := scan(64, bytewise...); !slices.Equal(got, want) {
			t.Fatalf("scan(%q) byte by byte:\n got %q\nwant %q", in, got, want)
		}
	}

	// Line ends.
	f("data: hi\n\n", `"data: hi\n\n" data="hi"`)
	f("data: hi\r\n\r\n", `"data: hi\r\n\r\n" data="hi"`)
	f("data: hi\r\r", `"data: hi\r\r" data="hi"`)
	f("data: a\r\ndata: b\rdata: c\n\n", `"data: a\r\ndata: b\rdata: c\n\n" data="a\nb\nc"`)
	f("data: a\r\n\rdata: b\n\r\n", `"data: a\r\n\r" data="a"`, `"data: b\n\r\n" data="b"`)
	f("data: a\n\r\n\r\n", `"data: a\n\r\n" data="a"`, `"\r\n"`)

	// Several events, and the blank lines and comments between them.
	f("data: 1\n\ndata: 2\n\n", `"data: 1\n\n" data="1"`, `"data: 2\n\n" data="2"`)
	f("\n\ndata: x\n\n", `"\n"`, `"\n"`, `"data: x\n\n" data="x"`)
	f(": keep-alive\n\n", `": keep-alive\n\n"`)
	f(":\n\n", `":\n\n"`)
	f(": a\ndata: x\n: b\n\n", `": a\ndata: x\n: b\n\n" data="x"`)

	// The data field.
	f("data: a\ndata: b\n\n", `"data: a\ndata: b\n\n" data="a\nb"`)
	f("data: a\ndata:\ndata: c\n\n", `"data: a\ndata:\ndata: c\n\n" data="a\n\nc"`)
	f("data:x\n\n", `"data:x\n\n" data="x"`)
	f("data:  x \n\n", `"data:  x \n\n" data=" x "`)
	f("data:\n\n", `"data:\n\n" data=""`)
	f("data\n\n", `"data\n\n" data=""`)
	f("data\ndata\n\n", `"data\ndata\n\n" data="\n"`)
	f("data: a: b\n\n", `"data: a: b\n\n" data="a: b"`)
	f("data: [DONE]\n\n", `"data: [DONE]\n\n" data="[DONE]"`)

	// The other fields.
	f("event: add\nid: 7\nretry: 1500\ndata: x\n\n", `"event: add\nid: 7\nretry: 1500\ndata: x\n\n" data="x" event="add" id="7" retry=1.5s`)
	f("event: a\nevent: b\ndata\n\n", `"event: a\nevent: b\ndata\n\n" data="" event="b"`)
	f("event\nid\n\n", `"event\nid\n\n" event="" id=""`)
	f("id: 1\nid: a\x00b\n\n", `"id: 1\nid: a\x00b\n\n" id="1"`)
	f("retry: 0\n\n", `"retry: 0\n\n" retry=0s`)
	f("retry: 1s\n\n", `"retry: 1s\n\n"`)
	f("retry: -1\n\n", `"retry: -1\n\n"`)
	f("retry:\n\n", `"retry:\n\n"`)
	f("retry: 99999999999999999999\n\n", `"retry: 99999999999999999999\n\n"`)
	f("Data: x\nfoo: bar\ndata : y\n\n", `"Data: x\nfoo: bar\ndata : y\n\n"`)

	// A byte order mark opens the stream, once.
	f("\xEF\xBB\xBFdata: x\n\n", `"\ufeffdata: x\n\n" data="x"`)
	f("\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n", `"\ufeff\ufeffdata: x\n\n"`)
	f("data: a\n\n\xEF\xBB\xBFdata: b\n\n", `"data: a\n\n" data="a"`, `"\ufeffdata: b\n\n"`)
	f("\xEF\xBBdata: x\n\n", `"\xef\xbbdata: x\n\n"`)
	f("\xEF\xBB", `pending "\xef\xbb"`)

	// A stream that ends mid-event leaves it pending.
	f("data: a\n\ndata: b\n", `"data: a\n\n" data="a"`, `pending "data: b\n"`)
	f("data: a\n\ndata: b", `"data: a\n\n" data="a"`, `pending "data: b"`)
	f("data: a\r", `pending "data: a\r"`)
	f("", []string(nil)...)

	// The limit is on an event's raw bytes, whole or partial.
	long := strings.Repeat("x", 64-len("data: \n\n"))
	f("data: "+long+"\n\n", fmt.Sprintf(`"data: %s\n\n" data=%q`, long, long))
	f("data: "+long+"\r\n\r\n", "error: "+ErrEventTooLong.Error())
	f("data: 1\n\ndata: "+long+"x\n\n", `"data: 1\n\n" data="1"`, "error: "+ErrEventTooLong.Error())
	f(strings.Repeat(": ", 33), "error: "+ErrEventTooLong.Error())
}

// A "\r" at the end of what has come is held until the next byte tells
// whether it is half of a "\r\n": otherwise the "\n" would make a blank line
// of its own, and split the same stream into different events.
func TestScannerHoldsTrailingCR(t *testing.T) {
	s := NewScanner(64)
	next := func(want string) {
		t.Helper()
		ev, ok, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		got := "none"
		if ok {
			got = describe(ev)
		}
		if got != want {
			t.Fatalf("Next: %s, want %s", got, want)
		}
	}
	s.Feed([]byte("data: x\r\n\r"))
	next("none")
	s.Feed([]byte("\ndata: y\r\r"))
	next(`"data: x\r\n\r\n" data="x"`)
	next("none")
	s.End()
	next(`"data: y\r\r" data="y"`)
	next("none")
	if p := s.Pending(); len(p) != 0 {
		t.Fatalf("pending %q after the last event", p)
	}
}

func TestScannerEventsStayValidUntilFeed(t *testing.T) {
	s := NewScanner(1 << 10)
	s.Feed([]byte("data: a\ndata: b\n\ndata: c\ndata: d\n\ndata: e\n\n"))
	var evs []Event
	for {
		ev, ok, err := s.Next()
		if err != nil || !ok {
			break
		}
		evs = append(evs, ev)
	}
	var got []string
	for _, ev := range evs {
		got = append(got, string(ev.Data))
	}
	if want := []string{"a\nb", "c\nd", "e"}; !slices.Equal(got, want) {
		t.Fatalf("data of events read together: %q, want %q", got, want)
	}
}

// An event that trickles in a byte at a time costs time linear in its size
// (each Next scans only the new bytes, and compaction moves it once), and
// memory bounded by the limit. Linear work takes about 50ms here, quadratic
// about a minute; the bound between them leaves room for a loaded machine.
func TestScannerTrickle(t *testing.T) {
	const limit = 1 << 20
	s := NewScanner(limit)
	in := []byte("data: " + strings.Repeat("x", limit-len("data: \n\n")) + "\n\n")
	start, big := time.Now(), 0
	s.Feed([]byte("data: 1\n\n")) // so that start > 0 and compaction has work
	for i := range in {
		s.Feed(in[i : i+1])
		for {
			ev, ok, err := s.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			if len(ev.Raw) == limit {
				big++
			}
		}
	}
	if big != 1 {
		t.Fatalf("%d events of %d bytes, want 1", big, limit)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("a %d-byte event fed byte by byte took %s", limit, d)
	}
	if c := cap(s.buf); c > 2*limit {
		t.Fatalf("buffer of %d bytes for events of at most %d", c, limit)
	}
	s.Feed([]byte("x"))
	if _, _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	for range limit {
		s.Feed([]byte("x"))
	}
	if _, _, err := s.Next(); err != ErrEventTooLong {
		t.Fatalf("Next after %d bytes without a blank line: %v, want ErrEventTooLong", limit+1, err)
	}
}

func TestScannerErrorIsFinal(t *testing.T) {
	s := NewScanner(8)
	s.Feed([]byte("data: 123456789"))
	if _, _, err := s.Next(); err != ErrEventTooLong {
		t.Fatalf("Next: %v, want ErrEventTooLong", err)
	}
	s.Feed([]byte("\n\ndata: ok\n\n"))
	if ev, ok, err := s.Next(); err != ErrEventTooLong || ok {
		t.Fatalf("Next after the error: %q %v %v, want ErrEventTooLong", ev.Raw, ok, err)
	}
}

func TestScannerReset(t *testing.T) {
	s := NewScanner(64)
	s.Feed([]byte("\xEF\xBB\xBFdata: a\n\nevent: x\ndata: b\ndata"))
	for {
		if _, ok, _ := s.Next(); !ok {
			break
		}
	}
	s.Reset()
	if p := s.Pending(); len(p) != 0 {
		t.Fatalf("pending %q after Reset", p)
	}
	s.Feed([]byte("\xEF\xBB\xBFdata: c\n\n"))
	ev, ok, err := s.Next()
	if got := describe(ev); !ok || err != nil || got != `"\ufeffdata: c\n\n" data="c"` {
		t.Fatalf("first event after Reset: %s %v %v", got, ok, err)
	}
}

func TestEventIsDone(t *testing.T) {
	f := func(in string, want bool) {
		t.Helper()
		s := NewScanner(64)
		s.Feed([]byte(in))
		ev, ok, err := s.Next()
		if !ok || err != nil {
			t.Fatalf("Next(%q): %v %v", in, ok, err)
		}
		if ev.IsDone() != want {
			t.Fatalf("IsDone(%q) = %v, want %v", in, !want, want)
		}
	}
	f("data: [DONE]\n\n", true)
	f("data:[DONE]\r\n\r\n", true)
	f("event: done\ndata: [DONE]\n\n", true)
	f("data:  [DONE]\n\n", false)
	f("data: [DONE] \n\n", false)
	f("data: [DONE]\ndata: \n\n", false)
	f("data: [done]\n\n", false)
	f(": [DONE]\n\n", false)
	f("data: {}\n\n", false)
}

// streamPieces are the parts random streams are made of: fields, comments and
// line ends of every kind, so random sequences hit CRLF splits, blank lines
// and fields without values.
var streamPieces = []string{
	"data: ", "data:", "data", "event: ", "id: ", "retry: ", "retry: 10", ": c", ":", "foo: bar",
	"x", "{\"a\":1}", "[DONE]", " ", "é", "\x00", "\xEF\xBB\xBF",
	"\n", "\n", "\n", "\r\n", "\r\n", "\r", "\n\n", "\r\n\r\n", "\r\r",
}

func randomStream(r *rand.Rand) []byte {
	var b []byte
	if r.IntN(4) == 0 {
		b = append(b, bom...)
	}
	for range r.IntN(60) {
		b = append(b, streamPieces[r.IntN(len(streamPieces))]...)
	}
	return b
}

func randomCuts(r *rand.Rand, in []byte) [][]byte {
	var at []int
	for i := 1; i < len(in); i++ {
		if r.IntN(4) == 0 {
			at = append(at, i)
		}
	}
	return cuts(in, at...)
}

// TestScannerCutsDoNotMatter: however a stream is cut, the events are the
// same, and their Raw and the pending bytes add up to the stream.
func TestScannerCutsDoNotMatter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		in := randomStream(r)
		max := 8 + r.IntN(120)
		whole, raw := scan(max, in)
		checkAddsUp(t, in, whole, raw)
		if got, _ := scan(max, randomCuts(r, in)...); !slices.Equal(got, whole) {
			t.Fatalf("stream %q, limit %d:\nwhole %q\n  cut %q", in, max, whole, got)
		}
		size := 1 + r.IntN(64)
		if got, _ := scanFilled(max, size, randomCuts(r, in)...); !slices.Equal(got, whole) {
			t.Fatalf("stream %q, limit %d, filled %d at a time:\nwhole  %q\nfilled %q", in, max, size, whole, got)
		}
	}
}

// checkAddsUp fails unless the events' Raw, then the pending bytes, make in.
func checkAddsUp(t *testing.T, in []byte, out []string, raw []byte) {
	t.Helper()
	if len(out) > 0 && strings.HasPrefix(out[len(out)-1], "error") {
		if !bytes.HasPrefix(in, raw) {
			t.Fatalf("stream %q: events before the error are not its start", in)
		}
		return
	}
	rest := in[len(raw):]
	if !bytes.HasPrefix(in, raw) || (len(rest) > 0 && out[len(out)-1] != fmt.Sprintf("pending %q", rest)) {
		t.Fatalf("stream %q: events %q do not add up to it", in, out)
	}
}

func FuzzScanner(f *testing.F) {
	f.Add([]byte("data: hi\r\n\r\n"), []byte{3, 7}, uint8(64))
	f.Add([]byte("\xEF\xBB\xBFevent: a\nid: 1\nretry: 5\ndata: x\ndata: y\r\r: c\n\n"), []byte{1, 1, 1, 1}, uint8(16))
	f.Add([]byte("data: {\"choices\":[]}\n\ndata: [DONE]\n\n"), []byte{}, uint8(255))
	f.Fuzz(func(t *testing.T, in, cut []byte, limit uint8) {
		max := int(limit) + 1
		whole, raw := scan(max, in)
		checkAddsUp(t, in, whole, raw)
		// Cut where the fuzzer says: each byte of cut is the next piece's length.
		var at []int
		for i, c := range cut {
			if i == 0 {
				at = append(at, int(c))
			} else {
				at = append(at, at[i-1]+int(c))
			}
			if at[i] >= len(in) {
				at = at[:i]
				break
			}
		}
		if got, _ := scan(max, cuts(in, at...)...); !slices.Equal(got, whole) {
			t.Fatalf("limit %d, cut at %v:\nwhole %q\n  cut %q", max, at, whole, got)
		}
		if got, _ := scanFilled(max, 1+int(limit)%17, cuts(in, at...)...); !slices.Equal(got, whole) {
			t.Fatalf("limit %d, cut at %v, filled:\nwhole  %q\nfilled %q", max, at, whole, got)
		}
	})
}
