package anthropic

import (
	"os"
	"testing"

	"github.com/tokenhub/tokenhub/sse"
)

// BenchmarkStreamTranslate: one whole recorded stream (16 events: text,
// two tool calls, usage) per op, with a reset translator.
func BenchmarkStreamTranslate(b *testing.B) {
	stream, err := os.ReadFile("testdata/stream/tool-use.sse")
	if err != nil {
		b.Fatal(err)
	}
	names, datas := recordedEvents(stream)
	var tr StreamTranslator
	out := make([]byte, 0, 1<<14)
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		tr.Reset("claude-sonnet-4-6", 1_700_000_000, true)
		out = out[:0]
		for i := range names {
			out = tr.Translate(out, names[i], datas[i])
		}
	}
}

func BenchmarkChatToMessages(b *testing.B) {
	body, err := os.ReadFile("testdata/chat-to-messages/full.json")
	if err != nil {
		b.Fatal(err)
	}
	out := make([]byte, 0, 1<<14)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if out, _, err = ChatToMessages(out[:0], body, testOpts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMessageToChat(b *testing.B) {
	body, err := os.ReadFile("testdata/message-to-chat/tool-use.json")
	if err != nil {
		b.Fatal(err)
	}
	out := make([]byte, 0, 1<<14)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if out, _, err = MessageToChat(out[:0], body, respOpts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEventUsage(b *testing.B) {
	data := []byte(`{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}`)
	b.ReportAllocs()
	for b.Loop() {
		EventUsage(data)
	}
}

// recordedEvents splits a recorded stream into its events' names and data,
// copied out of the scanner, for a translator to be fed one at a time.
func recordedEvents(stream []byte) (names, datas [][]byte) {
	s := sse.NewScanner(1 << 16)
	s.Feed(stream)
	s.End()
	for {
		ev, ok, err := s.Next()
		if err != nil || !ok {
			return names, datas
		}
		names = append(names, append([]byte(nil), ev.Name...))
		datas = append(datas, append([]byte(nil), ev.Data...))
	}
}
