//go:build !race

package openai

import "testing"

// The race detector allocates on its own, hence the build tag.

func TestAllocsChunkReaders(t *testing.T) {
	f := func(name string, data string) {
		t.Helper()
		b := []byte(data)
		run := func() {
			ChunkUsage(b)
			IsUsageOnlyChunk(b)
			ContentBytes(b)
			HasError(b)
		}
		run()
		if n := testing.AllocsPerRun(1000, run); n != 0 {
			t.Fatalf("%s: %v allocations per chunk, want 0", name, n)
		}
	}
	f("content chunk", contentChunk)
	f("usage chunk", usageChunk)
	f("escaped content", escapedChunk)
	f("two choices", twoChoices)
	f("legacy completion", legacyChunk)
	f("error", errorChunk)
	f("done", "[DONE]")
	f("delta null", `{"choices":[{"delta":null,"text":"ab"}],"usage":null}`)
	f("empty", "")
}

func TestAllocsResponsesReaders(t *testing.T) {
	f := func(name string, data string) {
		t.Helper()
		b := []byte(data)
		run := func() {
			(ResponsesEvents{}).Read(b)
			ResponseUsage(b)
			ResponseID(b)
		}
		run()
		if n := testing.AllocsPerRun(1000, run); n != 0 {
			t.Fatalf("%s: %v allocations per event, want 0", name, n)
		}
	}
	f("created", createdEvent)
	f("text delta", deltaEvent)
	f("arguments delta", argsEvent)
	f("completed", completedEvent)
	f("failed", failedEvent)
	f("response body", responseBody)
	f("empty", "")
}

func TestAllocsParseResponses(t *testing.T) {
	b := []byte(`{"model":"m","input":[{"role":"user","content":"hi"},{"type":"item_reference","id":"msg_1"}],"stream":true,"max_output_tokens":50,"store":false,"previous_response_id":"resp_1"}`)
	var rf Request
	if n := testing.AllocsPerRun(1000, func() { rf.ParseResponses(b) }); n != 0 {
		t.Fatalf("%v allocations per parse, want 0", n)
	}
}
