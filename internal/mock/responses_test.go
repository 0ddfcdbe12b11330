package mock

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
)

// responsesInput is 35 bytes: ceil(35/4) = 9 input tokens.
const (
	responsesInput       = "Say something short about the mock."
	responsesInputTokens = 9
)

func responsesParams(p responses.ResponseNewParams) responses.ResponseNewParams {
	p.Model = "gpt-test"
	p.Input = responses.ResponseNewParamsInputUnion{OfString: openai.String(responsesInput)}
	return p
}

func TestResponses(t *testing.T) {
	ts := start(t, Options{})
	client := ts.client()
	f := func(name string, p responses.ResponseNewParams, wantWords int, wantStatus string) {
		t.Helper()
		got, err := client.Responses.New(testContext(t), responsesParams(p))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.HasPrefix(got.ID, "resp_") || got.Object != "response" || got.Model != "gpt-test" ||
			string(got.Status) != wantStatus || got.OutputText() != Text(wantWords) {
			t.Fatalf("%s: %s", name, got.RawJSON())
		}
		if wantStatus == "incomplete" && got.IncompleteDetails.Reason != "max_output_tokens" {
			t.Fatalf("%s: incomplete_details: %s", name, got.RawJSON())
		}
		u := got.Usage
		if u.InputTokens != responsesInputTokens || u.OutputTokens != int64(wantWords) ||
			u.TotalTokens != u.InputTokens+u.OutputTokens || !u.JSON.InputTokensDetails.Valid() ||
			!u.OutputTokensDetails.JSON.ReasoningTokens.Valid() {
			t.Fatalf("%s: usage: %s", name, u.RawJSON())
		}
	}
	f("unbounded: Options.Chunks words", responses.ResponseNewParams{}, DefaultChunks, "completed")
	f("max_output_tokens below Chunks cuts", responses.ResponseNewParams{MaxOutputTokens: openai.Int(16), Store: openai.Bool(false)}, DefaultChunks, "completed")
	f("max_output_tokens above Chunks does not", responses.ResponseNewParams{MaxOutputTokens: openai.Int(40)}, DefaultChunks, "completed")
	ts2 := start(t, Options{Chunks: 40})
	client = ts2.client()
	f("max_output_tokens below Chunks cuts", responses.ResponseNewParams{MaxOutputTokens: openai.Int(20)}, 20, "incomplete")
}

func TestResponsesStream(t *testing.T) {
	ts := start(t, Options{Chunks: 40})
	client := ts.client()
	f := func(name string, p responses.ResponseNewParams, wantWords int, wantLast string) {
		t.Helper()
		stream := client.Responses.NewStreaming(testContext(t), responsesParams(p))
		var types []string
		var text strings.Builder
		var last responses.ResponseStreamEventUnion
		for stream.Next() {
			ev := stream.Current()
			if ev.SequenceNumber != int64(len(types)) {
				t.Fatalf("%s: event %d numbered %d", name, len(types), ev.SequenceNumber)
			}
			types = append(types, ev.Type)
			if ev.Type == "response.output_text.delta" {
				text.WriteString(ev.Delta)
			}
			last = ev
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"}
		for range wantWords {
			want = append(want, "response.output_text.delta")
		}
		want = append(want, "response.output_text.done", "response.content_part.done", "response.output_item.done", wantLast)
		if strings.Join(types, " ") != strings.Join(want, " ") {
			t.Fatalf("%s: events\n%v\nwant\n%v", name, types, want)
		}
		if text.String() != Text(wantWords) || last.Response.OutputText() != Text(wantWords) {
			t.Fatalf("%s: text %q, final %q", name, text.String(), last.Response.OutputText())
		}
		u := last.Response.Usage
		if u.InputTokens != responsesInputTokens || u.OutputTokens != int64(wantWords) {
			t.Fatalf("%s: usage: %s", name, u.RawJSON())
		}
	}
	f("whole", responses.ResponseNewParams{}, 40, "response.completed")
	f("max_output_tokens", responses.ResponseNewParams{MaxOutputTokens: openai.Int(17)}, 17, "response.incomplete")
}

func TestResponsesCachedTokens(t *testing.T) {
	ts := start(t, Options{Chunks: 2})
	input := strings.Repeat("abcd", 1500) // 1,500 tokens: 1,408 cached (11 steps of 128)
	status, body := ts.do(t, "POST", "/v1/responses", `{"model":"m","input":"`+input+`"}`)
	var r responses.Response
	if err := json.Unmarshal([]byte(body), &r); status != 200 || err != nil {
		t.Fatalf("status %d, %v: %s", status, err, body)
	}
	if r.Usage.InputTokens != 1500 || r.Usage.InputTokensDetails.CachedTokens != 1408 {
		t.Fatalf("usage: %s", r.Usage.RawJSON())
	}
}

// Like OpenAI's parser, the mock takes the last of repeated keys.
func TestResponsesLastKeyWins(t *testing.T) {
	ts := start(t, Options{Chunks: 40})
	status, body := ts.do(t, "POST", "/v1/responses", `{"model":"a","input":"x","max_output_tokens":16,"max_output_tokens":null,"model":"b"}`)
	var r responses.Response
	if err := json.Unmarshal([]byte(body), &r); status != 200 || err != nil {
		t.Fatalf("status %d, %v: %s", status, err, body)
	}
	if r.Model != "b" || r.Usage.OutputTokens != 40 || r.Status != "completed" {
		t.Fatalf("model %q, %d output tokens, status %s: want b, 40, completed", r.Model, r.Usage.OutputTokens, r.Status)
	}
}

func TestResponsesErrors(t *testing.T) {
	ts := start(t, Options{})
	f := func(body string, wantStatus int, want string) {
		t.Helper()
		status, got := ts.do(t, "POST", "/v1/responses", body)
		if status != wantStatus || got != want {
			t.Fatalf("%s: %d %s\nwant %d %s", body, status, got, wantStatus, want)
		}
	}
	f(`{"model":"m","input":"x","max_output_tokens":15}`, 400,
		`{"error":{"message":"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16.","type":"invalid_request_error","param":"max_output_tokens","code":"integer_below_min_value"}}`)
	f(`{"input":"x"}`, 400,
		`{"error":{"message":"you must provide a model parameter","type":"invalid_request_error","param":null,"code":null}}`)
	f(`{"model":"m",`, 400,
		`{"error":{"message":"We could not parse the JSON body of your request. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.","type":"invalid_request_error","param":null,"code":null}}`)
}
