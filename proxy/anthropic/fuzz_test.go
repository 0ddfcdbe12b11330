package anthropic

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzChatToMessages: any body either translates into valid JSON that is
// a Messages request (an object with model, a positive max_tokens and
// messages), or is refused with a FieldError or ErrNotObject; never a panic.
func FuzzChatToMessages(f *testing.F) {
	inputs, _ := filepath.Glob("testdata/chat-to-messages/*.json")
	for _, in := range inputs {
		if b, err := os.ReadFile(in); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"messages":[{"role":"user","content":"hi"}],"stop":"x","tool_choice":"required","tools":[{"type":"function","function":{"name":"f"}}]}`))
	f.Add([]byte(`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]},{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":\"\\u0000\"}"}}]},{"role":"tool","tool_call_id":"a","content":"r"}]}`))
	f.Add([]byte(`{"messages":[{"r\u006fle":"user","content":"\ud800"}],"user":"\u00e9"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, info, err := ChatToMessages(nil, body, RequestOptions{Model: "m", DefaultMaxTokens: 100})
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) && err != ErrNotObject {
				t.Fatalf("error of another kind: %v", err)
			}
			if strings.Contains(err.Error(), "\n") && len(body) < 64 {
				t.Fatalf("error spans lines: %q", err)
			}
			return
		}
		var req struct {
			Model     string            `json:"model"`
			MaxTokens int64             `json:"max_tokens"`
			Messages  []json.RawMessage `json:"messages"`
		}
		if !json.Valid(out) {
			t.Fatalf("not JSON: %s", out)
		}
		if err := json.Unmarshal(out, &req); err != nil || req.Model != "m" || req.MaxTokens < 1 || req.MaxTokens != info.MaxTokens || len(req.Messages) == 0 {
			t.Fatalf("not a Messages request (%v): %s", err, out)
		}
		if name, err := checkKeys(out); err != nil {
			t.Fatalf("the translation repeats the key %q: %s", name, out)
		}
	})
}

// FuzzStreamTranslate: any sequence of events (split from the fuzzed bytes
// as name NUL data lines) writes a well-formed chat SSE stream, each
// payload JSON but [DONE], never negative usage, never a panic.
func FuzzStreamTranslate(f *testing.F) {
	if b, err := os.ReadFile("testdata/stream/tool-use.sse"); err == nil {
		var seed []string
		for _, ev := range strings.Split(string(b), "\n\n") {
			name, data, ok := strings.Cut(ev, "\ndata: ")
			if ok {
				seed = append(seed, strings.TrimPrefix(name, "event: ")+"\x00"+data)
			}
		}
		f.Add(strings.Join(seed, "\n"), true)
	}
	f.Add("\x00{\"type\":\"message_start\",\"message\":{\"id\":\"\\u0000\\ud83d\",\"usage\":{\"input_tokens\":-1,\"output_tokens\":1e3}}}\n\x00{\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"\\q\"}}", false)
	f.Add("error\x00{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"\x01\"}}", true)
	f.Fuzz(func(t *testing.T, events string, includeUsage bool) {
		var tr StreamTranslator
		tr.Reset("model \"x\"", 1, includeUsage)
		var out []byte
		for _, line := range strings.Split(events, "\n") {
			name, data, _ := strings.Cut(line, "\x00")
			out = tr.Translate(out, []byte(name), []byte(data))
			u := tr.Usage()
			if u.InputTokens < 0 || u.CacheReadInputTokens < 0 || u.CacheCreationInputTokens < 0 || u.OutputTokens < 0 ||
				u.PromptTokens() < 0 {
				t.Fatalf("negative usage %+v", u)
			}
		}
		chatEvents(t, out)
	})
}

// FuzzEventUsage: the usage readers never panic nor read a negative count.
func FuzzEventUsage(f *testing.F) {
	f.Add([]byte(`{"type":"message_start","message":{"usage":{"input_tokens":25,"cache_read_input_tokens":3,"output_tokens":1}}}`))
	f.Add([]byte(`{"type":"message_delta","usage":{"output_tokens":-15}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, read := range []func([]byte) (Usage, UsageFields, bool){EventUsage, BodyUsage} {
			u, _, _ := read(data)
			if u.InputTokens < 0 || u.CacheReadInputTokens < 0 || u.CacheCreationInputTokens < 0 || u.OutputTokens < 0 {
				t.Fatalf("negative usage %+v", u)
			}
		}
		for _, status := range []int{400, 529} {
			if !json.Valid(ErrorToOpenAI(nil, status, data)) || !json.Valid(ErrorFromOpenAI(nil, status, data)) {
				t.Fatalf("error translation of %q is not JSON", data)
			}
		}
	})
}
