package openai

import "testing"

func BenchmarkChunkUsage(b *testing.B) {
	f := func(name, chunk string) {
		data := []byte(chunk)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ChunkUsage(data)
			}
		})
	}
	f("content-chunk", contentChunk)
	f("usage-chunk", usageChunk)
	f("done", "[DONE]")
}

func BenchmarkIsUsageOnlyChunk(b *testing.B) {
	f := func(name, chunk string) {
		data := []byte(chunk)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				IsUsageOnlyChunk(data)
			}
		})
	}
	f("content-chunk", contentChunk)
	f("usage-chunk", usageChunk)
}

func BenchmarkContentBytes(b *testing.B) {
	f := func(name, chunk string) {
		data := []byte(chunk)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ContentBytes(data)
			}
		})
	}
	f("chat", contentChunk)
	f("chat-escaped", escapedChunk)
	f("chat-n=2", twoChoices)
	f("legacy", legacyChunk)
	f("usage-chunk", usageChunk)
}

func BenchmarkHasError(b *testing.B) {
	f := func(name, chunk string) {
		data := []byte(chunk)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				HasError(data)
			}
		})
	}
	f("content-chunk", contentChunk)
	f("error", errorChunk)
}
