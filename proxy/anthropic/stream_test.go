package anthropic

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/sse"
)

// translateStream feeds a whole Anthropic SSE stream to a translator and
// returns what it wrote.
func translateStream(t testing.TB, tr *StreamTranslator, stream []byte) []byte {
	t.Helper()
	s := sse.NewScanner(1 << 20)
	s.Feed(stream)
	s.End()
	var out []byte
	for {
		ev, ok, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = tr.Translate(out, ev.Name, ev.Data)
	}
}

// chatEvents splits a translated stream into its data payloads, checking
// that it is a well-formed chat SSE stream: data lines only, each event
// ended by a blank line, each payload JSON but [DONE].
func chatEvents(t testing.TB, out []byte) []string {
	t.Helper()
	if len(out) == 0 {
		return nil
	}
	if !bytes.HasSuffix(out, []byte("\n\n")) {
		t.Fatalf("stream does not end with a blank line: %q", out)
	}
	var events []string
	for _, ev := range strings.Split(strings.TrimSuffix(string(out), "\n\n"), "\n\n") {
		data, ok := strings.CutPrefix(ev, "data: ")
		if !ok || strings.Contains(data, "\n") {
			t.Fatalf("not one data line: %q", ev)
		}
		if data != "[DONE]" && !json.Valid([]byte(data)) {
			t.Fatalf("not JSON: %q", data)
		}
		events = append(events, data)
	}
	return events
}

func TestStreamTranslateGolden(t *testing.T) {
	for _, includeUsage := range []bool{false, true} {
		stream, err := os.ReadFile("testdata/stream/tool-use.sse")
		if err != nil {
			t.Fatal(err)
		}
		var tr StreamTranslator
		tr.Reset("claude", 1_700_000_000, includeUsage)
		out := translateStream(t, &tr, stream)
		chatEvents(t, out)
		name := "stream/tool-use.chat.sse"
		if includeUsage {
			name = "stream/tool-use.include-usage.chat.sse"
		}
		goldenText(t, name, out)
		if want := (Usage{472, 1000, 20, 89}); tr.Usage() != want {
			t.Fatalf("usage %+v, want %+v", tr.Usage(), want)
		}
		if !tr.Done() || tr.FinishReason() != "tool_calls" {
			t.Fatalf("done %v finish %q", tr.Done(), tr.FinishReason())
		}
	}
}

// goldenText compares got with testdata/<name> byte for byte.
func goldenText(t *testing.T, name string, got []byte) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the golden file:\n%s", name, got)
	}
}

// TestStreamTranslateEvents: one line per event kind, what it writes.
func TestStreamTranslateEvents(t *testing.T) {
	f := func(name, data, want string) {
		t.Helper()
		var tr StreamTranslator
		tr.Reset("m", 5, true)
		tr.Translate(nil, []byte("message_start"), []byte(`{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":3,"output_tokens":1}}}`))
		got := string(tr.Translate(nil, []byte(name), []byte(data)))
		if got != want {
			t.Fatalf("%s %s:\n got %q\nwant %q", name, data, got, want)
		}
	}
	const head = `data: {"id":"msg_1","object":"chat.completion.chunk","created":5,"model":"m",`
	f("ping", `{"type":"ping"}`, ``)
	f("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`, ``)
	f("content_block_stop", `{"type":"content_block_stop","index":0}`, ``)
	f("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\u0000b\ud83d\ude00"}}`,
		head+`"choices":[{"index":0,"delta":{"content":"a\u0000b😀"},"logprobs":null,"finish_reason":null}]}`+"\n\n")
	f("", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"by type"}}`,
		head+`"choices":[{"index":0,"delta":{"content":"by type"},"logprobs":null,"finish_reason":null}]}`+"\n\n")
	f("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}`, ``)
	f("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{"}}`, ``)
	f("message_delta", `{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":9}}`,
		head+`"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}]}`+"\n\n")
	f("message_stop", `{"type":"message_stop"}`,
		head+`"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"prompt_tokens_details":{"cached_tokens":0}}}`+"\n\ndata: [DONE]\n\n")
	f("error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
		`data: {"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":"overloaded_error"}}`+"\n\n")
	f("future_event", `{"type":"future_event"}`, ``)
	f("content_block_delta", `not json`, ``)
	f("content_block_delta", `{"type":"content_block_delta","delta":{"type":"text_delta","text":"unterminated}}`, ``)
}

// TestStreamTranslateCutBillsProduced: a stream cut after some deltas
// bills the input of message_start and the last cumulative output count.
func TestStreamTranslateCutBillsProduced(t *testing.T) {
	var tr StreamTranslator
	tr.Reset("m", 0, false)
	tr.Translate(nil, nil, []byte(`{"type":"message_start","message":{"id":"x","usage":{"input_tokens":50,"cache_read_input_tokens":7,"output_tokens":1}}}`))
	if want := (Usage{InputTokens: 50, CacheReadInputTokens: 7, OutputTokens: 1}); tr.Usage() != want {
		t.Fatalf("after message_start: %+v, want %+v", tr.Usage(), want)
	}
	tr.Translate(nil, nil, []byte(`{"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":30}}`))
	tr.Translate(nil, nil, []byte(`{"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":-4,"input_tokens":60}}`))
	if want := (Usage{InputTokens: 60, CacheReadInputTokens: 7, OutputTokens: 30}); tr.Usage() != want {
		t.Fatalf("after message_delta: %+v, want %+v (a negative count is no count)", tr.Usage(), want)
	}
	// A second message_start must not restart the count.
	tr.Translate(nil, nil, []byte(`{"type":"message_start","message":{"id":"y","usage":{"input_tokens":1,"output_tokens":0}}}`))
	if tr.Usage().InputTokens != 60 {
		t.Fatalf("second message_start changed usage: %+v", tr.Usage())
	}
	if tr.Done() {
		t.Fatal("done before message_stop")
	}
}

func TestStreamTranslateEndsAtError(t *testing.T) {
	var tr StreamTranslator
	tr.Reset("m", 0, true)
	out := tr.Translate(nil, []byte("error"), []byte(`{"type":"error","error":{"type":"api_error","message":"boom"}}`))
	out = tr.Translate(out, []byte("message_stop"), []byte(`{"type":"message_stop"}`))
	if events := chatEvents(t, out); len(events) != 1 || !tr.Done() {
		t.Fatalf("after error: %q, want the error event only", out)
	}
}

func TestStreamTranslateReset(t *testing.T) {
	stream, err := os.ReadFile("testdata/stream/tool-use.sse")
	if err != nil {
		t.Fatal(err)
	}
	var tr StreamTranslator
	tr.Reset("claude", 1_700_000_000, false)
	first := translateStream(t, &tr, stream)
	tr.Reset("claude", 1_700_000_000, false)
	if second := translateStream(t, &tr, stream); !bytes.Equal(first, second) {
		t.Fatalf("a reset translator wrote another stream:\n%s\n%s", first, second)
	}
}
