package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// fieldErrorsConfig serves mock with a max_output_tokens of 1000.
func fieldErrorsConfig(t *testing.T, upstreamURL string) string {
	return fmt.Sprintf(`
upstreams:
  - {name: up, base_url: %q}
models:
  - {name: mock, max_output_tokens: 1000, routes: [{upstream: up}]}
plans:
  - {name: all, models: ["*"]}
`, upstreamURL)
}

// TestFieldErrorMessages: every refusal of a field reads as one sentence in
// OpenAI's words, names the field the client sent once, and sets param to
// it; what the client sent is quoted only when it is a short integer.
func TestFieldErrorMessages(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, fieldErrorsConfig(t, up), "")
	key := g.newKey("all").Key
	f := func(path, body string, status int, typ, code, param, message string) {
		t.Helper()
		st, hdr, b := g.do("POST", path, key, []byte(body))
		wantErrorBody(t, st, hdr, b, status, code)
		var e struct {
			Error struct {
				Message, Type string
				Param         *string
			}
		}
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		gotParam := "<null>"
		if e.Error.Param != nil {
			gotParam = *e.Error.Param
		}
		if e.Error.Message != message || e.Error.Type != typ || gotParam != param {
			t.Fatalf("POST %s %s:\n got type %q param %q message %q\nwant type %q param %q message %q",
				path, body, e.Error.Type, gotParam, e.Error.Message, typ, param, message)
		}
	}
	const chat, legacy, embed = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
	const inv = "invalid_request_error"

	// max_tokens and max_completion_tokens: chat takes at least 1, the legacy
	// completions 0 (scoring with echo), and param is what the client sent.
	f(chat, `{"model":"mock","max_tokens":0}`, 400, inv, "invalid_value", "max_tokens",
		"Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead.")
	f(chat, `{"model":"mock","max_completion_tokens":0}`, 400, inv, "invalid_value", "max_completion_tokens",
		"Invalid 'max_completion_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead.")
	f(chat, `{"model":"mock","max_completion_tokens":-3}`, 400, inv, "invalid_value", "max_completion_tokens",
		"Invalid 'max_completion_tokens': integer below minimum value. Expected a value >= 1, but got -3 instead.")
	f(chat, `{"model":"mock","max_completion_tokens":5,"max_tokens":-1}`, 400, inv, "invalid_value", "max_tokens",
		"Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got -1 instead.")
	f(legacy, `{"model":"mock","prompt":"hi","max_tokens":-1}`, 400, inv, "invalid_value", "max_tokens",
		"Invalid 'max_tokens': integer below minimum value. Expected a value >= 0, but got -1 instead.")
	f(chat, `{"model":"mock","max_completion_tokens":1001}`, 400, inv, "invalid_value", "max_completion_tokens",
		"Invalid 'max_completion_tokens': integer above maximum value. Expected a value <= 1000 (the model's max_output_tokens), but got 1001 instead.")
	f(legacy, `{"model":"mock","prompt":"hi","max_tokens":1001}`, 400, inv, "invalid_value", "max_tokens",
		"Invalid 'max_tokens': integer above maximum value. Expected a value <= 1000 (the model's max_output_tokens), but got 1001 instead.")
	f(chat, `{"model":"mock","max_tokens":99999999999999999999}`, 400, inv, "invalid_value", "max_tokens",
		"Invalid 'max_tokens': integer above maximum value. Expected a value <= 999999999999999, but got 99999999999999999999 instead.")
	f(chat, `{"model":"mock","max_tokens":-`+strings.Repeat("9", 60)+`}`, 400, inv, "invalid_value", "max_tokens",
		"Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got an integer of 60 digits instead.")
	f(chat, `{"model":"mock","max_tokens":"10"}`, 400, inv, "invalid_value", "max_tokens",
		"Invalid type for 'max_tokens': expected an integer, but got a string instead.")
	f(chat, `{"model":"mock","max_tokens":"<script>"}`, 400, inv, "invalid_value", "max_tokens",
		"Invalid type for 'max_tokens': expected an integer, but got a string instead.")
	f(chat, `{"model":"mock","max_tokens":1.5}`, 400, inv, "invalid_value", "max_tokens",
		"Invalid type for 'max_tokens': expected an integer, but got a decimal number instead.")
	f(chat, `{"model":"mock","max_completion_tokens":1e3}`, 400, inv, "invalid_value", "max_completion_tokens",
		"Invalid type for 'max_completion_tokens': expected an integer, but got a decimal number instead.")
	f(embed, `{"model":"mock","input":"hi","max_tokens":[1]}`, 400, inv, "invalid_value", "max_tokens",
		"Invalid type for 'max_tokens': expected an integer, but got an array instead.")

	// n and best_of: 1 to 128.
	f(chat, `{"model":"mock","n":0}`, 400, inv, "invalid_value", "n",
		"Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.")
	f(chat, `{"model":"mock","n":129}`, 400, inv, "invalid_value", "n",
		"Invalid 'n': integer above maximum value. Expected a value <= 128, but got 129 instead.")
	f(chat, `{"model":"mock","n":true}`, 400, inv, "invalid_value", "n",
		"Invalid type for 'n': expected an integer, but got a boolean instead.")
	f(legacy, `{"model":"mock","prompt":"hi","best_of":0}`, 400, inv, "invalid_value", "best_of",
		"Invalid 'best_of': integer below minimum value. Expected a value >= 1, but got 0 instead.")
	f(legacy, `{"model":"mock","prompt":"hi","best_of":{"a":1}}`, 400, inv, "invalid_value", "best_of",
		"Invalid type for 'best_of': expected an integer, but got an object instead.")

	// model and stream.
	f(chat, `{"messages":[]}`, 400, inv, "missing_required_parameter", "model",
		"You must provide a model parameter.")
	f(chat, `{"model":42}`, 400, inv, "invalid_type", "model",
		"Invalid type for 'model': expected a string, but got an integer instead.")
	f(chat, `{"model":null}`, 400, inv, "invalid_type", "model",
		"Invalid type for 'model': expected a string, but got null instead.")
	f(chat, `{"model":""}`, 400, inv, "invalid_type", "model",
		"Invalid 'model': expected a non-empty string of valid UTF-8.")
	f(chat, `{"model":"mock","stream":"yes"}`, 400, inv, "invalid_type", "stream",
		"Invalid type for 'stream': expected a boolean, but got a string instead.")
	f(chat, `{"model":"mock","stream":1}`, 400, inv, "invalid_type", "stream",
		"Invalid type for 'stream': expected a boolean, but got an integer instead.")

	// Repeated and ambiguous keys: param is the key, named once.
	f(chat, `{"model":"mock","model":"other"}`, 400, inv, "duplicate_key", "model",
		"Invalid body: the key 'model' appears more than once. Upstreams read the last and the gateway would check another, so send it once.")
	f(chat, `{"model":"mock","stream":true,"stream_options":{"include_usage":true,"include_\u0075sage":false}}`, 400, inv, "duplicate_key", "stream_options.include_usage",
		"Invalid body: the key 'stream_options.include_usage' appears more than once. Upstreams read the last and the gateway would check another, so send it once.")
	f(chat, `{"model":"mock","Max_Tokens":5}`, 400, inv, "ambiguous_key", "max_tokens",
		"Invalid body: a key is a case or Unicode variant of 'max_tokens', which Go's encoding/json reads as that key and other JSON parsers do not; spell it exactly.")

	// Not a field of the body: unchanged.
	f(chat, `{"model":"mock",`, 400, inv, "invalid_json", "<null>",
		"We could not parse the JSON body of your request: it is not valid JSON.")
}

