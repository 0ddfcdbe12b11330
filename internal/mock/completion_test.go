package mock

import (
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
)

func TestCompletions(t *testing.T) {
	ts := start(t, Options{})
	client := ts.client()
	f := func(name string, p openai.CompletionNewParams, wantWords int, wantFinish string, wantChoices int, wantPrompt int64) {
		t.Helper()
		p.Model = "gpt-instruct"
		got, err := client.Completions.New(testContext(t), p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.HasPrefix(got.ID, "cmpl-") || got.Object != "text_completion" || got.Model != "gpt-instruct" {
			t.Fatalf("%s: head: %s", name, got.RawJSON())
		}
		if len(got.Choices) != wantChoices {
			t.Fatalf("%s: %d choices, want %d", name, len(got.Choices), wantChoices)
		}
		for i, c := range got.Choices {
			if c.Index != int64(i) || c.Text != Text(wantWords) || string(c.FinishReason) != wantFinish {
				t.Fatalf("%s: choice %d: %s", name, i, c.RawJSON())
			}
		}
		if u := got.Usage; u.PromptTokens != wantPrompt || u.CompletionTokens != int64(wantWords*wantChoices) ||
			u.TotalTokens != u.PromptTokens+u.CompletionTokens {
			t.Fatalf("%s: usage: %s", name, u.RawJSON())
		}

		// The same request streamed must add up to the same text.
		stream := client.Completions.NewStreaming(testContext(t), p)
		texts := make([]string, wantChoices)
		finishes := make([]string, wantChoices)
		for stream.Next() {
			for _, c := range stream.Current().Choices {
				texts[c.Index] += c.Text
				if c.FinishReason != "" {
					finishes[c.Index] = string(c.FinishReason)
				}
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("%s: stream: %v", name, err)
		}
		for i := range texts {
			if texts[i] != Text(wantWords) || finishes[i] != wantFinish {
				t.Fatalf("%s: streamed choice %d: %q (%s)", name, i, texts[i], finishes[i])
			}
		}
	}
	str := func(s string) openai.CompletionNewParamsPromptUnion {
		return openai.CompletionNewParamsPromptUnion{OfString: openai.String(s)}
	}
	f("string prompt", openai.CompletionNewParams{Prompt: str("Once upon a time")}, DefaultChunks, "stop", 1, 4)
	f("max_tokens", openai.CompletionNewParams{Prompt: str("x"), MaxTokens: openai.Int(3)}, 3, "length", 1, 1)
	f("prompts times n choices", openai.CompletionNewParams{
		Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfStrings: []string{"abcd", "efghi"}},
		N:      openai.Int(2), MaxTokens: openai.Int(2),
	}, 2, "length", 4, 3)
	f("token prompt", openai.CompletionNewParams{
		Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: []int64{1, 2, 3, 4, 5}},
	}, DefaultChunks, "stop", 1, 5)
	f("token-array prompts", openai.CompletionNewParams{
		Prompt:    openai.CompletionNewParamsPromptUnion{OfArrayOfTokenArrays: [][]int64{{1, 2}, {3}}},
		MaxTokens: openai.Int(1),
	}, 1, "length", 2, 3)
}

func TestCompletionStreamBytes(t *testing.T) {
	ts := start(t, Options{})
	status, body := ts.do(t, "POST", "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":1,"stream":true,"stream_options":{"include_usage":true}}`)
	const head = `data: {"id":"ID","object":"text_completion","created":0,"model":"m","system_fingerprint":"fp_mock","choices":[`
	want := head + `{"text":" lorem","index":0,"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n" +
		head + `{"text":"","index":0,"logprobs":null,"finish_reason":"length"}],"usage":null}` + "\n\n" +
		head + `],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}` + "\n\n" +
		"data: [DONE]\n\n"
	if got := normalize(body); status != 200 || got != want {
		t.Fatalf("status %d, stream:\n%s\nwant:\n%s", status, got, want)
	}
}
