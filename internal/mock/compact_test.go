package mock

import (
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
)

// TestCompact: the official SDK's Responses.Compact, answered as OpenAI
// answers it: the user messages then one compaction item, and the usage of
// the pass, the compacted response's own tokens included when it continues
// one; a field a compaction does not take, an unknown previous response and
// a body with nothing to compact are refused.
func TestCompact(t *testing.T) {
	ts := start(t, Options{Chunks: 5})
	client := ts.client()
	ctx := testContext(t)

	c, err := client.Responses.Compact(ctx, responses.ResponseCompactParams{
		Model: "gpt-test",
		Input: responses.ResponseCompactParamsInputUnion{OfString: openai.String(responsesInput)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Object != "response.compaction" || !strings.HasPrefix(c.ID, "cmp_mock") || len(c.Output) != 2 ||
		c.Output[0].Type != "message" || c.Output[0].Role != "user" || c.Output[1].Type != "compaction" ||
		c.Output[1].EncryptedContent == "" {
		t.Fatalf("compaction: %s", c.RawJSON())
	}
	alone := c.Usage.InputTokens
	if alone < 1 || c.Usage.OutputTokens != int64(compactionTokens(int(alone))) ||
		c.Usage.TotalTokens != alone+c.Usage.OutputTokens {
		t.Fatalf("usage: %s", c.Usage.RawJSON())
	}

	created, err := client.Responses.New(ctx, responsesParams(responses.ResponseNewParams{}))
	if err != nil {
		t.Fatal(err)
	}
	c, err = client.Responses.Compact(ctx, responses.ResponseCompactParams{
		Model:              "gpt-test",
		PreviousResponseID: openai.String(created.ID),
		Input:              responses.ResponseCompactParamsInputUnion{OfString: openai.String(responsesInput)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := alone + created.Usage.InputTokens + created.Usage.OutputTokens; c.Usage.InputTokens != want {
		t.Fatalf("a compaction of %s reports %d input tokens, want %d", created.ID, c.Usage.InputTokens, want)
	}

	_, err = client.Responses.Compact(ctx, responses.ResponseCompactParams{
		Model: "gpt-test", Input: responses.ResponseCompactParamsInputUnion{OfString: openai.String("x")},
	}, option.WithJSONSet("stream", true))
	wantStatus(t, "stream", err, http.StatusBadRequest, "Unknown parameter: 'stream'.")
	_, err = client.Responses.Compact(ctx, responses.ResponseCompactParams{
		Model: "gpt-test", Input: responses.ResponseCompactParamsInputUnion{OfString: openai.String("x")},
	}, option.WithJSONSet("max_output_tokens", 100))
	wantStatus(t, "max_output_tokens", err, http.StatusBadRequest, "Unknown parameter: 'max_output_tokens'.")
	_, err = client.Responses.Compact(ctx, responses.ResponseCompactParams{
		Model: "gpt-test", PreviousResponseID: openai.String("resp_mock0000000000000bad"),
	})
	wantStatus(t, "unknown previous response", err, http.StatusNotFound, "")
	_, err = client.Responses.Compact(ctx, responses.ResponseCompactParams{Model: "gpt-test"})
	wantStatus(t, "nothing to compact", err, http.StatusBadRequest, "")
}
