package mock

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
)

// wantStatus fails unless err is the SDK's API error with status and a
// message of msg (when not empty).
func wantStatus(t *testing.T, what string, err error, status int, msg string) {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != status || (msg != "" && apiErr.Message != msg) {
		t.Fatalf("%s: %v, want status %d %q", what, err, status, msg)
	}
}

// TestResponseFollowUps: the official SDK's Get, InputItems.List, Cancel,
// Delete and InputTokens.Count answered as OpenAI answers them, for
// responses created buffered and streamed; store false keeps nothing.
func TestResponseFollowUps(t *testing.T) {
	ts := start(t, Options{Chunks: 5})
	client := ts.client()
	ctx := testContext(t)

	created, err := client.Responses.New(ctx, responsesParams(responses.ResponseNewParams{
		Instructions: openai.String("Be terse."),
	}))
	if err != nil {
		t.Fatal(err)
	}
	got, err := client.Responses.Get(ctx, created.ID, responses.ResponseGetParams{})
	if err != nil {
		t.Fatal(err)
	}
	if got.RawJSON() != created.RawJSON() {
		t.Fatalf("Get answered another response:\n%s\nwant\n%s", got.RawJSON(), created.RawJSON())
	}

	items, err := client.Responses.InputItems.List(ctx, created.ID, responses.InputItemListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(items.Data) != 1 || items.HasMore {
		t.Fatalf("input items: %s", items.RawJSON())
	}
	if m := items.Data[0].AsMessage(); m.Type != "message" || m.Role != "user" || m.ID == "" ||
		len(m.Content) != 1 || m.Content[0].Text != responsesInput {
		t.Fatalf("input item: %s", items.Data[0].RawJSON())
	}

	_, err = client.Responses.Cancel(ctx, created.ID)
	wantStatus(t, "cancel of a foreground response", err, http.StatusBadRequest,
		"Only responses created with background=true can be cancelled.")

	count, err := client.Responses.InputTokens.Count(ctx, responses.InputTokenCountParams{
		Model: openai.String("gpt-test"),
		Input: responses.InputTokenCountParamsInputUnion{OfString: openai.String(responsesInput)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if count.InputTokens != responsesInputTokens || count.Object != "response.input_tokens" {
		t.Fatalf("input tokens: %s", count.RawJSON())
	}

	if err := client.Responses.Delete(ctx, created.ID); err != nil {
		t.Fatal(err)
	}
	notFound := fmt.Sprintf("Response with id '%s' not found.", created.ID)
	_, err = client.Responses.Get(ctx, created.ID, responses.ResponseGetParams{})
	wantStatus(t, "get after delete", err, http.StatusNotFound, notFound)
	wantStatus(t, "delete after delete", client.Responses.Delete(ctx, created.ID), http.StatusNotFound, notFound)
	_, err = client.Responses.InputItems.List(ctx, created.ID, responses.InputItemListParams{})
	wantStatus(t, "input items after delete", err, http.StatusNotFound, notFound)

	stream := client.Responses.NewStreaming(ctx, responsesParams(responses.ResponseNewParams{}))
	var streamed string
	for stream.Next() {
		if e := stream.Current(); e.Type == "response.created" {
			streamed = e.Response.ID
		}
	}
	if err := stream.Err(); err != nil || streamed == "" {
		t.Fatalf("stream: %v, id %q", err, streamed)
	}
	if got, err := client.Responses.Get(ctx, streamed, responses.ResponseGetParams{}); err != nil || got.OutputText() != Text(5) {
		t.Fatalf("get of a streamed response: %v", err)
	}

	unstored, err := client.Responses.New(ctx, responsesParams(responses.ResponseNewParams{Store: openai.Bool(false)}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Responses.Get(ctx, unstored.ID, responses.ResponseGetParams{})
	wantStatus(t, "get of a store:false response", err, http.StatusNotFound, "")

	for _, id := range []string{"resp_nope", "resp_mockffffffffffffffff", "resp_mockzzzzzzzzzzzzzzzz"} {
		_, err = client.Responses.Get(ctx, id, responses.ResponseGetParams{})
		wantStatus(t, "get of "+id, err, http.StatusNotFound, "Response with id '"+id+"' not found.")
	}
}

// TestResponseFollowUpsBounded: the mock keeps the last storedSlots
// responses; an older one answers 404, however many are created.
func TestResponseFollowUpsBounded(t *testing.T) {
	ts := start(t, Options{Chunks: 1})
	client := ts.client()
	ctx := testContext(t)
	var ids []string
	for range storedSlots + 1 {
		r, err := client.Responses.New(ctx, responsesParams(responses.ResponseNewParams{}))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	_, err := client.Responses.Get(ctx, ids[0], responses.ResponseGetParams{})
	wantStatus(t, "the oldest", err, http.StatusNotFound, "")
	for _, id := range []string{ids[1], ids[len(ids)-1]} {
		if _, err := client.Responses.Get(ctx, id, responses.ResponseGetParams{}); err != nil {
			t.Fatalf("get %s: %v", id, err)
		}
	}
}

// TestResponseFollowUpRoutes: methods and paths the follow-ups do not take
// answer as OpenAI does.
func TestResponseFollowUpRoutes(t *testing.T) {
	ts := start(t, Options{})
	f := func(method, path string, want int) {
		t.Helper()
		if st, body := ts.do(t, method, path, ""); st != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, st, body, want)
		}
	}
	f(http.MethodPost, "/v1/responses/resp_x", http.StatusMethodNotAllowed)
	f(http.MethodGet, "/v1/responses/resp_x/cancel", http.StatusMethodNotAllowed)
	f(http.MethodPost, "/v1/responses/resp_x/input_items", http.StatusMethodNotAllowed)
	f(http.MethodGet, "/v1/responses/input_tokens", http.StatusNotFound) // an id like any other
	f(http.MethodGet, "/v1/responses/resp_x/other", http.StatusNotFound)
}

// TestResponseFollowUpsBigInput: an input over what a slot keeps is not
// kept, so the ring's memory stays bounded; its input_items say so.
func TestResponseFollowUpsBigInput(t *testing.T) {
	ts := start(t, Options{Chunks: 1})
	client := ts.client()
	ctx := testContext(t)
	big := strings.Repeat("a", storedMaxBytes)
	r, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-test",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(big)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Responses.Get(ctx, r.ID, responses.ResponseGetParams{}); err != nil {
		t.Fatal(err)
	}
	_, err = client.Responses.InputItems.List(ctx, r.ID, responses.InputItemListParams{})
	wantStatus(t, "input items of a big input", err, http.StatusBadRequest, errInputNotKept.message)
}
