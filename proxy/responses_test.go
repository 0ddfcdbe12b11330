package proxy

import (
	"context"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// responsesConfig serves the mock at a price whose bills are exact to the
// pico-dollar: $1.5 and $2.25 a million tokens, so 9 input tokens cost
// $0.0000135 and 40 output tokens $0.00009.
func responsesConfig(up string) string {
	return fmt.Sprintf(`
upstreams: [{name: up, base_url: %q}]
models:
  - {name: mock, routes: [{upstream: up}], price: {input_per_mtok: 1.5, output_per_mtok: 2.25}, max_output_tokens: 100000}
  - {name: alias, routes: [{upstream: up, model: upstream-name}]}
  - {name: other, routes: [{upstream: up}]}
  - {name: windowed, routes: [{upstream: up}], price: {input_per_mtok: 1.5, output_per_mtok: 2.25}, context_window_tokens: 200000}
  - {name: huge, routes: [{upstream: up}], price: {input_per_mtok: 1.5, output_per_mtok: 2.25}, context_window_tokens: 100000000}
plans:
  - {name: all, models: ["*"]}
  - {name: mockonly, models: ["mock", "alias"]}
  - {name: month, models: ["*"], monthly_usd: 0.01}
  - {name: request, models: ["*"], max_request_usd: 1}
  - {name: slow, models: ["*"], rpm: 1}
`, up)
}

// responsesInput is 35 bytes, which the mock counts as 9 input tokens.
const responsesInput = "Say something short about the mock."

func responsesParams(model string) responses.ResponseNewParams {
	return responses.ResponseNewParams{
		Model: model,
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(responsesInput)},
	}
}

// keyUsage is a key's month as the usage API shows it.
type keyUsage struct {
	Requests    int64  `json:"requests"`
	Prompt      int64  `json:"prompt_tokens"`
	Completion  int64  `json:"completion_tokens"`
	SpendUSD    string `json:"spend_usd"`
	ReservedUSD string `json:"reserved_usd"`
}

// usageNow reads the key's usage as the usage API shows it, spend as the
// exact decimal it writes.
func (g *gateway) usageNow(id string) keyUsage {
	g.t.Helper()
	st, _, b := g.do("GET", "/v1/keys/"+id+"/usage", g.adminKey, nil)
	if st != http.StatusOK {
		g.t.Fatalf("usage: %d %s", st, b)
	}
	var u keyUsage
	s := string(b)
	for _, f := range []struct {
		name string
		to   *string
	}{{"spend_usd", &u.SpendUSD}, {"reserved_usd", &u.ReservedUSD}} {
		m := regexp.MustCompile(`"` + f.name + `":([0-9.]+)`).FindStringSubmatch(s)
		if m == nil {
			g.t.Fatalf("usage without %s: %s", f.name, s)
		}
		*f.to = m[1]
	}
	fmt.Sscanf(regexp.MustCompile(`"requests":\d+`).FindString(s), `"requests":%d`, &u.Requests)
	fmt.Sscanf(regexp.MustCompile(`"prompt_tokens":\d+`).FindString(s), `"prompt_tokens":%d`, &u.Prompt)
	fmt.Sscanf(regexp.MustCompile(`"completion_tokens":\d+`).FindString(s), `"completion_tokens":%d`, &u.Completion)
	return u
}

// waitUsage waits until ok holds of the key's usage.
func (g *gateway) waitUsage(id string, what string, ok func(keyUsage) bool) keyUsage {
	g.t.Helper()
	var u keyUsage
	eventually.True(g.t, what, func() bool {
		u = g.usageNow(id)
		return ok(u)
	})
	return u
}

