package sse

import (
	"bytes"
	"os"
	"slices"
	"testing"
)

// BenchmarkScanner scans a usage-carrying n=2 chat stream (25 events of about
// 300 bytes). Upstreams flush once per token, so a read usually holds one
// event; a slow client lets reads fill the relay's 16 KiB buffer.
func BenchmarkScanner(b *testing.B) {
	in, err := os.ReadFile("testdata/chat_n2_usage.sse")
	if err != nil {
		b.Fatal(err)
	}
	var perEvent [][]byte
	for ev := range bytes.SplitAfterSeq(in, []byte("\n\n")) {
		if len(ev) > 0 {
			perEvent = append(perEvent, ev)
		}
	}
	f := func(name string, reads [][]byte) {
		b.Run(name, func(b *testing.B) {
			s := NewScanner(64 << 10)
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			events := 0
			for b.Loop() {
				s.Reset()
				for _, r := range reads {
					s.Feed(r)
					for {
						_, ok, _ := s.Next()
						if !ok {
							break
						}
						events++
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
		})
	}
	f("read=event", perEvent)
	f("read=16KiB", slices.Collect(slices.Chunk(in, 16<<10)))
	f("read=CRLF-event", crlf(perEvent))
}

func crlf(reads [][]byte) [][]byte {
	var out [][]byte
	for _, r := range reads {
		out = append(out, bytes.ReplaceAll(r, []byte("\n"), []byte("\r\n")))
	}
	return out
}
