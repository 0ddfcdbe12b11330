//go:build !race

package anthropic

import (
	"os"
	"testing"
)

// The race detector allocates on its own, hence the build tag.

// TestAllocsStreamTranslate: a pooled translator, reset for each stream,
// translates every event of a stream without allocating.
func TestAllocsStreamTranslate(t *testing.T) {
	stream, err := os.ReadFile("testdata/stream/tool-use.sse")
	if err != nil {
		t.Fatal(err)
	}
	names, datas := recordedEvents(stream)
	var tr StreamTranslator
	out := make([]byte, 0, 1<<14)
	run := func() {
		tr.Reset("claude-sonnet-4-6", 1_700_000_000, true)
		out = out[:0]
		for i := range names {
			out = tr.Translate(out, names[i], datas[i])
		}
	}
	run()
	if n := testing.AllocsPerRun(200, run); n != 0 {
		t.Fatalf("%v allocations per stream of %d events, want 0", n, len(names))
	}
	errEvent := []byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
	run = func() {
		tr.Reset("m", 1, false)
		out = tr.Translate(out[:0], []byte("error"), errEvent)
	}
	run()
	if n := testing.AllocsPerRun(200, run); n != 0 {
		t.Fatalf("error event: %v allocations, want 0", n)
	}
}

func TestAllocsUsageReaders(t *testing.T) {
	f := func(name, data string) {
		t.Helper()
		b := []byte(data)
		run := func() {
			EventUsage(b)
			BodyUsage(b)
		}
		run()
		if n := testing.AllocsPerRun(1000, run); n != 0 {
			t.Fatalf("%s: %v allocations, want 0", name, n)
		}
	}
	f("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","usage":{"input_tokens":25,"cache_read_input_tokens":3,"cache_creation_input_tokens":4,"output_tokens":1}}}`)
	f("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}`)
	f("body", `{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":2,"output_tokens":3}}`)
	f("ping", `{"type":"ping"}`)
	f("garbage", `{"type":`)
}