// TestResponsesCreate: the official SDK's Responses.New through the gateway
// gets the upstream's response, the model renamed per route, and the key is
// billed the response's usage exactly.
func TestResponsesCreate(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 40})
	g := startGateway(t, responsesConfig(up), "")
	k := g.newKey("all")
	c := g.client(k.Key)
	got, err := c.Responses.New(context.Background(), responsesParams("mock"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got.ID, "resp_") || got.Model != "mock" || got.Status != "completed" ||
		got.OutputText() != mock.Text(40) || got.Usage.InputTokens != 9 || got.Usage.OutputTokens != 40 {
		t.Fatalf("response: %s", got.RawJSON())
	}
	u := g.usageNow(k.ID)
	if u.Requests != 1 || u.Prompt != 9 || u.Completion != 40 || u.SpendUSD != "0.0001035" || u.ReservedUSD != "0" {
		t.Fatalf("billed %+v, want 9 + 40 tokens, $0.0001035", u)
	}
	// The route's name for the model reaches the upstream, which echoes it.
	renamed, err := c.Responses.New(context.Background(), responsesParams("alias"))
	if err != nil || renamed.Model != "upstream-name" {
		t.Fatalf("alias: %v %s", err, renamed.RawJSON())
	}
	// max_output_tokens bounds the answer, which is incomplete.
	p := responsesParams("mock")
	p.MaxOutputTokens = openai.Int(16)
	short, err := c.Responses.New(context.Background(), p)
	if err != nil || short.Status != "incomplete" || short.Usage.OutputTokens != 16 {
		t.Fatalf("max_output_tokens 16: %v %s", err, short.RawJSON())
	}
}

// TestResponsesCachedInputPrice: a Responses answer whose usage reports
// input_tokens_details.cached_tokens bills those at the model's
// cached_input_per_mtok and the rest of the input at input_per_mtok, to the
// pico-dollar, buffered and streamed. The mock reports a 1,500-token input as
// 1,408 cached: 1,408 × $0.25 + 92 × $1.5 + 40 × $2.25 a million tokens is
// $0.00058.
func TestResponsesCachedInputPrice(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 40})
	g := startGateway(t, fmt.Sprintf(`
upstreams: [{name: up, base_url: %q}]
models:
  - {name: mock, routes: [{upstream: up}], price: {input_per_mtok: 1.5, cached_input_per_mtok: 0.25, output_per_mtok: 2.25}}
plans:
  - {name: all, models: ["*"]}
`, up), "")
	input := strings.Repeat("abcd", 1500)
	params := responses.ResponseNewParams{Model: "mock", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(input)}}
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			k := g.newKey("all")
			c := g.client(k.Key)
			if stream {
				s := c.Responses.NewStreaming(context.Background(), params)
				for s.Next() {
				}
				if err := s.Err(); err != nil {
					t.Fatal(err)
				}
			} else {
				r, err := c.Responses.New(context.Background(), params)
				if err != nil {
					t.Fatal(err)
				}
				if r.Usage.InputTokens != 1500 || r.Usage.InputTokensDetails.CachedTokens != 1408 || r.Usage.OutputTokens != 40 {
					t.Fatalf("usage %s", r.Usage.RawJSON())
				}
			}
			u := g.waitUsage(k.ID, "the response billed", func(u keyUsage) bool { return u.Requests == 1 && u.ReservedUSD == "0" })
			if u.Prompt != 1500 || u.Completion != 40 || u.SpendUSD != "0.00058" {
				t.Fatalf("billed %+v, want 1,500 (1,408 cached) + 40 tokens, $0.00058", u)
			}
			_, _, body := g.do("GET", "/v1/keys/"+k.ID+"/usage", g.adminKey, nil)
			if !strings.Contains(string(body), `"cached_tokens":1408`) {
				t.Fatalf("the usage API does not show the cached tokens: %s", body)
			}
		})
	}
}

// responsesVolatile are the parts of a response that differ between two
// answers of the mock: ids and times.
var responsesVolatile = regexp.MustCompile(`"(id|item_id)":"[^"]*"|"created_at":\d+`)

// rawResponses posts body to url's /v1/responses and returns the whole
// answer as the client got it.
func rawResponses(t *testing.T, url, key, body string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/responses", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	return string(b)
}

