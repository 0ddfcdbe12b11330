package proxy

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestRequestFields(t *testing.T) {
	f := func(body, wantModel string, wantStream bool) {
		t.Helper()
		var rf requestFields
		if e, d := rf.parse([]byte(body)); e != nil {
			t.Fatalf("parse(%s): %s %s", body, e.message, d)
		}
		if string(rf.model) != wantModel || rf.stream != wantStream {
			t.Fatalf("parse(%s) = model %q stream %v, want %q %v", body, rf.model, rf.stream, wantModel, wantStream)
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
	f := func(body string, want *apiError) {
		t.Helper()
		var rf requestFields
		if e, _ := rf.parse([]byte(body)); e != want {
			got := "<nil>"
			if e != nil {
				got = e.code
			}
			t.Fatalf("parse(%s) = %s, want %s", body, got, want.code)
		}
	}
	f(``, errMalformedJSON)
	f(`{"model":"m"`, errMalformedJSON)
	f(`{"model":"m",}`, errMalformedJSON)
	f(`{'model':'m'}`, errMalformedJSON)
	f(`["model","m"]`, errNotObject)
	f(`"model"`, errNotObject)
	f(`{}`, errMissingModel)
	f(`{"messages":[]}`, errMissingModel)
	f(`{"model":""}`, errModelNotString)
	f(`{"model":42}`, errModelNotString)
	f(`{"model":null}`, errModelNotString)
	f(`{"model":"m","stream":"yes"}`, errStreamNotBool)
	f(`{"model":"m","model":"n"}`, errDuplicateField)
	f(`{"model":"m","mod\u0065l":"n"}`, errDuplicateField)
	f(`{"model":"m","stream":true,"stream":false}`, errDuplicateField)
	f(`{"model":"m","stre\u0061m":true,"stream":false}`, errDuplicateField)
	f(`{"model":"m","prompt":"a","prompt":["b","c"]}`, errDuplicateField)
	f(`{"model":"m","best_of":1,"best_\u006ff":5}`, errDuplicateField)
	f(`{"model":"m","echo":false,"echo":true}`, errDuplicateField)
	f(`{"model":"m","best_of":0}`, errBestOf)
	f(`{"model":"m","best_of":"2"}`, errBestOf)
	// Go's encoding/json reads these as the keys they fold to.
	f(`{"model":"m","MODEL":"n"}`, errAmbiguousKey)
	f(`{"Model":"m"}`, errAmbiguousKey)
	f(`{"model":"m","N":3}`, errAmbiguousKey)
	f(`{"model":"m","max_toKens":3}`, errAmbiguousKey)
	f(`{"model":"m","\u0053tream":true}`, errAmbiguousKey)
	// Inside stream_options: the key the gateway edits.
	f(`{"model":"m","stream_options":{"include_usage":false,"include_usage":false}}`, errDuplicateKey)
	f(`{"model":"m","stream_options":{"include_usage":true,"include_\u0075sage":false}}`, errDuplicateKey)
	f(`{"model":"m","stream_options":{"INCLUDE_USAGE":false}}`, errAmbiguousKey)
	f(`{"model":"m","stream_options":{"include_uſage":false}}`, errAmbiguousKey)
	f(`{"model":"m","stream_options":{"include_u\u017fage":false}}`, errAmbiguousKey)
	f(`{"model":"m","stream_options":{"include_usage\0":false}}`, errMalformedJSON)
}

func TestModelEdit(t *testing.T) {
	body := []byte(`{"messages":[{"role":"user","content":"hi"}], "model" : "alias" ,"stream":true}`)
	var rf requestFields
	if e, _ := rf.parse(body); e != nil {
		t.Fatal(e.message)
	}
	got := appendEdits(nil, body, rf.modelEdit(appendQuoted(nil, `up/"model"`)))
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
		var rf requestFields
		if e, _ := rf.parse(body); e != nil {
			return
		}
		out := appendEdits(nil, body, rf.modelEdit(appendQuoted(nil, "renamed")))
		var again requestFields
		if e, _ := again.parse(out); e != nil || string(again.model) != "renamed" || again.stream != rf.stream {
			t.Fatalf("rewrite of %q gave %q, which reads back as %q (%v)", body, out, again.model, e)
		}
		var std map[string]json.RawMessage
		if err := json.Unmarshal(body, &std); err != nil {
			// Validation is structural on purpose (see parse): strings may hold
			// what encoding/json refuses, but never anything that changes keys.
			return
		}
		var model string
		if err := json.Unmarshal(std["model"], &model); err != nil || model != string(rf.model) {
			t.Fatalf("model of %q: got %q, encoding/json %q (%v)", body, rf.model, model, err)
		}
		var stream *bool
		if raw, ok := std["stream"]; ok {
			if err := json.Unmarshal(raw, &stream); err != nil {
				t.Fatalf("stream of %q accepted but is %s", body, raw)
			}
		}
		if want := stream != nil && *stream; rf.stream != want {
			t.Fatalf("stream of %q: got %v, want %v", body, rf.stream, want)
		}
		// The body an upstream gets, decoded as a Go upstream decodes it (the
		// last of repeated keys wins, names match case-insensitively), must
		// name the route's model and ask for usage.
		ue, edited := rf.usageEdit(body)
		if so := bytes.TrimSpace(std["stream_options"]); len(so) == 0 || so[0] == '{' || so[0] == 'n' {
			sent := appendEdits(nil, body, rf.modelEdit(appendQuoted(nil, "renamed")))
			if edited {
				sent = appendEdits(nil, body, rf.modelEdit(appendQuoted(nil, "renamed")), ue)
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

var benchBody = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},` +
	`{"role":"user","content":"Hello there, how are you doing today? Tell me a story about a \"dragon\" in three sentences."}],` +
	`"max_tokens":256,"temperature":0.7,"stream":false}`)

func BenchmarkRequestFields(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	var rf requestFields
	for b.Loop() {
		if e, _ := rf.parse(benchBody); e != nil {
			b.Fatal(e.message)
		}
	}
}

func TestRequestFieldsCounts(t *testing.T) {
	f := func(body string, wantMax, wantN int64) {
		t.Helper()
		var rf requestFields
		if e, d := rf.parse([]byte(body)); e != nil {
			t.Fatalf("parse(%s): %s %s", body, e.message, d)
		}
		if rf.maxTokens != wantMax || rf.n != wantN {
			t.Fatalf("parse(%s) = max %d n %d, want %d %d", body, rf.maxTokens, rf.n, wantMax, wantN)
		}
	}
	f(`{"model":"m"}`, -1, 1)
	f(`{"model":"m","max_tokens":256,"n":3}`, 256, 3)
	f(`{"model":"m","max_completion_tokens":100,"max_tokens":5}`, 100, 1)
	f(`{"model":"m","max_tokens":5,"max_completion_tokens":100}`, 100, 1)
	f(`{"model":"m","max_tokens":null,"n":null}`, -1, 1)

	p := func(body string, wantPrompts, wantBestOf int64, wantEcho bool) {
		t.Helper()
		var rf requestFields
		if e, d := rf.parse([]byte(body)); e != nil {
			t.Fatalf("parse(%s): %s %s", body, e.message, d)
		}
		if rf.prompts != wantPrompts || rf.bestOf != wantBestOf || rf.echo != wantEcho {
			t.Fatalf("parse(%s) = prompts %d best_of %d echo %v, want %d %d %v", body, rf.prompts, rf.bestOf, rf.echo,
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

	g := func(body string, want *apiError) {
		t.Helper()
		var rf requestFields
		if e, _ := rf.parse([]byte(body)); e != want {
			t.Fatalf("parse(%s) = %v, want %s", body, e, want.message)
		}
	}
	g(`{"model":"m","max_tokens":0}`, errMaxTokens)
	g(`{"model":"m","max_tokens":-5}`, errMaxTokens)
	g(`{"model":"m","max_tokens":1.5}`, errMaxTokens)
	g(`{"model":"m","max_tokens":"10"}`, errMaxTokens)
	g(`{"model":"m","max_tokens":1e3}`, errMaxTokens)
	g(`{"model":"m","max_tokens":99999999999999999999}`, errMaxTokens)
	g(`{"model":"m","n":0}`, errChoices)
	g(`{"model":"m","n":129}`, errChoices)
	g(`{"model":"m","max_tokens":1,"max_tokens":2}`, errDuplicateField)
}

func TestUsageEdit(t *testing.T) {
	f := func(body, want string, needed bool) {
		t.Helper()
		var rf requestFields
		if e, _ := rf.parse([]byte(body)); e != nil {
			t.Fatalf("parse(%s): %s", body, e.message)
		}
		e, ok := rf.usageEdit([]byte(body))
		if ok != needed {
			t.Fatalf("usageEdit(%s) needed %v, want %v", body, ok, needed)
		}
		if !ok {
			return
		}
		got := string(appendEdits(nil, []byte(body), e))
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
	var rf requestFields
	rf.parse(body)
	ue, _ := rf.usageEdit(body)
	got := appendEdits(nil, body, ue, rf.modelEdit([]byte(`"real"`)))
	if want := `{"stream":true,"model":"real","stream_options":{"include_usage":true}}`; string(got) != want {
		t.Fatalf("got %s want %s", got, want)
	}
}
