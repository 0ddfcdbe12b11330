package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/tokenhub/tokenhub/internal/mock"
)

func compactParams(model string) responses.ResponseCompactParams {
	return responses.ResponseCompactParams{
		Model: responses.ResponseCompactParamsModel(model),
		Input: responses.ResponseCompactParamsInputUnion{OfString: openai.String(responsesInput)},
	}
}

// TestResponsesCompact: the official SDK's Responses.Compact through the
// gateway gets the upstream's compaction, and the key is billed its usage
// exactly: 9 input tokens and the mock's 16 of compaction, $0.0000495 at
// responsesConfig's prices. A compaction has no follow-ups: its id is not
// remembered.
func TestResponsesCompact(t *testing.T) {
	m, up := startMock(t, mock.Options{Chunks: 40})
	g := startGateway(t, responsesConfig(up), "")
	k := g.newKey("all")
	c := g.client(k.Key)
	got, err := c.Responses.Compact(context.Background(), compactParams("mock"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Object != "response.compaction" || len(got.Output) != 2 || got.Output[1].Type != "compaction" ||
		got.Usage.InputTokens != 9 || got.Usage.OutputTokens != 16 {
		t.Fatalf("compaction: %s", got.RawJSON())
	}
	u := g.usageNow(k.ID)
	if u.Requests != 1 || u.Prompt != 9 || u.Completion != 16 || u.SpendUSD != "0.0000495" || u.ReservedUSD != "0" {
		t.Fatalf("billed %+v, want 9 + 16 tokens, $0.0000495", u)
	}
	before := m.Requests()
	_, err = c.Responses.Get(context.Background(), got.ID, responses.ResponseGetParams{})
	wantAPIError(t, err, http.StatusNotFound, "invalid_request_error", "not_found")
	if m.Requests() != before {
		t.Fatal("a follow-up on a compaction's id reached the upstream")
	}
	_, _, metrics := g.do("GET", "/metrics", "", nil)
	if !strings.Contains(string(metrics), `endpoint="responses_compact"`) {
		t.Fatal("/metrics counts no responses_compact request")
	}
}

// TestResponsesCompactRefusals: the fields of a create a compaction does
// not take, and that would change what the gateway reads, are refused
// before the upstream (stream would be relayed as a stream, and
// max_output_tokens would bound admission's output where no upstream
// applies it); a compaction of a previous response is bounded by the
// model's context window, as a create continuing one is; the model's
// whitelist holds.
func TestResponsesCompactRefusals(t *testing.T) {
	m, up := startMock(t, mock.Options{Chunks: 4})
	g := startGateway(t, responsesConfig(up), "")
	all, capped, mockOnly := g.newKey("all").Key, g.newKey("request").Key, g.newKey("mockonly").Key
	f := func(name, key, body string, want int, code string) {
		t.Helper()
		st, hdr, b := g.do("POST", "/v1/responses/compact", key, []byte(body))
		if want == http.StatusOK {
			if st != want {
				t.Fatalf("%s: %d %s", name, st, b)
			}
			return
		}
		wantErrorBody(t, st, hdr, b, want, code)
	}
	before := m.Requests()
	f("stream", all, `{"model":"mock","input":"x","stream":true}`, http.StatusBadRequest, "unknown_parameter")
	f("max_output_tokens", all, `{"model":"mock","input":"x","max_output_tokens":16}`, http.StatusBadRequest, "unknown_parameter")
	f("background", all, `{"model":"mock","input":"x","background":true}`, http.StatusBadRequest, "unsupported_parameter")
	f("model not in the plan", mockOnly, `{"model":"other","input":"x"}`, http.StatusForbidden, "model_not_allowed")
	f("duplicate model", all, `{"model":"mock","model":"other","input":"x"}`, http.StatusBadRequest, "duplicate_key")
	if m.Requests() != before {
		t.Fatalf("the upstream got %d refused compactions", m.Requests()-before)
	}
	// Chained: the upstream compacts what the body does not hold.
	st, _, b := g.do("POST", "/v1/responses", capped, []byte(`{"model":"mock","input":"x","max_output_tokens":16}`))
	id := responseID(t, st, b)
	f("per-request cap, no chain", capped, `{"model":"mock","input":"x"}`, http.StatusOK, "")
	f("per-request cap, previous_response_id", capped, `{"model":"mock","previous_response_id":"`+id+`"}`, http.StatusPaymentRequired, "budget_exceeded")
	f("per-request cap, context window it covers", capped, `{"model":"windowed","previous_response_id":"`+id+`"}`, http.StatusOK, "")
}

// TestResponsesCompactPinnedAndFailedOver: a compaction of a previous
// response goes to the upstream holding it, every time, though the routes
// are weighted to the other; one of input alone fails over from an
// upstream answering 500 to the next route.
func TestResponsesCompactPinnedAndFailedOver(t *testing.T) {
	holder, upA := startMock(t, mock.Options{Chunks: 4})
	elsewhere, upB := startMock(t, mock.Options{Chunks: 4})
	failing, upFailing := startMock(t, mock.Options{Status: http.StatusInternalServerError})
	g := startGateway(t, fmt.Sprintf(`
upstreams: [{name: a, base_url: %q}, {name: b, base_url: %q}, {name: failing, base_url: %q}]
models:
  - {name: first, routes: [{upstream: a}]}
  - {name: both, routes: [{upstream: a, weight: 1}, {upstream: b, weight: 1000}]}
  - {name: failing-first, routes: [{upstream: failing, weight: 1000}, {upstream: b, weight: 1}]}
plans: [{name: all, models: ["*"]}]
`, upA, upB, upFailing), "")
	c := g.client(g.newKey("all").Key)
	ctx := context.Background()
	first, err := c.Responses.New(ctx, responsesParams("first"))
	if err != nil {
		t.Fatal(err)
	}
	p := compactParams("both")
	p.PreviousResponseID = openai.String(first.ID)
	heldBefore, elsewhereBefore := holder.Requests(), elsewhere.Requests()
	for range 5 {
		got, err := c.Responses.Compact(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		// The mock adds the compacted response's tokens to the input.
		if want := 9 + first.Usage.InputTokens + first.Usage.OutputTokens; got.Usage.InputTokens != want {
			t.Fatalf("compaction of %s: %d input tokens, want %d", first.ID, got.Usage.InputTokens, want)
		}
	}
	if h, e := holder.Requests()-heldBefore, elsewhere.Requests()-elsewhereBefore; h != 5 || e != 0 {
		t.Fatalf("holder saw %d, the other upstream %d; want 5 and 0", h, e)
	}
	for failing.Requests() == 0 {
		if _, err := c.Responses.Compact(ctx, compactParams("failing-first"), option.WithMaxRetries(0)); err != nil {
			t.Fatalf("failover: %v", err)
		}
	}
}

// responseID is the id of a Responses create answered st and b.
func responseID(t *testing.T, st int, b []byte) string {
	t.Helper()
	var r struct{ ID string }
	if err := json.Unmarshal(b, &r); st != http.StatusOK || err != nil || r.ID == "" {
		t.Fatalf("create: %d %s", st, b)
	}
	return r.ID
}

// TestResponsesCompactAttacked: a compaction's body read as every parser
// reads it: escaped spellings of stream and max_output_tokens are refused
// as the plain ones are, a repeated previous_response_id is refused (the
// upstream would compact the last), and another key's response is 404
// before anything is sent.
func TestResponsesCompactAttacked(t *testing.T) {
	m, up := startMock(t, mock.Options{Chunks: 4})
	g := startGateway(t, responsesConfig(up), "")
	owner, other := g.newKey("all").Key, g.newKey("all").Key
	st, _, b := g.do("POST", "/v1/responses", owner, []byte(`{"model":"mock","input":"x"}`))
	id := responseID(t, st, b)
	before := m.Requests()
	for _, tc := range []struct {
		name, key, body string
		status          int
		code            string
	}{
		{"escaped stream", owner, `{"model":"mock","input":"x","str\u0065am":true}`, http.StatusBadRequest, "unknown_parameter"},
		{"escaped max_output_tokens", owner, `{"model":"mock","input":"x","max_output_t\u006fkens":16}`, http.StatusBadRequest, "unknown_parameter"},
		{"repeated previous_response_id", owner, `{"model":"mock","previous_response_id":"` + id + `","previous_response_id":"resp_other"}`,
			http.StatusBadRequest, "duplicate_key"},
		{"another key's response", other, `{"model":"mock","previous_response_id":"` + id + `"}`, http.StatusNotFound, "previous_response_not_found"},
	} {
		st, hdr, b := g.do("POST", "/v1/responses/compact", tc.key, []byte(tc.body))
		wantErrorBody(t, st, hdr, b, tc.status, tc.code)
	}
	if m.Requests() != before {
		t.Fatalf("the upstream got %d refused compactions", m.Requests()-before)
	}
}