// TestResponsesStream: a streamed response reaches the client byte for
// byte as the upstream sent it (typed events, no [DONE], nothing added),
// the SDK reads it to response.completed, and the key is billed the final
// event's usage to the pico-dollar.
func TestResponsesStream(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 40})
	g := startGateway(t, responsesConfig(up), "")
	k := g.newKey("all")

	body := `{"model":"mock","stream":true,"input":"` + responsesInput + `"}`
	via := responsesVolatile.ReplaceAllString(rawResponses(t, g.url, k.Key, body), "")
	direct := responsesVolatile.ReplaceAllString(rawResponses(t, strings.TrimSuffix(up, "/v1"), "x", body), "")
	if via != direct {
		t.Fatalf("client stream differs from the upstream's:\nvia    %q\ndirect %q", via, direct)
	}
	if !strings.HasPrefix(via, "event: response.created\ndata: ") || strings.Contains(via, "[DONE]") {
		t.Fatalf("stream: %q", via)
	}
	g.waitUsage(k.ID, "the raw stream's bill", func(u keyUsage) bool { return u.Requests == 1 })

	s := g.client(k.Key).Responses.NewStreaming(context.Background(), responsesParams("mock"))
	var text strings.Builder
	var last responses.ResponseStreamEventUnion
	for s.Next() {
		ev := s.Current()
		if ev.Type == "response.output_text.delta" {
			text.WriteString(ev.Delta)
		}
		last = ev
	}
	if err := s.Err(); err != nil || last.Type != "response.completed" || text.String() != mock.Text(40) {
		t.Fatalf("SDK stream: %v, last %s, text %q", err, last.Type, text.String())
	}
	// Billed before the client could see the end: no wait needed.
	u := g.usageNow(k.ID)
	if u.Requests != 2 || u.Prompt != 18 || u.Completion != 80 || u.SpendUSD != "0.000207" || u.ReservedUSD != "0" {
		t.Fatalf("billed %+v, want two streams of 9 + 40 tokens, $0.000207", u)
	}
}

// TestResponsesStreamDisconnectDrains: a client that leaves a stream after
// three events is billed what the upstream's final event reports (the
// gateway reads the stream to its end), to the pico-dollar.
func TestResponsesStreamDisconnectDrains(t *testing.T) {
	m, up := startMock(t, mock.Options{Chunks: 40, ChunkInterval: 5 * time.Millisecond})
	g := startGateway(t, responsesConfig(up), "")
	k := g.newKey("all")
	// The client leaves mid-stream, after the first deltas.
	g.leaveStream("/v1/responses", "Authorization", "Bearer "+k.Key,
		`{"model":"mock","stream":true,"input":"`+responsesInput+`"}`, "data: ", 6)
	u := g.waitUsage(k.ID, "the drained stream's bill", func(u keyUsage) bool { return u.Requests == 1 })
	if u.Prompt != 9 || u.Completion != 40 || u.SpendUSD != "0.0001035" || u.ReservedUSD != "0" {
		t.Fatalf("billed %+v after the client left; want the upstream's 9 + 40 tokens, $0.0001035", u)
	}
	if m.Requests() != 1 {
		t.Fatalf("upstream served %d requests", m.Requests())
	}
}

