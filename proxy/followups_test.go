package proxy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"

	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

// wantNotFound fails unless err is the gateway's 404 for a response id that
// is not the key's: OpenAI's shape, code not_found.
func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	var apiErr *openai.Error
	if !asAPIError(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound ||
		apiErr.Type != "invalid_request_error" || apiErr.Code != "not_found" {
		t.Fatalf("%s: %v, want 404 not_found", what, err)
	}
}

// TestResponseFollowUps: through a real node, the official SDK's Get,
// InputItems.List, Cancel, InputTokens.Count and Delete reach the upstream
// that created the response for the key that created it; another key gets
// 404 for each, and nothing reaches the upstream for it.
func TestResponseFollowUps(t *testing.T) {
	m, up := startMock(t, mock.Options{Chunks: 8})
	g := startGateway(t, responsesConfig(up), "")
	ownerKey := g.newKey("all").Key
	owner, other := g.client(ownerKey), g.client(g.newKey("all").Key)
	ctx := context.Background()

	created, err := owner.Responses.New(ctx, responsesParams("alias"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := owner.Responses.Get(ctx, created.ID, responses.ResponseGetParams{})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.RawJSON() != created.RawJSON() {
		t.Fatalf("Get:\n%s\nwant\n%s", got.RawJSON(), created.RawJSON())
	}
	items, err := owner.Responses.InputItems.List(ctx, created.ID, responses.InputItemListParams{})
	if err != nil {
		t.Fatalf("InputItems.List: %v", err)
	}
	if len(items.Data) != 1 || len(items.Data[0].AsMessage().Content) != 1 || items.Data[0].AsMessage().Content[0].Text != responsesInput {
		t.Fatalf("InputItems.List: %s", items.RawJSON())
	}
	// The upstream's own refusal, passed through: the request reached it.
	_, err = owner.Responses.Cancel(ctx, created.ID)
	var apiErr *openai.Error
	if !asAPIError(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest ||
		apiErr.Message != "Only responses created with background=true can be cancelled." {
		t.Fatalf("Cancel: %v", err)
	}
	count, err := owner.Responses.InputTokens.Count(ctx, responses.InputTokenCountParams{
		Model: openai.String("alias"),
		Input: responses.InputTokenCountParamsInputUnion{OfString: openai.String(responsesInput)},
	})
	if err != nil {
		t.Fatalf("InputTokens.Count: %v", err)
	}
	if count.InputTokens != 9 {
		t.Fatalf("InputTokens.Count: %s", count.RawJSON())
	}

	before := m.Requests()
	_, err = other.Responses.Get(ctx, created.ID, responses.ResponseGetParams{})
	wantNotFound(t, "another key's Get", err)
	_, err = other.Responses.InputItems.List(ctx, created.ID, responses.InputItemListParams{})
	wantNotFound(t, "another key's InputItems.List", err)
	_, err = other.Responses.Cancel(ctx, created.ID)
	wantNotFound(t, "another key's Cancel", err)
	wantNotFound(t, "another key's Delete", other.Responses.Delete(ctx, created.ID))
	for _, id := range []string{"resp_unknown", strings.Repeat("r", 300), "..", "resp_1/cancel"} {
		_, err = owner.Responses.Get(ctx, id, responses.ResponseGetParams{})
		wantNotFound(t, "Get of "+id, err)
	}
	if n := m.Requests(); n != before {
		t.Fatalf("the upstream saw %d follow-ups of ids not the key's", n-before)
	}

	// Streaming a stored response again is refused, not sent upstream as a
	// stream the gateway would not read.
	st, hdr, b := g.do("GET", "/v1/responses/"+created.ID+"?stream=true", ownerKey, nil)
	wantErrorBody(t, st, hdr, b, http.StatusBadRequest, "unsupported_parameter")

	if err := owner.Responses.Delete(ctx, created.ID); err != nil {
		t.Fatal(err)
	}
	before = m.Requests()
	_, err = owner.Responses.Get(ctx, created.ID, responses.ResponseGetParams{})
	wantNotFound(t, "Get after Delete", err)
	if n := m.Requests(); n != before {
		t.Fatal("a deleted response's id was still remembered")
	}

	// A streamed response is remembered from its response.created.
	s := owner.Responses.NewStreaming(ctx, responsesParams("mock"))
	var streamed string
	for s.Next() {
		if ev := s.Current(); ev.Type == "response.created" {
			streamed = ev.Response.ID
		}
	}
	if err := s.Err(); err != nil || streamed == "" {
		t.Fatalf("stream: %v %q", err, streamed)
	}
	if got, err := owner.Responses.Get(ctx, streamed, responses.ResponseGetParams{}); err != nil || got.OutputText() != mock.Text(8) {
		t.Fatalf("Get of a streamed response: %v", err)
	}
	_, err = other.Responses.Get(ctx, streamed, responses.ResponseGetParams{})
	wantNotFound(t, "another key's Get of a streamed response", err)

	// store:false: the upstream keeps nothing, the gateway remembers nothing.
	p := responsesParams("mock")
	p.Store = openai.Bool(false)
	unstored, err := owner.Responses.New(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	before = m.Requests()
	_, err = owner.Responses.Get(ctx, unstored.ID, responses.ResponseGetParams{})
	wantNotFound(t, "Get of a store:false response", err)
	if m.Requests() != before {
		t.Fatal("a store:false response's id was remembered")
	}

	// Follow-ups count under an endpoint of their own, not "other".
	_, _, metrics := g.do("GET", "/metrics", "", nil)
	for _, want := range []string{
		`tokenhub_requests_total{endpoint="responses_followup",model="",plan="",status="200"}`,
		`tokenhub_requests_total{endpoint="responses_followup",model="",plan="",status="404"}`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestResponsePreviousOfAnotherKey: previous_response_id naming another
// key's response (or one never created) is 404 before anything is sent
// upstream; the key's own is served, and the upstream sees the id.
func TestResponsePreviousOfAnotherKey(t *testing.T) {
	m, up := startMock(t, mock.Options{Chunks: 4})
	g := startGateway(t, responsesConfig(up), "")
	owner, other := g.client(g.newKey("all").Key), g.client(g.newKey("all").Key)
	ctx := context.Background()
	first, err := owner.Responses.New(ctx, responsesParams("mock"))
	if err != nil {
		t.Fatal(err)
	}
	next := responsesParams("mock")
	next.PreviousResponseID = openai.String(first.ID)

	before := m.Requests()
	_, err = other.Responses.New(ctx, next)
	wantAPIError(t, err, http.StatusNotFound, "invalid_request_error", "previous_response_not_found")
	stream := other.Responses.NewStreaming(ctx, next)
	for stream.Next() {
	}
	wantAPIError(t, stream.Err(), http.StatusNotFound, "invalid_request_error", "previous_response_not_found")
	_, err = other.Responses.InputTokens.Count(ctx, responses.InputTokenCountParams{
		Model: openai.String("mock"), PreviousResponseID: openai.String(first.ID),
		Input: responses.InputTokenCountParamsInputUnion{OfString: openai.String(responsesInput)},
	})
	wantAPIError(t, err, http.StatusNotFound, "invalid_request_error", "previous_response_not_found")
	unknown := responsesParams("mock")
	unknown.PreviousResponseID = openai.String("resp_never")
	_, err = owner.Responses.New(ctx, unknown)
	wantAPIError(t, err, http.StatusNotFound, "invalid_request_error", "previous_response_not_found")
	if n := m.Requests(); n != before {
		t.Fatalf("the upstream saw %d requests naming ids not the key's", n-before)
	}

	got, err := owner.Responses.New(ctx, next)
	if err != nil {
		t.Fatalf("own previous_response_id: %v", err)
	}
	if got.PreviousResponseID != first.ID {
		t.Fatalf("own previous_response_id: %s", got.RawJSON())
	}
}

// TestResponsePreviousPinsTheRoute: a model with routes on two upstreams
// sends a create that continues a response to the upstream holding it,
// every time, though its routes are weighted to the other.
func TestResponsePreviousPinsTheRoute(t *testing.T) {
	holder, upA := startMock(t, mock.Options{Chunks: 4})
	elsewhere, upB := startMock(t, mock.Options{Chunks: 4})
	g := startGateway(t, fmt.Sprintf(`
upstreams: [{name: a, base_url: %q}, {name: b, base_url: %q}]
models:
  - {name: first, routes: [{upstream: a}]}
  - {name: both, routes: [{upstream: a, weight: 1}, {upstream: b, weight: 1000}]}
  - {name: bonly, routes: [{upstream: b}]}
plans: [{name: all, models: ["*"]}]
`, upA, upB), "")
	c := g.client(g.newKey("all").Key)
	ctx := context.Background()
	first, err := c.Responses.New(ctx, responsesParams("first"))
	if err != nil {
		t.Fatal(err)
	}
	next := responsesParams("both")
	next.PreviousResponseID = openai.String(first.ID)
	heldBefore, elsewhereBefore := holder.Requests(), elsewhere.Requests()
	for range 10 {
		if _, err := c.Responses.New(ctx, next); err != nil {
			t.Fatal(err)
		}
	}
	if h, e := holder.Requests()-heldBefore, elsewhere.Requests()-elsewhereBefore; h != 10 || e != 0 {
		t.Fatalf("holder saw %d, the other upstream %d; want 10 and 0", h, e)
	}
	// A model with no route on the holder cannot continue it.
	next.Model = "bonly"
	_, err = c.Responses.New(ctx, next)
	wantAPIError(t, err, http.StatusBadRequest, "invalid_request_error", "invalid_value")
}

// TestResponseIDsBounded: past store.responses.max_ids the oldest id is
// forgotten and its follow-ups answer 404.
func TestResponseIDsBounded(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 1})
	g := startNode(t, "store: {path: "+t.TempDir()+", responses: {max_ids: 2}}\n"+responsesConfig(up))
	c := g.client(g.newKey("all").Key)
	ctx := context.Background()
	var ids []string
	for range 3 {
		r, err := c.Responses.New(ctx, responsesParams("mock"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	_, err := c.Responses.Get(ctx, ids[0], responses.ResponseGetParams{})
	wantNotFound(t, "the oldest, past max_ids", err)
	for _, id := range ids[1:] {
		if _, err := c.Responses.Get(ctx, id, responses.ResponseGetParams{}); err != nil {
			t.Fatalf("Get %s: %v", id, err)
		}
	}
}

// TestResponseFollowUpsRateLimited: a follow-up is a request under the
// key's requests per minute.
func TestResponseFollowUpsRateLimited(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 1})
	g := startGateway(t, responsesConfig(up), "")
	c := g.client(g.newKey("slow").Key)
	r, err := c.Responses.New(context.Background(), responsesParams("mock"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Responses.Get(context.Background(), r.ID, responses.ResponseGetParams{})
	wantAPIError(t, err, http.StatusTooManyRequests, "requests", "rate_limit_exceeded")
}

// TestResponseFollowUpsTwoNodes: two nodes on one Valkey and one upstream:
// a response created on A is found, listed and deleted on B, right after
// its creator learns its id (non-stream: the answer; stream: the
// response.created event, while the stream still runs); another key is
// refused on both.
func TestResponseFollowUpsTwoNodes(t *testing.T) {
	v := valkeytest.Start(t)
	_, up := startMock(t, mock.Options{Chunks: 20, ChunkInterval: 20 * time.Millisecond})
	prefix := fmt.Sprintf("t%d", time.Now().UnixNano())
	var nodes [2]*gateway
	for i := range nodes {
		nodes[i] = startNode(t, fmt.Sprintf(`
store:
  path: %s
  valkey: {addrs: [%q], prefix: %s, timeout: 10s}
upstreams: [{name: up, base_url: %q}]
models: [{name: mock, routes: [{upstream: up}]}]
plans: [{name: all, models: ["*"]}]
`, t.TempDir(), v.Addr(), prefix, up))
	}
	a, b := nodes[0], nodes[1]
	key, otherKey := a.newKey("all").Key, a.newKey("all").Key
	b.warm(t, key)
	b.warm(t, otherKey)
	onA, onB, otherOnB := a.client(key), b.client(key), b.client(otherKey)
	ctx := context.Background()

	created, err := onA.Responses.New(ctx, responsesParams("mock"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := onB.Responses.Get(ctx, created.ID, responses.ResponseGetParams{}); err != nil || got.ID != created.ID {
		t.Fatalf("Get on B of A's response: %v", err)
	}
	_, err = otherOnB.Responses.Get(ctx, created.ID, responses.ResponseGetParams{})
	wantNotFound(t, "another key on B", err)
	if err := onB.Responses.Delete(ctx, created.ID); err != nil {
		t.Fatalf("Delete on B: %v", err)
	}
	_, err = onA.Responses.Get(ctx, created.ID, responses.ResponseGetParams{})
	wantNotFound(t, "Get on A after Delete on B", err)

	s := onB.Responses.NewStreaming(ctx, responsesParams("mock"))
	var found bool
	for s.Next() {
		ev := s.Current()
		if ev.Type != "response.created" {
			continue
		}
		// The stream runs on (20 words, 20ms apart): A knows the id now.
		got, err := onA.Responses.Get(ctx, ev.Response.ID, responses.ResponseGetParams{})
		if err != nil || got.ID != ev.Response.ID {
			t.Fatalf("Get on A during B's stream: %v", err)
		}
		found = true
	}
	if err := s.Err(); err != nil || !found {
		t.Fatalf("stream: %v, created seen %v", err, found)
	}

	// With Valkey gone a node cannot tell whose a response is: 503, not
	// a guess (the key itself is still served from the cache).
	v.Stop()
	st, hdr, body := a.do("GET", "/v1/responses/"+created.ID, key, nil)
	wantErrorBody(t, st, hdr, body, http.StatusServiceUnavailable, "store_unavailable")
}