// TestCompletionsMaxTokensZero: the legacy completions endpoint takes
// max_tokens 0 (the spec's minimum: echo with logprobs scores a prompt
// without generating), forwards it as sent, and bills what the upstream
// reports; admission's worst case still bounds it (with echo, the prompt is
// output too).
func TestCompletionsMaxTokensZero(t *testing.T) {
	var got []byte
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		got = append(got[:0], ctx.PostBody()...)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"id":"cmpl-1","object":"text_completion","created":1,"model":"mock",` +
			`"choices":[{"index":0,"text":"hi","finish_reason":"length","logprobs":null}],` +
			`"usage":{"prompt_tokens":1,"completion_tokens":0,"total_tokens":1}}`)
	})
	g := startGateway(t, fieldErrorsConfig(t, up), "")
	key := g.newKey("all").Key
	for _, body := range []string{
		`{"model":"mock","prompt":"hi","max_tokens":0,"echo":true,"logprobs":0}`,
		`{"model":"mock","prompt":"hi","max_tokens":0}`,
	} {
		st, _, b := g.do("POST", "/v1/completions", key, []byte(body))
		if st != http.StatusOK {
			t.Fatalf("POST /v1/completions %s: %d %s", body, st, b)
		}
		if string(got) != body {
			t.Fatalf("upstream got %s, want the body as sent %s", got, body)
		}
	}
}

// TestCompletionsMaxTokensZeroIsBounded: max_tokens 0 with echo still
// costs output (the prompt, returned with each completion), so the
// per-request cap weighs it: the same scoring body passes without echo and
// is refused with it, before the upstream sees it.
func TestCompletionsMaxTokensZeroIsBounded(t *testing.T) {
	m, up := startMock(t, mock.Options{})
	g := startGateway(t, boundsConfig(up), "")
	key := g.newKey("reqcap").Key
	prompt := strings.Repeat("score these words ", 8)
	// Prompt bound: (body bytes + 64) tokens at $1/M, about $0.0003; with
	// echo the same again as output at $2/M: past the $0.0005 cap.
	scoring := `{"model":"mock","prompt":"` + prompt + `","max_tokens":0,"logprobs":0`
	before := m.Requests()
	st, hdr, b := g.do("POST", "/v1/completions", key, []byte(scoring+`,"echo":true}`))
	wantErrorBody(t, st, hdr, b, http.StatusPaymentRequired, "budget_exceeded")
	if m.Requests() != before {
		t.Fatal("refused, yet the upstream got it")
	}
	// Admitted (the mock then refuses max_tokens 0 itself, which
	// TestCompletionsMaxTokensZero's upstream does not): the gateway let it through.
	g.do("POST", "/v1/completions", key, []byte(scoring+`}`))
	if m.Requests() != before+1 {
		t.Fatal("max_tokens 0 without echo was not forwarded")
	}
}
