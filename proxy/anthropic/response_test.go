package anthropic

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var respOpts = ResponseOptions{Model: "claude", Created: 1_700_000_000}

func TestMessageToChatGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/message-to-chat/*.json")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			body, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := MessageToChat(nil, body, respOpts)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, strings.TrimSuffix(in[len("testdata/"):], ".json")+".golden", out)
		})
	}
}

func TestMessageToChatUsage(t *testing.T) {
	body := `{"id":"m","type":"message","content":[],"stop_reason":"end_turn","usage":{"input_tokens":7,"cache_read_input_tokens":100,"cache_creation_input_tokens":20,"output_tokens":5}}`
	out, u, err := MessageToChat(nil, []byte(body), respOpts)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Usage{7, 100, 20, 5}); u != want {
		t.Fatalf("usage %+v, want %+v", u, want)
	}
	want := `"usage":{"prompt_tokens":127,"completion_tokens":5,"total_tokens":132,"prompt_tokens_details":{"cached_tokens":100}}`
	if !strings.Contains(string(out), want) {
		t.Fatalf("got %s\nwant it to contain %s", out, want)
	}
	if !strings.Contains(string(out), `"content":null`) {
		t.Fatalf("no text block: content must be null, got %s", out)
	}
	// A negative count would refund: it reads as 0.
	_, u, err = MessageToChat(nil, []byte(`{"type":"message","usage":{"input_tokens":-5,"output_tokens":3}}`), respOpts)
	if err != nil || u != (Usage{OutputTokens: 3}) {
		t.Fatalf("negative count: usage %+v err %v", u, err)
	}
}

func TestMessageToChatFinishReason(t *testing.T) {
	f := func(stop, want string) {
		t.Helper()
		body := `{"type":"message","content":[{"type":"text","text":"x"}],"stop_reason":` + stop + `}`
		out, _, err := MessageToChat(nil, []byte(body), respOpts)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), `"finish_reason":`+want) {
			t.Fatalf("stop_reason %s: got %s, want finish_reason %s", stop, out, want)
		}
	}
	f(`"end_turn"`, `"stop"`)
	f(`"stop_sequence"`, `"stop"`)
	f(`"pause_turn"`, `"stop"`)
	f(`"max_tokens"`, `"length"`)
	f(`"model_context_window_exceeded"`, `"length"`)
	f(`"tool_use"`, `"tool_calls"`)
	f(`"refusal"`, `"content_filter"`)
	f(`"something_new"`, `"stop"`)
	f(`null`, `null`)
}

func TestMessageToChatRefuses(t *testing.T) {
	for _, body := range []string{``, `{`, `[]`, `{"type":"error","error":{"type":"api_error","message":"x"}}`, `{"type":"message","content":"x"}`} {
		if _, _, err := MessageToChat(nil, []byte(body), respOpts); err != ErrNotMessage {
			t.Fatalf("%q: err %v, want ErrNotMessage", body, err)
		}
	}
}
