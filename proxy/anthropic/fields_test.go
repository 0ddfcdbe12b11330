package anthropic

import (
	"encoding/json"
	"testing"
)

func TestRequestParse(t *testing.T) {
	f := func(body string, wantErr error, wantModel string, wantMax, wantBound int64, wantStream bool) {
		t.Helper()
		var r Request
		_, err := r.Parse([]byte(body))
		if err != wantErr {
			t.Fatalf("%s: err %v, want %v", body, err, wantErr)
		}
		if err != nil {
			return
		}
		if string(r.Model) != wantModel || r.MaxTokens != wantMax || r.MaxTokensBound != wantBound || r.Stream != wantStream {
			t.Fatalf("%s: model %q max %d bound %d stream %v", body, r.Model, r.MaxTokens, r.MaxTokensBound, r.Stream)
		}
	}
	f(`{"model":"m","max_tokens":5,"messages":[]}`, nil, "m", 5, 5, false)
	f(`{"model":"m","stream":true}`, nil, "m", -1, -1, true)
	f(` { "mod\u0065l" : "cl\u0061ude" , "max_tok\u0065ns":7}`, nil, "claude", 7, 7, false)
	// Repeated: the last is read, as Anthropic's server and encoding/json
	// read it; the largest max_tokens bounds; any stream true streams.
	f(`{"model":"a","model":"b","max_tokens":9,"max_tokens":3}`, nil, "b", 3, 9, false)
	f(`{"model":1,"model":"b"}`, nil, "b", -1, -1, false)
	f(`{"model":"b","stream":true,"stream":false}`, nil, "b", -1, -1, true)
	f(`{"model":"b","stream":null}`, nil, "b", -1, -1, false)
	f(`{"model":"b","model":null}`, ErrModelNotString, "", 0, 0, false)
	f(`{"model":""}`, ErrModelNotString, "", 0, 0, false)
	f(`{"model":"\udc00"}`, nil, "\ufffd", -1, -1, false)
	f(`{"model":"a\u0000b\\"}`, nil, "a\x00b\\", -1, -1, false)
	f(`{"max_tokens":5}`, ErrMissingModel, "", 0, 0, false)
	f(`{}`, ErrMissingModel, "", 0, 0, false)
	f(`[]`, ErrNotObject, "", 0, 0, false)
	f(`{"model":"m"`, ErrMalformedJSON, "", 0, 0, false)
	f(`{"mod\0el":"m"}`, ErrMalformedJSON, "", 0, 0, false)
	f(`{"model":"m","max_tokens":null}`, ErrMaxTokens, "", 0, 0, false)
	f(`{"model":"m","max_tokens":5.0}`, ErrMaxTokens, "", 0, 0, false)
	f(`{"model":"m","max_tokens":1e3}`, ErrMaxTokens, "", 0, 0, false)
	f(`{"model":"m","max_tokens":-1}`, ErrMaxTokens, "", 0, 0, false)
	f(`{"model":"m","max_tokens":"5"}`, ErrMaxTokens, "", 0, 0, false)
	f(`{"model":"m","max_tokens":1000000000000000}`, ErrMaxTokens, "", 0, 0, false)
	f(`{"model":"m","max_tokens":"x","max_tokens":5}`, ErrMaxTokens, "", 0, 0, false)
	f(`{"model":"m","stream":1}`, ErrStreamNotBool, "", 0, 0, false)
	// Variants Go's encoding/json reads as the key and Python does not.
	f(`{"Model":"x","model":"m"}`, ErrAmbiguousKey, "", 0, 0, false)
	f(`{"model":"m","MAX_TOKENS":5}`, ErrAmbiguousKey, "", 0, 0, false)
	f(`{"model":"m","max_tokenſ":5}`, ErrAmbiguousKey, "", 0, 0, false)
	f(`{"model":"m","Stream":true}`, ErrAmbiguousKey, "", 0, 0, false)
	f(`{"model":"m","modelx":1,"max":2,"streams":true}`, nil, "m", -1, -1, false)
	f(`{"model":"1","model":"2","model":"3","model":"4","model":"5","model":"6","model":"7","model":"8"}`, nil, "8", -1, -1, false)
	f(`{"model":"1","model":"2","model":"3","model":"4","model":"5","model":"6","model":"7","model":"8","model":"9"}`,
		ErrRepeatedModel, "", 0, 0, false)
}

