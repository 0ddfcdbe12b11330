package mock

import (
	"strings"
	"testing"
)

// TestReadsLikeProviders: the mock reads a body as Python's json and Go's
// encoding/json do (the last of repeated keys wins, null included; escaped
// key names are decoded), so a gateway tested against it is tested against
// what real upstreams make of a body.
func TestReadsLikeProviders(t *testing.T) {
	f := func(ep endpoint, body string, check func(r *request) bool) {
		t.Helper()
		var r request
		if e := r.parse([]byte(body), ep, 8); e != nil {
			t.Fatalf("parse(%s): %s", body, e.message)
		}
		if !check(&r) {
			t.Fatalf("parse(%s) read %+v", body, r)
		}
	}
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	f(epChat, `{"model":"m",`+msgs+`,"stream_options":{"include_usage":true,"include_usage":false}}`,
		func(r *request) bool { return !r.includeUsage })
	f(epChat, `{"model":"m",`+msgs+`,"stream_options":{"include_usage":true,"include_\u0075sage":false}}`,
		func(r *request) bool { return !r.includeUsage })
	f(epChat, `{"model":"m",`+msgs+`,"stream_options":{"include_usage":true},"stream_options":{}}`,
		func(r *request) bool { return !r.includeUsage })
	f(epChat, `{"model":"m",`+msgs+`,"stre\u0061m":true}`, func(r *request) bool { return r.stream })
	f(epChat, `{"model":"a","mod\u0065l":"b",`+msgs+`}`, func(r *request) bool { return string(r.model) == `"b"` })
	f(epChat, `{"model":"m",`+msgs+`,"max_tokens":5,"max_tokens":null}`, func(r *request) bool { return r.maxTokens == 0 })
	f(epChat, `{"model":"m",`+msgs+`,"n":3,"n":null}`, func(r *request) bool { return r.n == 1 })
	f(epCompletions, `{"model":"m","prompt":"x","prompt":["a","b","c"]}`, func(r *request) bool { return r.prompts == 3 })
	f(epCompletions, `{"model":"m","prompt":["a","b"],"n":2,"best_of":3}`, func(r *request) bool { return r.generated() == 6 })
	f(epEmbeddings, `{"model":"m","input":"x","encoding_format":"base64","encoding_format":"float"}`,
		func(r *request) bool { return !r.base64 })
	// A name too long to be a field the mock reads stays as written.
	f(epChat, `{"model":"m",`+msgs+`,"`+strings.Repeat(`\u0061`, 40)+`":1}`, func(r *request) bool { return r.n == 1 })
}

// TestBestOfBilled: legacy completions generate best_of completions per
// prompt and bill them all, returning n.
func TestBestOfBilled(t *testing.T) {
	ts := start(t, Options{})
	f := func(body string, wantStatus int, want string) {
		t.Helper()
		status, got := ts.do(t, "POST", "/v1/completions", body)
		if status != wantStatus || !strings.Contains(got, want) {
			t.Fatalf("%s: %d %s, want %d with %s", body, status, got, wantStatus, want)
		}
	}
	f(`{"model":"m","prompt":["a","b"],"max_tokens":2,"n":1,"best_of":3}`, 200, `"completion_tokens":12,`)
	f(`{"model":"m","prompt":["a","b"],"max_tokens":2,"n":1,"best_of":3}`, 200, `"index":1,`)
	f(`{"model":"m","prompt":"a","max_tokens":2,"n":3,"best_of":2}`, 400, `"param":"best_of"`)
	f(`{"model":"m","prompt":["a","b"],"best_of":65}`, 400, `"param":"n"`)
}

// TestOverReportTokens: the option makes usage claim more than was produced.
func TestOverReportTokens(t *testing.T) {
	ts := start(t, Options{OverReportTokens: 100})
	status, got := ts.do(t, "POST", "/v1/completions", `{"model":"m","prompt":"a","max_tokens":2}`)
	if status != 200 || !strings.Contains(got, `"completion_tokens":102,`) {
		t.Fatalf("%d %s", status, got)
	}
	status, got = ts.do(t, "POST", "/v1/completions", `{"model":"m","prompt":"a","max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}`)
	if status != 200 || !strings.Contains(got, `"completion_tokens":102,`) {
		t.Fatalf("%d %s", status, got)
	}
}

// TestCachedTokens: the option reports cached prompt tokens where OpenAI
// does, prompt_tokens_details.cached_tokens, on chat and (with the object
// vLLM adds) legacy completions, buffered and streamed; without it chat
// reports 0 and legacy completions no details.
func TestCachedTokens(t *testing.T) {
	const chat = `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2`
	const legacy = `{"model":"m","prompt":"a","max_tokens":2`
	const streamed = `,"stream":true,"stream_options":{"include_usage":true}}`
	f := func(o Options, path, body, want, wantNot string) {
		t.Helper()
		status, got := start(t, o).do(t, "POST", path, body)
		if status != 200 || !strings.Contains(got, want) || (wantNot != "" && strings.Contains(got, wantNot)) {
			t.Fatalf("%+v %s: %d %s; want it with %s", o, body, status, got, want)
		}
	}
	cached := Options{CachedTokens: 7}
	f(cached, "/v1/chat/completions", chat+"}", `"prompt_tokens_details":{"cached_tokens":7,"audio_tokens":0}`, "")
	f(cached, "/v1/chat/completions", chat+streamed, `"prompt_tokens_details":{"cached_tokens":7,"audio_tokens":0}`, "")
	f(cached, "/v1/completions", legacy+"}", `"prompt_tokens_details":{"cached_tokens":7,"audio_tokens":0}`, "")
	f(cached, "/v1/completions", legacy+streamed, `"prompt_tokens_details":{"cached_tokens":7,"audio_tokens":0}`, "")
	f(Options{}, "/v1/chat/completions", chat+"}", `"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0}`, "")
	f(Options{}, "/v1/completions", legacy+"}", `"usage":{"prompt_tokens":`, "prompt_tokens_details")
}
