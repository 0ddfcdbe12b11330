package openai

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestRequestFields(t *testing.T) {
	f := func(body, wantModel string, wantStream bool) {
		t.Helper()
		var rf Request
		if d, err := rf.Parse([]byte(body)); err != nil {
			t.Fatalf("Parse(%s): %v %s", body, err, d)
		}
		if string(rf.Model) != wantModel || rf.Stream != wantStream {
			t.Fatalf("Parse(%s) = model %q stream %v, want %q %v", body, rf.Model, rf.Stream, wantModel, wantStream)
		}
	}
	f(`{"model":"gpt-4o-mini","messages":[]}`, "gpt-4o-mini", false)
	f(` { "messages" : [ {"role":"user","content":"a \"model\": \"x\" }"} ] , "model" : "m" , "stream" : true } `, "m", true)
	f(`{"stream":false,"model":"m"}`, "m", false)
	f(`{"stream":null,"model":"m"}`, "m", false)
	f(`{"model":"m","nested":{"model":"other","stream":true}}`, "m", false)
	f(`{"model":"gpt\u002d4o"}`, "gpt-4o", false)
	f(`{"mod\u0065l":"m"}`, "m", false)
	f(`{"model":"m","x":"ends with backslash \\","y":[1,{"z":"\\\""}]}`, "m", false)
	f("{\"model\":\"m\",\n\t\"n\":2}", "m", false)
}

func TestRequestFieldsRejects(t *testing.T) {
	f := func(body string, want error) {
		t.Helper()
		var rf Request
		if _, err := rf.Parse([]byte(body)); err != want {
			t.Fatalf("Parse(%s) = %v, want %v", body, err, want)
		}
	}
	f(``, ErrMalformedJSON)
	f(`{"model":"m"`, ErrMalformedJSON)
	f(`{"model":"m",}`, ErrMalformedJSON)
	f(`{'model':'m'}`, ErrMalformedJSON)
	f(`["model","m"]`, ErrNotObject)
	f(`"model"`, ErrNotObject)
	f(`{}`, ErrMissingModel)
	f(`{"messages":[]}`, ErrMissingModel)
	f(`{"model":""}`, ErrModelNotString)
	f(`{"model":42}`, ErrModelNotString)
	f(`{"model":null}`, ErrModelNotString)
	f(`{"model":"m","stream":"yes"}`, ErrStreamNotBool)
	f(`{"model":"m","model":"n"}`, ErrDuplicateField)
	f(`{"model":"m","mod\u0065l":"n"}`, ErrDuplicateField)
	f(`{"model":"m","stream":true,"stream":false}`, ErrDuplicateField)
	f(`{"model":"m","stre\u0061m":true,"stream":false}`, ErrDuplicateField)
	f(`{"model":"m","prompt":"a","prompt":["b","c"]}`, ErrDuplicateField)
	f(`{"model":"m","best_of":1,"best_\u006ff":5}`, ErrDuplicateField)
	f(`{"model":"m","echo":false,"echo":true}`, ErrDuplicateField)
	f(`{"model":"m","best_of":0}`, ErrBestOf)
	f(`{"model":"m","best_of":"2"}`, ErrBestOf)
	// Go's encoding/json reads these as the keys they fold to.
	f(`{"model":"m","MODEL":"n"}`, ErrAmbiguousKey)
	f(`{"Model":"m"}`, ErrAmbiguousKey)
	f(`{"model":"m","N":3}`, ErrAmbiguousKey)
	f(`{"model":"m","max_toKens":3}`, ErrAmbiguousKey)
	f(`{"model":"m","\u0053tream":true}`, ErrAmbiguousKey)
	// Inside stream_options: the key the gateway edits.
	f(`{"model":"m","stream_options":{"include_usage":false,"include_usage":false}}`, ErrDuplicateKey)
	f(`{"model":"m","stream_options":{"include_usage":true,"include_\u0075sage":false}}`, ErrDuplicateKey)
	f(`{"model":"m","stream_options":{"INCLUDE_USAGE":false}}`, ErrAmbiguousKey)
	f(`{"model":"m","stream_options":{"include_uſage":false}}`, ErrAmbiguousKey)
	f(`{"model":"m","stream_options":{"include_u\u017fage":false}}`, ErrAmbiguousKey)
	f(`{"model":"m","stream_options":{"include_usage\0":false}}`, ErrMalformedJSON)
}

