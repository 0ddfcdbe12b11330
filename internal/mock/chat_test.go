package mock

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// chatMessages total 28 content bytes in 2 messages: ceil(28/4) + 2*3 = 13
// prompt tokens.
var chatMessages = []openai.ChatCompletionMessageParamUnion{
	openai.SystemMessage("You are terse."),
	openai.UserMessage("Say something."),
}

const chatPromptTokens = 13

func TestChat(t *testing.T) {
	ts := start(t, Options{})
	client := ts.client()
	f := func(name string, p openai.ChatCompletionNewParams, wantWords int, wantFinish string, wantChoices int) {
		t.Helper()
		p.Model = "gpt-test"
		p.Messages = chatMessages
		got, err := client.Chat.Completions.New(testContext(t), p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.HasPrefix(got.ID, "chatcmpl-") || got.Object != "chat.completion" || got.Model != "gpt-test" ||
			got.SystemFingerprint != "fp_mock" || //nolint:staticcheck // deprecated by OpenAI, still sent by providers and parsed by SDKs
			time.Since(time.Unix(got.Created, 0)) > time.Minute {
			t.Fatalf("%s: head: %s", name, got.RawJSON())
		}
		if len(got.Choices) != wantChoices {
			t.Fatalf("%s: %d choices, want %d", name, len(got.Choices), wantChoices)
		}
		for i, c := range got.Choices {
			if c.Index != int64(i) || c.Message.Role != "assistant" || c.Message.Content != Text(wantWords) ||
				c.FinishReason != wantFinish || c.Message.JSON.Refusal.Raw() != "null" {
				t.Fatalf("%s: choice %d: %s", name, i, c.RawJSON())
			}
		}
		u := got.Usage
		if u.PromptTokens != chatPromptTokens || u.CompletionTokens != int64(wantWords*wantChoices) ||
			u.TotalTokens != u.PromptTokens+u.CompletionTokens {
			t.Fatalf("%s: usage: %s", name, u.RawJSON())
		}
	}
	f("unbounded: Options.Chunks words", openai.ChatCompletionNewParams{}, DefaultChunks, "stop", 1)
	f("max_tokens below Chunks cuts", openai.ChatCompletionNewParams{MaxTokens: openai.Int(5)}, 5, "length", 1)
	f("max_tokens above Chunks does not", openai.ChatCompletionNewParams{MaxTokens: openai.Int(40)}, DefaultChunks, "stop", 1)
	f("max_completion_tokens bounds too", openai.ChatCompletionNewParams{MaxCompletionTokens: openai.Int(3)}, 3, "length", 1)
	f("n choices", openai.ChatCompletionNewParams{N: openai.Int(3), MaxTokens: openai.Int(2)}, 2, "length", 3)
	if got := ts.Requests(); got != 5 {
		t.Fatalf("Requests() = %d, want 5", got)
	}
}

func TestChatChunksOption(t *testing.T) {
	ts := start(t, Options{Chunks: 40})
	client := ts.client()
	got, err := client.Chat.Completions.New(testContext(t), openai.ChatCompletionNewParams{Model: "m", Messages: chatMessages})
	if err != nil {
		t.Fatal(err)
	}
	if got.Choices[0].Message.Content != Text(40) {
		t.Fatalf("content %q, want 40 words", got.Choices[0].Message.Content)
	}
	got, err = client.Chat.Completions.New(testContext(t), openai.ChatCompletionNewParams{Model: "m", Messages: chatMessages},
		option.WithHeader(HeaderChunks, "2"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Choices[0].Message.Content != Text(2) || got.Choices[0].FinishReason != "stop" {
		t.Fatalf("with X-Mock-Chunks: 2: %s", got.Choices[0].RawJSON())
	}
}

func TestChatStream(t *testing.T) {
	ts := start(t, Options{})
	client := ts.client()
	f := func(name string, p openai.ChatCompletionNewParams, wantChunks int) {
		t.Helper()
		p.Model = "gpt-test"
		p.Messages = chatMessages
		want, err := client.Chat.Completions.New(testContext(t), p)
		if err != nil {
			t.Fatalf("%s: buffered: %v", name, err)
		}
		stream := client.Chat.Completions.NewStreaming(testContext(t), p)
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for stream.Next() {
			chunk := stream.Current()
			if chunk.Object != "chat.completion.chunk" || chunk.Model != "gpt-test" ||
				chunk.SystemFingerprint != "fp_mock" { //nolint:staticcheck // deprecated by OpenAI, still sent by providers and parsed by SDKs
				t.Fatalf("%s: chunk head: %s", name, chunk.RawJSON())
			}
			if !acc.AddChunk(chunk) {
				t.Fatalf("%s: accumulator refused chunk %d: %s", name, chunks, chunk.RawJSON())
			}
			chunks++
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("%s: stream: %v", name, err)
		}
		if chunks != wantChunks {
			t.Fatalf("%s: %d chunks, want %d", name, chunks, wantChunks)
		}
		if len(acc.Choices) != len(want.Choices) {
			t.Fatalf("%s: %d choices, want %d", name, len(acc.Choices), len(want.Choices))
		}
		for i := range want.Choices {
			if acc.Choices[i].Message.Content != want.Choices[i].Message.Content ||
				acc.Choices[i].FinishReason != want.Choices[i].FinishReason {
				t.Fatalf("%s: choice %d streamed %q (%s), buffered %q (%s)", name, i,
					acc.Choices[i].Message.Content, acc.Choices[i].FinishReason,
					want.Choices[i].Message.Content, want.Choices[i].FinishReason)
			}
		}
		wantUsage := p.StreamOptions.IncludeUsage.Value
		if gotUsage := acc.Usage.TotalTokens != 0; gotUsage != wantUsage {
			t.Fatalf("%s: usage %s, want present=%v", name, acc.Usage.RawJSON(), wantUsage)
		}
		if wantUsage && (acc.Usage.PromptTokens != want.Usage.PromptTokens || acc.Usage.CompletionTokens != want.Usage.CompletionTokens) {
			t.Fatalf("%s: streamed usage %s, buffered %s", name, acc.Usage.RawJSON(), want.Usage.RawJSON())
		}
	}
	withUsage := openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	// role chunk + one per word + finish chunk (+ usage chunk)
	f("default", openai.ChatCompletionNewParams{}, 1+DefaultChunks+1)
	f("include_usage", openai.ChatCompletionNewParams{StreamOptions: withUsage}, 1+DefaultChunks+2)
	f("max_tokens", openai.ChatCompletionNewParams{MaxTokens: openai.Int(4), StreamOptions: withUsage}, 1+4+2)
	f("n=2 interleaves choices", openai.ChatCompletionNewParams{N: openai.Int(2), MaxTokens: openai.Int(3)}, 2*(1+3+1))
}

var (
	reID      = regexp.MustCompile(`"id":"(chatcmpl|cmpl)-mock[0-9a-f]{16}"`)
	reCreated = regexp.MustCompile(`"created":[0-9]+`)
)

// normalize replaces the parts of an answer that change per request.
func normalize(s string) string {
	s = reID.ReplaceAllString(s, `"id":"ID"`)
	return reCreated.ReplaceAllString(s, `"created":0`)
}

func TestChatStreamBytes(t *testing.T) {
	ts := start(t, Options{})
	status, body := ts.do(t, "POST", "/v1/chat/completions",
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}`)
	const head = `data: {"id":"ID","object":"chat.completion.chunk","created":0,"model":"m","system_fingerprint":"fp_mock","choices":[`
	want := head + `{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n" +
		head + `{"index":0,"delta":{"content":" lorem"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n" +
		head + `{"index":0,"delta":{"content":" ipsum"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n" +
		head + `{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}],"usage":null}` + "\n\n" +
		head + `],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}` + "\n\n" +
		"data: [DONE]\n\n"
	if got := normalize(body); status != 200 || got != want {
		t.Fatalf("status %d, stream:\n%s\nwant:\n%s", status, got, want)
	}
}

func TestChatBytes(t *testing.T) {
	ts := start(t, Options{})
	status, body := ts.do(t, "POST", "/v1/chat/completions",
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hello"},{"type":"text","text":"world"}]}],"max_tokens":1}`)
	// 10 content bytes in one message: ceil(10/4) + 3 = 6 prompt tokens.
	want := `{"id":"ID","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":" lorem","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"length"}],` +
		`"usage":{"prompt_tokens":6,"completion_tokens":1,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp_mock"}`
	if got := normalize(body); status != 200 || got != want {
		t.Fatalf("status %d, body:\n%s\nwant:\n%s", status, got, want)
	}
}

func TestStreamTiming(t *testing.T) {
	const latency, interval, words = 60 * time.Millisecond, 40 * time.Millisecond, 3
	ts := start(t, Options{Latency: latency, ChunkInterval: interval, Chunks: words})
	client := ts.client()
	begin := time.Now()
	stream := client.Chat.Completions.NewStreaming(testContext(t), openai.ChatCompletionNewParams{Model: "m", Messages: chatMessages})
	var arrivals []time.Duration
	for stream.Next() {
		arrivals = append(arrivals, time.Since(begin))
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	// role, 3 words, finish. Lower bounds only: the mock sleeps, so load can
	// only delay the chunks. (That each one is flushed as it is produced is
	// TestStreamFlushesEachEvent's, checked by order, not by gaps that a
	// busy client stretches.)
	if len(arrivals) != 1+words+1 {
		t.Fatalf("%d chunks, want %d", len(arrivals), 1+words+1)
	}
	if arrivals[0] < latency {
		t.Fatalf("first chunk after %v, before the %v latency", arrivals[0], latency)
	}
	total := latency + words*interval
	if last := arrivals[len(arrivals)-1]; last < total {
		t.Fatalf("last chunk after %v, want >= %v", last, total)
	}
}

// TestStreamFlushesEachEvent: the role and the first word reach the client
// while the mock still sleeps before the second word, a minute away. Were
// events buffered until the end, they would come after that minute, and the
// client's 10s request timeout (a hang guard) ends the test first.
func TestStreamFlushesEachEvent(t *testing.T) {
	ts := start(t, Options{ChunkInterval: time.Minute, Chunks: 2})
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	stream := ts.client().Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "m", Messages: chatMessages})
	defer stream.Close()
	var deltas []string
	for len(deltas) < 2 && stream.Next() {
		c := stream.Current()
		deltas = append(deltas, c.Choices[0].Delta.Role+"|"+c.Choices[0].Delta.Content)
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("after %q: %v; want the role and the first word before the second word is produced", deltas, err)
	}
	if len(deltas) != 2 || deltas[0] != "assistant|" || deltas[1] != "|"+words[0] {
		t.Fatalf("deltas %q, want the role, then the first word %q", deltas, words[0])
	}
}

func TestLatencyHeader(t *testing.T) {
	ts := start(t, Options{})
	begin := time.Now()
	status, _ := ts.do(t, "POST", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"x"}]}`, HeaderLatency, "80ms")
	// A lower bound only, and safe under load: the mock sleeps the latency
	// after begin, and load can only lengthen a sleep.
	if elapsed := time.Since(begin); status != 200 || elapsed < 80*time.Millisecond {
		t.Fatalf("status %d after %v, want 200 after >= 80ms", status, elapsed)
	}
}