func TestAppendRenamed(t *testing.T) {
	f := func(body, want string) {
		t.Helper()
		var r Request
		if _, err := r.Parse([]byte(body)); err != nil {
			t.Fatal(err)
		}
		if got := string(r.AppendRenamed(nil, []byte(body), []byte(`"up"`))); got != want {
			t.Fatalf("%s: got %s, want %s", body, got, want)
		}
	}
	f(`{"model":"a","max_tokens":1}`, `{"model":"up","max_tokens":1}`)
	f(`{"x":{"model":"keep"}, "model" : "a" }`, `{"x":{"model":"keep"}, "model" : "up" }`)
	f(`{"model":1,"m\u006fdel":"a"}`, `{"model":"up","m\u006fdel":"up"}`)
}

// FuzzMessagesFields holds Parse to encoding/json (which, like Anthropic's
// Python server, takes the last of repeated keys): whatever Parse accepts,
// the model is the one encoding/json reads, so is max_tokens, which is
// within the bound admission weighs, and a stream is seen as one.
func FuzzMessagesFields(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","max_tokens":5,"stream":true,"messages":[]}`,
		`{"model":"a","model":"b","max_tokens":9,"max_tokens":3}`,
		`{"mod\u0065l":"x","max_tokens":1}`, `{"model":"m","Max_Tokens":7}`,
		`{"model":"m","stream":true,"stream":null}`, `{"model":null,"model":"m"}`,
		`{"model":"\ud800","max_tokens":0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r Request
		if _, err := r.Parse(body); err != nil {
			return
		}
		var v struct {
			Model     string `json:"model"`
			MaxTokens *int64 `json:"max_tokens"`
			Stream    bool   `json:"stream"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return // structural validation lets through what encoding/json refuses
		}
		if v.Model != string(r.Model) {
			t.Fatalf("model of %q: got %q, encoding/json %q", body, r.Model, v.Model)
		}
		if (v.MaxTokens == nil) != (r.MaxTokens < 0) || v.MaxTokens != nil && (*v.MaxTokens != r.MaxTokens || *v.MaxTokens > r.MaxTokensBound) {
			t.Fatalf("max_tokens of %q: got %d (bound %d), encoding/json %v", body, r.MaxTokens, r.MaxTokensBound, v.MaxTokens)
		}
		if v.Stream && !r.Stream {
			t.Fatalf("%q streams to encoding/json, not to the gateway", body)
		}
	})
}

func TestRequestExternal(t *testing.T) {
	f := func(body string, want bool) {
		t.Helper()
		var r Request
		if _, err := r.Parse([]byte(body)); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if r.External != want {
			t.Fatalf("%s: external %v, want %v", body, r.External, want)
		}
	}
	const head = `{"model":"m","max_tokens":5,`
	f(head+`"messages":[{"role":"user","content":"Read the file at this url: web_search"}]}`, false)
	f(head+`"messages":[{"role":"user","content":"h\u00e9 \u003cb\u003e \"type\":\"url\""}]}`, false)
	// A tool whose input has a url property (Claude Code's WebFetch) is the
	// client's own: its results come back in a later body.
	f(head+`"tools":[{"name":"WebFetch","input_schema":{"type":"object","properties":{"url":{"type":"string"}}}}],"messages":[]}`, false)
	f(head+`"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://x/a.png"}}]}]}`, true)
	f(head+`"messages":[{"role":"user","content":[{"type":"document","source":{"type" : "file","file_id":"f"}}]}]}`, true)
	f(head+`"messages":[{"role":"user","content":[{"type":"document","source":{"file_id" :"f"}}]}]}`, true)
	f(head+`"tools":[{"type":"web_search_20250305","name":"web_search"}],"messages":[]}`, true)
	f(head+`"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}],"messages":[]}`, true)
	f(head+`"tools":[{"type":"code_execution_20250825","name":"code_execution"}],"messages":[]}`, true)
	f(head+`"mcp_servers":[{"type":"url","url":"https://mcp"}],"messages":[]}`, true)
	f(head+`"container":{"skills":[]},"messages":[]}`, true)
	// Escaped letters could spell any of them.
	f(head+`"messages":[{"role":"user","content":[{"type":"image","source":{"type":"\u0075rl","url":"https://x"}}]}]}`, true)
	f(head+`"messages":[{"role":"user","content":[{"type":"image","source":{"typ\u0065":"url","url":"https://x"}}]}]}`, true)
}
