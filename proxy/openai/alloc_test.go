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
	f("usage chunk with cached tokens", cachedChunk)
	f("escaped content", escapedChunk)
	f("two choices", twoChoices)
	f("legacy completion", legacyChunk)
	f("error", errorChunk)
	f("done", "[DONE]")
	f("delta null", `{"choices":[{"delta":null,"text":"ab"}],"usage":null}`)
	f("empty", "")
}
