//go:build !race

package tracing

import (
	"testing"
	"time"
)

// TestAllocsRequestSide: what a request does with tracing on (decide its
// trace context, write the upstream's traceparent, hand its span over)
// allocates nothing. Building and exporting the span is the goroutine's,
// which does allocate: AllocsPerRun counts every goroutine's allocations,
// so this Tracer has none, and its queue fills, then drops.
func TestAllocsRequestSide(t *testing.T) {
	tr := &Tracer{sampleBound: sampleBound(1), queue: make(chan Span, 100), dropped: func(string, int) {}}
	h := [][]byte{[]byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}
	var buf [TraceparentLen]byte
	s := Span{Operation: "chat", Model: "gpt", Start: time.Unix(1, 0), End: time.Unix(2, 0)}
	allocs := testing.AllocsPerRun(1000, func() {
		s.Context = tr.Begin(h)
		AppendTraceparent(buf[:0], &s.Context)
		s.Context = tr.Begin(nil)
		tr.Send(&s)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per request, want 0", allocs)
	}
}
