//go:build !race

package sse

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"testing"
)

// The race detector allocates on its own, hence the build tag.

// allocStream is a usage-carrying n=2 chat stream with the rarer shapes
// mixed in: keep-alive comments, multi-line data, named events, CRLF.
func allocStream(t testing.TB) []byte {
	in, err := os.ReadFile("testdata/chat_n2_usage.sse")
	if err != nil {
		t.Fatal(err)
	}
	extra := "event: note\r\nid: 42\r\nretry: 3000\r\ndata: one\r\ndata: two\r\ndata: three\r\n\r\n: keep-alive\n\n"
	return slices.Concat([]byte("\xEF\xBB\xBF"+extra), in, []byte(extra))
}

func TestAllocsScanner(t *testing.T) {
	in := allocStream(t)
	s := NewScanner(4 << 10)
	f := func(name string, run func()) {
		t.Helper()
		run() // grow the buffers
		if n := testing.AllocsPerRun(100, run); n != 0 {
			t.Fatalf("%s: %v allocations per stream, want 0", name, n)
		}
	}
	events := 0
	drain := func() {
		for {
			_, ok, err := s.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				return
			}
			events++
		}
	}
	const want = 2 + 25 + 2
	for _, read := range []int{1, 7, 333, 16 << 10} {
		f(fmt.Sprintf("reads of %d bytes, Reset between streams", read), func() {
			s.Reset()
			events = 0
			for c := range slices.Chunk(in, read) {
				s.Feed(c)
				drain()
			}
			s.End()
			drain()
			if events != want {
				t.Fatalf("%d events, want %d", events, want)
			}
		})
		s.Reset()
		r := new(bytes.Reader)
		f(fmt.Sprintf("reads of %d bytes with Fill and Release", read), func() {
			events = 0
			r.Reset(in)
			for {
				_, err := s.Fill(r, read)
				drain()
				s.Release()
				if err != nil {
					break
				}
			}
			if events != want {
				t.Fatalf("%d events, want %d", events, want)
			}
		})
		s.Reset()
		f(fmt.Sprintf("reads of %d bytes, one endless stream", read), func() {
			events = 0
			for c := range slices.Chunk(in, read) {
				s.Feed(c)
				drain()
			}
			if events != want {
				t.Fatalf("%d events, want %d", events, want)
			}
		})
	}
}