func TestModelEdit(t *testing.T) {
	body := []byte(`{"messages":[{"role":"user","content":"hi"}], "model" : "alias" ,"stream":true}`)
	var rf Request
	if _, err := rf.Parse(body); err != nil {
		t.Fatal(err)
	}
	got := AppendEdits(nil, body, rf.ModelEdit(quoted(`up/"model"`)))
	want := `{"messages":[{"role":"user","content":"hi"}], "model" : "up/\"model\"" ,"stream":true}`
	if string(got) != want {
		t.Fatalf("rewritten:\n got %s\nwant %s", got, want)
	}
}

// FuzzRequestFields checks the one-pass reader against encoding/json: whatever
// it accepts, the standard library must read the same model and stream, and a
// rewrite must yield valid JSON naming the new model.
func FuzzRequestFields(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}`,
		`{"model":"a\"b","x":[1,2,{"y":"}"}]}`,
		`{"mod\u0065l":"m"}`, `{"model":"m","model":"n"}`, `[]`, `{"model":1}`, `{`, ` {"stream":false, "model":"\\"} `,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}`,
		`{"model":"m","stream_options":{"include_\u0075sage":false}}`,
		`{"model":"m","stream_options":{"Include_Usage":false}}`, `{"model":"m","MODEL":"x"}`,
		`{"model":"m","prompt":["a",[1,2],"b"],"best_of":2,"echo":true}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var rf Request
		if _, err := rf.Parse(body); err != nil {
			return
		}
		out := AppendEdits(nil, body, rf.ModelEdit(quoted("renamed")))
		var again Request
		if _, err := again.Parse(out); err != nil || string(again.Model) != "renamed" || again.Stream != rf.Stream {
			t.Fatalf("rewrite of %q gave %q, which reads back as %q (%v)", body, out, again.Model, err)
		}
		var std map[string]json.RawMessage
		if err := json.Unmarshal(body, &std); err != nil {
			// Validation is structural on purpose (see Parse): strings may hold
			// what encoding/json refuses, but never anything that changes keys.
			return
		}
		var model string
		if err := json.Unmarshal(std["model"], &model); err != nil || model != string(rf.Model) {
			t.Fatalf("model of %q: got %q, encoding/json %q (%v)", body, rf.Model, model, err)
		}
		var stream *bool
		if raw, ok := std["stream"]; ok {
			if err := json.Unmarshal(raw, &stream); err != nil {
				t.Fatalf("stream of %q accepted but is %s", body, raw)
			}
		}
		if want := stream != nil && *stream; rf.Stream != want {
			t.Fatalf("stream of %q: got %v, want %v", body, rf.Stream, want)
		}
		// The body an upstream gets, decoded as a Go upstream decodes it (the
		// last of repeated keys wins, names match case-insensitively), must
		// name the route's model and ask for usage.
		ue, edited := rf.UsageEdit(body)
		if so := bytes.TrimSpace(std["stream_options"]); len(so) == 0 || so[0] == '{' || so[0] == 'n' {
			sent := AppendEdits(nil, body, rf.ModelEdit(quoted("renamed")))
			if edited {
				sent = AppendEdits(nil, body, rf.ModelEdit(quoted("renamed")), ue)
			}
			var v struct {
				Model         string `json:"model"`
				StreamOptions struct {
					IncludeUsage bool `json:"include_usage"`
				} `json:"stream_options"`
			}
			if err := json.Unmarshal(sent, &v); err != nil || v.Model != "renamed" || !v.StreamOptions.IncludeUsage {
				t.Fatalf("upstream body for %q is %q, which encoding/json reads as %+v (%v)", body, sent, v, err)
			}
		}
		var back map[string]json.RawMessage
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("rewrite of %q gave invalid JSON %q: %v", body, out, err)
		}
		if string(back["model"]) != `"renamed"` {
			t.Fatalf("rewrite of %q gave model %s", body, back["model"])
		}
	})
}

// benchBody is a typical chat request.
var benchBody = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},` +
	`{"role":"user","content":"Hello there, how are you doing today? Tell me a story about a \"dragon\" in three sentences."}],` +
	`"max_tokens":256,"temperature":0.7,"stream":false}`)