// TestResponsesBudgetCutsTheStream: an open-ended streamed response under a
// $0.01 month is cut when the next delta would pass the cap, with the
// Responses API's error event (typed "error", numbered next), and what was
// relayed is billed, within a delta of the cap and never over it.
func TestResponsesBudgetCutsTheStream(t *testing.T) {
	m, up := startMock(t, mock.Options{Chunks: 20000})
	g := startGateway(t, fmt.Sprintf(`
upstreams: [{name: up, base_url: %q}]
models:
  - {name: mock, routes: [{upstream: up}], price: {input_per_mtok: 1, output_per_mtok: 2}, max_output_tokens: 100000}
plans:
  - {name: month, models: ["*"], monthly_usd: 0.01}
`, up), "")
	k := g.newKey("month")
	s := g.client(k.Key).Responses.NewStreaming(context.Background(), responsesParams("mock"))
	deltas := 0
	var last responses.ResponseStreamEventUnion
	for s.Next() {
		last = s.Current()
		if last.Type == "response.output_text.delta" {
			deltas++
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("after %d deltas: %v", deltas, err)
	}
	e := last.AsError()
	if last.Type != "error" || e.Code != "budget_exceeded" || !strings.Contains(e.Message, "monthly budget") ||
		e.SequenceNumber != int64(4+deltas) {
		t.Fatalf("after %d deltas the stream ended with %s", deltas, last.RawJSON())
	}
	// A $0.01 budget buys about 4990 tokens; with no usage from the cut
	// stream they are estimated at four bytes a token (the mock's words are
	// 5-6 bytes), so fewer deltas than that fit.
	if deltas < 2500 || deltas >= 5000 {
		t.Fatalf("relayed %d deltas; want the ~3000 a $0.01 budget buys", deltas)
	}
	u := g.waitUsage(k.ID, "the cut stream's bill", func(u keyUsage) bool { return u.Completion > 0 })
	spent, _ := new(big.Rat).SetString(u.SpendUSD)
	if spent == nil || spent.Cmp(big.NewRat(1, 100)) > 0 || spent.Cmp(big.NewRat(999, 100000)) < 0 ||
		u.ReservedUSD != "0" || u.Completion < int64(deltas) {
		t.Fatalf("billed %+v for %d deltas; want within one of the $0.01 cap", u, deltas)
	}
	st, _, body := g.do("POST", "/v1/responses", k.Key, []byte(`{"model":"mock","input":"more"}`))
	if st != http.StatusPaymentRequired || !strings.Contains(string(body), "budget_exceeded") {
		t.Fatalf("after the cap: %d %s", st, body)
	}
	if m.Requests() != 1 {
		t.Fatalf("upstream saw %d requests, want only the first", m.Requests())
	}
}

// TestResponsesErrors: every refusal on /v1/responses is OpenAI-shaped, with
// the status, type and code the SDK classifies, and reaches no upstream.
func TestResponsesErrors(t *testing.T) {
	m, up := startMock(t, mock.Options{})
	g := startGateway(t, responsesConfig(up), "")
	all, only, slow := g.newKey("all").Key, g.newKey("mockonly").Key, g.newKey("slow").Key
	if _, err := g.client(slow).Responses.New(context.Background(), responsesParams("mock")); err != nil {
		t.Fatal(err) // the minute's one request
	}
	sdk := func(name, key, model string, status int, typ, code string) {
		t.Run(name, func(t *testing.T) {
			_, err := g.client(key).Responses.New(context.Background(), responsesParams(model))
			wantAPIError(t, err, status, typ, code)
		})
	}
	sdk("unknown key", "sk-not-a-real-key", "mock", 401, "invalid_request_error", "invalid_api_key")
	sdk("model outside plan", only, "other", 403, "invalid_request_error", "model_not_allowed")
	sdk("unknown model", all, "no-such-model", 404, "invalid_request_error", "model_not_found")
	sdk("rate limit", slow, "mock", 429, "requests", "rate_limit_exceeded")

	raw := func(name, body string, status int, code, param string) {
		t.Run(name, func(t *testing.T) {
			st, hdr, b := g.do("POST", "/v1/responses", all, []byte(body))
			wantErrorBody(t, st, hdr, b, status, code)
			if param != "" && !strings.Contains(string(b), `"param":"`+param+`"`) {
				t.Fatalf("param is not %s: %s", param, b)
			}
		})
	}
	raw("malformed JSON", `{"model":"mock",`, 400, "invalid_json", "")
	raw("missing model", `{"input":"x"}`, 400, "missing_required_parameter", "model")
	// Upstreams take the last of repeated keys: the gateway would have
	// read the first.
	raw("duplicate model", `{"model":"mock","input":"x","model":"other"}`, 400, "duplicate_key", "")
	raw("duplicate max_output_tokens", `{"model":"mock","input":"x","max_output_tokens":16,"max_output_tokens":100000000}`, 400, "duplicate_key", "")
	raw("escaped duplicate", `{"model":"mock","input":"x","max_output_tokens":16,"max_output_toke\u006es":100000000}`, 400, "duplicate_key", "")
	raw("case-folded key", `{"model":"mock","input":"x","Max_Output_Tokens":100000000}`, 400, "ambiguous_key", "")
	raw("max_output_tokens not positive", `{"model":"mock","input":"x","max_output_tokens":0}`, 400, "invalid_value", "max_output_tokens")
	raw("max_output_tokens over the model's", `{"model":"mock","input":"x","max_output_tokens":100001}`, 400, "invalid_value", "max_output_tokens")
	raw("previous_response_id not a string", `{"model":"mock","input":"x","previous_response_id":1}`, 400, "invalid_type", "previous_response_id")
	raw("background", `{"model":"mock","input":"x","background":true}`, 400, "unsupported_parameter", "background")
	if n := m.Requests(); n != 1 {
		t.Fatalf("upstream saw %d requests, want only the first", n)
	}
}

// TestResponsesChainedPromptIsUnbounded: previous_response_id (or a
// conversation, a stored prompt, an input item_reference) makes the upstream
// add to the input what the body does not bound, so admission bounds the prompt by the model's context
// window or, without one, at MaxBoundTokens: a capped key is refused 402
// rather than billed past its cap, an uncapped key is served, the same body
// without the chain passes the cap, and so does the chain on a model whose
// context window the cap covers (200,000 tokens at $1.5 a million: $0.30 of
// a $1 cap), not on one whose window it does not ($150).
func TestResponsesChainedPromptIsUnbounded(t *testing.T) {
	m, up := startMock(t, mock.Options{Chunks: 4})
	g := startGateway(t, responsesConfig(up), "")
	capped, month, free := g.newKey("request").Key, g.newKey("month").Key, g.newKey("all").Key
	f := func(name, key, body string, want int) {
		t.Run(name, func(t *testing.T) {
			st, hdr, b := g.do("POST", "/v1/responses", key, []byte(body))
			if want != http.StatusOK {
				wantErrorBody(t, st, hdr, b, want, "budget_exceeded")
				return
			}
			if st != want {
				t.Fatalf("status %d: %s", st, b)
			}
		})
	}
	const plain = `{"model":"mock","input":"x","max_output_tokens":16}`
	// Each key continues a response of its own: another key's would be
	// 404 before admission (TestResponsesPreviousOfAnotherKey).
	previous := func(key string) string {
		st, _, b := g.do("POST", "/v1/responses", key, []byte(plain))
		return responseID(t, st, b)
	}
	next := func(model, id string) string {
		return `{"model":"` + model + `","input":"x","max_output_tokens":16,"previous_response_id":"` + id + `"}`
	}
	cappedID, monthID, freeID := previous(capped), previous(month), previous(free)
	f("per-request cap, no chain", capped, plain, http.StatusOK)
	f("per-request cap, previous_response_id", capped, next("mock", cappedID), http.StatusPaymentRequired)
	f("per-request cap, conversation", capped, `{"model":"mock","input":"x","max_output_tokens":16,"conversation":{"id":"conv_1"}}`, http.StatusPaymentRequired)
	f("per-request cap, stored prompt", capped, `{"model":"mock","input":"x","max_output_tokens":16,"prompt":{"id":"pmpt_1"}}`, http.StatusPaymentRequired)
	f("per-request cap, item reference", capped, `{"model":"mock","input":[{"type":"item_reference","id":"msg_1"}],"max_output_tokens":16}`, http.StatusPaymentRequired)
	f("per-request cap, escaped item reference", capped, `{"model":"mock","input":[{"type":"item_r\u0065ference","id":"msg_1"}],"max_output_tokens":16}`, http.StatusPaymentRequired)
	f("monthly cap, previous_response_id", month, next("mock", monthID), http.StatusPaymentRequired)
	f("no cap, previous_response_id", free, next("mock", freeID), http.StatusOK)
	f("per-request cap, previous_response_id null", capped, `{"model":"mock","input":"x","max_output_tokens":16,"previous_response_id":null}`, http.StatusOK)
	f("per-request cap, context window it covers", capped, next("windowed", cappedID), http.StatusOK)
	f("monthly cap below the context window's cost", month, next("windowed", monthID), http.StatusPaymentRequired)
	f("per-request cap, context window it does not cover", capped, next("huge", cappedID), http.StatusPaymentRequired)
	if n := m.Requests(); n != 3+4 {
		t.Fatalf("upstream saw %d requests, want the 3 that made the responses and the 4 admitted", n)
	}
}

// TestResponsesUpstreamFailures: an upstream that answers 5xx is a 502 in
// OpenAI's shape; one that dies mid-stream ends the client's stream with
// the Responses error event (upstream_error), and the deltas relayed are
// billed as an estimate.
func TestResponsesUpstreamFailures(t *testing.T) {
	_, cut := startMock(t, mock.Options{Chunks: 30, FailAfterChunks: 5})
	_, failing := startMock(t, mock.Options{Status: 500})
	g := startGateway(t, fmt.Sprintf(`
upstreams: [{name: cut, base_url: %q}, {name: failing, base_url: %q}]
models:
  - {name: cut, routes: [{upstream: cut}]}
  - {name: failing, routes: [{upstream: failing}]}
plans: [{name: all, models: ["*"]}]
`, cut, failing), "")
	k := g.newKey("all")
	_, err := g.client(k.Key).Responses.New(context.Background(), responsesParams("failing"))
	wantAPIError(t, err, 502, "server_error", "upstream_error")

	got := rawResponses(t, g.url, k.Key, `{"model":"cut","stream":true,"input":"go"}`)
	// Four events open the stream, then the five deltas: the error is the tenth, numbered 9.
	want := "event: error\ndata: {\"type\":\"error\",\"code\":\"upstream_error\"," +
		"\"message\":\"The upstream stream ended abnormally for the model: cut\",\"param\":null,\"sequence_number\":9}\n\n"
	if !strings.HasSuffix(got, want) || strings.Count(got, "response.output_text.delta\n") != 5 {
		t.Fatalf("stream does not end with the error event after 5 deltas:\n%s", got)
	}
	u := g.waitUsage(k.ID, "the cut stream's bill", func(u keyUsage) bool { return u.Requests == 2 })
	// No usage came, so the five words relayed (4-6 bytes each) are
	// billed at four bytes a token.
	if u.Completion < 5 || u.Completion > 9 {
		t.Fatalf("billed %+v; want an estimate of the 5 words produced", u)
	}
}

// TestResponsesLongEventsPass: the Responses API echoes the request's
// instructions (and tools) in response.created and the final event, and
// repeats the whole output in the done events, so a legitimate event can be
// far over the 1 MiB that bounds a chat event. A 2 MB system prompt and the
// mock's longest answer (65,536 words) stream through whole and are billed
// the upstream's usage.
func TestResponsesLongEventsPass(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 65536})
	g := startGateway(t, fmt.Sprintf(`
upstreams: [{name: up, base_url: %q}]
models:
  - {name: mock, routes: [{upstream: up}], max_output_tokens: 300000}
plans: [{name: all, models: ["*"]}]
`, up), "")
	k := g.newKey("all")
	instructions := strings.Repeat("Be terse. ", 200000) // 2 MB: 500,000 tokens to the mock
	body := `{"model":"mock","stream":true,"input":"go","instructions":"` + instructions + `"}`
	got := rawResponses(t, g.url, k.Key, body)
	if !strings.Contains(got, "event: response.completed\n") || strings.Contains(got, "event: error\n") {
		t.Fatalf("stream of %d bytes did not complete: ends %q", len(got), got[max(0, len(got)-300):])
	}
	u := g.waitUsage(k.ID, "the long stream's bill", func(u keyUsage) bool { return u.Requests == 1 })
	if u.Prompt != 500001 || u.Completion != 65536 {
		t.Fatalf("billed %+v, want the upstream's 500,001 + 65,536 tokens", u)
	}
}