func BenchmarkRequestFields(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	var rf Request
	for b.Loop() {
		if _, err := rf.Parse(benchBody); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRequestFieldsCounts(t *testing.T) {
	f := func(body string, wantMax, wantN int64) {
		t.Helper()
		var rf Request
		if d, err := rf.Parse([]byte(body)); err != nil {
			t.Fatalf("Parse(%s): %v %s", body, err, d)
		}
		if rf.MaxTokens != wantMax || rf.N != wantN {
			t.Fatalf("Parse(%s) = max %d n %d, want %d %d", body, rf.MaxTokens, rf.N, wantMax, wantN)
		}
	}
	f(`{"model":"m"}`, -1, 1)
	f(`{"model":"m","max_tokens":256,"n":3}`, 256, 3)
	f(`{"model":"m","max_completion_tokens":100,"max_tokens":5}`, 100, 1)
	f(`{"model":"m","max_tokens":5,"max_completion_tokens":100}`, 100, 1)
	f(`{"model":"m","max_tokens":null,"n":null}`, -1, 1)

	p := func(body string, wantPrompts, wantBestOf int64, wantEcho bool) {
		t.Helper()
		var rf Request
		if d, err := rf.Parse([]byte(body)); err != nil {
			t.Fatalf("Parse(%s): %v %s", body, err, d)
		}
		if rf.Prompts != wantPrompts || rf.BestOf != wantBestOf || rf.Echo != wantEcho {
			t.Fatalf("Parse(%s) = prompts %d best_of %d echo %v, want %d %d %v", body, rf.Prompts, rf.BestOf, rf.Echo,
				wantPrompts, wantBestOf, wantEcho)
		}
	}
	p(`{"model":"m"}`, 1, 0, false)
	p(`{"model":"m","prompt":"one"}`, 1, 0, false)
	p(`{"model":"m","prompt":[1,2,3,-4]}`, 1, 0, false)
	p(`{"model":"m","prompt":[ "a" , "b","c" ]}`, 3, 0, false)
	p(`{"model":"m","prompt":[[1,2],[3],[]]}`, 3, 0, false)
	p(`{"model":"m","prompt":[1,"a",[2]]}`, 2, 0, false)
	p(`{"model":"m","prompt":[]}`, 1, 0, false)
	p(`{"model":"m","prompt":null,"best_of":null,"echo":null}`, 1, 0, false)
	p(`{"model":"m","prompt":["a","b"],"best_of":5,"echo":true}`, 2, 5, true)
	p(`{"model":"m","echo":1}`, 1, 0, true)

	g := func(body string, want error) {
		t.Helper()
		var rf Request
		if _, err := rf.Parse([]byte(body)); err != want {
			t.Fatalf("Parse(%s) = %v, want %v", body, err, want)
		}
	}
	g(`{"model":"m","max_tokens":-1}`, ErrMaxTokens)
	g(`{"model":"m","max_completion_tokens":-1}`, ErrMaxTokens)
	g(`{"model":"m","max_tokens":-5}`, ErrMaxTokens)
	g(`{"model":"m","max_tokens":1.5}`, ErrMaxTokens)
	g(`{"model":"m","max_tokens":"10"}`, ErrMaxTokens)
	g(`{"model":"m","max_tokens":1e3}`, ErrMaxTokens)
	g(`{"model":"m","max_tokens":99999999999999999999}`, ErrMaxTokens)
	g(`{"model":"m","n":0}`, ErrChoices)
	g(`{"model":"m","n":129}`, ErrChoices)
	g(`{"model":"m","max_tokens":1,"max_tokens":2}`, ErrDuplicateField)
}

func TestUsageEdit(t *testing.T) {
	f := func(body, want string, needed bool) {
		t.Helper()
		var rf Request
		if _, err := rf.Parse([]byte(body)); err != nil {
			t.Fatalf("Parse(%s): %v", body, err)
		}
		e, ok := rf.UsageEdit([]byte(body))
		if ok != needed {
			t.Fatalf("usageEdit(%s) needed %v, want %v", body, ok, needed)
		}
		if !ok {
			return
		}
		got := string(AppendEdits(nil, []byte(body), e))
		if got != want {
			t.Fatalf("usageEdit(%s):\n got %s\nwant %s", body, got, want)
		}
		var v struct {
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := json.Unmarshal([]byte(got), &v); err != nil || !v.StreamOptions.IncludeUsage {
			t.Fatalf("edited body %s: %v %+v", got, err, v)
		}
	}
	f(`{"model":"m","stream":true}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, true)
	f(`{"model":"m" , "stream":true }`, `{"model":"m" , "stream":true ,"stream_options":{"include_usage":true}}`, true)
	f(`{"model":"m","stream_options":null}`, `{"model":"m","stream_options":{"include_usage":true}}`, true)
	f(`{"model":"m","stream_options":{}}`, `{"model":"m","stream_options":{"include_usage":true}}`, true)
	f(`{"model":"m","stream_options":{ }}`, `{"model":"m","stream_options":{ "include_usage":true}}`, true)
	f(`{"model":"m","stream_options":{"x":1}}`, `{"model":"m","stream_options":{"include_usage":true,"x":1}}`, true)
	f(`{"model":"m","stream_options":{"x":[{"include_usage":1}],"include_usage":false}}`, `{"model":"m","stream_options":{"x":[{"include_usage":1}],"include_usage":true}}`, true)
	f(`{"model":"m","stream_options":{"include_\u0075sage":false}}`, `{"model":"m","stream_options":{"include_\u0075sage":true}}`, true)
	f(`{"model":"m","stream_options":{"x":{"include_usage":false,"include_usage":false}, "include_usage" : null }}`,
		`{"model":"m","stream_options":{"x":{"include_usage":false,"include_usage":false}, "include_usage" : true }}`, true)
	f(`{"model":"m","stream_options":{"include_usage":true}}`, ``, false)
	f(`{"model":"m","stream_options":{"include_\u0075sage":true}}`, ``, false)
	f(`{"model":"m","stream_options":"bogus"}`, ``, false)
}

func TestAppendEditsWithRename(t *testing.T) {
	body := []byte(`{"stream":true,"model":"alias"}`)
	var rf Request
	if _, err := rf.Parse(body); err != nil {
		t.Fatal(err)
	}
	ue, _ := rf.UsageEdit(body)
	got := AppendEdits(nil, body, ue, rf.ModelEdit([]byte(`"real"`)))
	if want := `{"stream":true,"model":"real","stream_options":{"include_usage":true}}`; string(got) != want {
		t.Fatalf("got %s want %s", got, want)
	}
}

// quoted returns s as a JSON string literal, as a route's model name is kept.
func quoted(s string) []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestMaxTokensParam: 0 is read (the legacy completions take it; chat
// refuses it in proxy), and MaxTokensParam names the field the value came
// from, or the one refused, so that an error's param is what the client sent.
func TestMaxTokensParam(t *testing.T) {
	f := func(body string, wantMax int64, wantParam string, wantErr error) {
		t.Helper()
		var rf Request
		_, err := rf.Parse([]byte(body))
		if err != wantErr || (err == nil && rf.MaxTokens != wantMax) || string(rf.MaxTokensParam) != wantParam {
			t.Fatalf("Parse(%s) = %v, max %d param %q; want %v, %d %q", body, err, rf.MaxTokens, rf.MaxTokensParam, wantErr, wantMax, wantParam)
		}
	}
	f(`{"model":"m"}`, -1, "", nil)
	f(`{"model":"m","max_tokens":0}`, 0, "max_tokens", nil)
	f(`{"model":"m","max_completion_tokens":0}`, 0, "max_completion_tokens", nil)
	f(`{"model":"m","max_completion_tokens":7,"max_tokens":9}`, 7, "max_completion_tokens", nil)
	f(`{"model":"m","max_tokens":9,"max_completion_tokens":7}`, 7, "max_completion_tokens", nil)
	f(`{"model":"m","max_tokens":null}`, -1, "", nil)
	f(`{"model":"m","max_completion_tokens":7,"max_tokens":-9}`, 0, "max_tokens", ErrMaxTokens)
	f(`{"model":"m","max_completion_tokens":"7"}`, 0, "max_completion_tokens", ErrMaxTokens)
}
