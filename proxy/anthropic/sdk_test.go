package anthropic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/tokenhub/tokenhub/sse"
)

// sdkRoundTrip unmarshals a translated request into the Anthropic SDK's
// MessageNewParams and marshals it back: a field the SDK does not know, or
// of the wrong shape, would be lost or changed, and the two would differ.
func sdkRoundTrip(t *testing.T, translated []byte) anthropic.MessageNewParams {
	t.Helper()
	var params anthropic.MessageNewParams
	if err := json.Unmarshal(translated, &params); err != nil {
		t.Fatalf("the SDK cannot read the translated request: %v\n%s", err, translated)
	}
	again, err := json.Marshal(params)
	if err != nil {
		t.Fatal(err)
	}
	var want, got any
	if err := json.Unmarshal(translated, &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(again, &got); err != nil {
		t.Fatal(err)
	}
	// stream is no field of the SDK's params: its NewStreaming writes
	// "stream":true, as the translation does.
	if obj, ok := want.(map[string]any); ok {
		if v, has := obj["stream"]; has && v != true {
			t.Fatalf("stream is %v, want true or absent", v)
		}
		delete(obj, "stream")
	}
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("the SDK reads the request otherwise:\nours %s\nSDK  %s", translated, again)
	}
	return params
}

func TestChatToMessagesMatchesSDKTypes(t *testing.T) {
	inputs := glob(t, "testdata/chat-to-messages/*.json")
	for _, in := range inputs {
		body, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := ChatToMessages(nil, body, testOpts)
		if err != nil {
			t.Fatal(err)
		}
		params := sdkRoundTrip(t, out)
		if params.Model != "claude-sonnet-4-6" || params.MaxTokens < 1 {
			t.Fatalf("%s: model %q max_tokens %d", in, params.Model, params.MaxTokens)
		}
	}
}

// TestAnthropicFixturesAreRealShapes: the Anthropic answers the tests feed
// the translation are what the SDK reads as such.
func TestAnthropicFixturesAreRealShapes(t *testing.T) {
	inputs := glob(t, "testdata/message-to-chat/*.json")
	for _, in := range inputs {
		body, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		var m anthropic.Message
		if err := json.Unmarshal(body, &m); err != nil || m.ID == "" || len(m.Content) == 0 {
			t.Fatalf("%s: the SDK reads no message: %v", in, err)
		}
	}
	msg := accumulateStream(t, "testdata/stream/tool-use.sse")
	if msg.StopReason != anthropic.StopReasonToolUse || len(msg.Content) != 3 {
		t.Fatalf("the SDK accumulates %+v", msg)
	}
}

// accumulateStream reads an Anthropic stream fixture with the SDK's types.
func accumulateStream(t *testing.T, path string) anthropic.Message {
	t.Helper()
	stream, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sse.NewScanner(1 << 20)
	s.Feed(stream)
	s.End()
	var msg anthropic.Message
	for {
		ev, ok, err := s.Next()
		if err != nil || !ok {
			return msg
		}
		var e anthropic.MessageStreamEventUnion
		if err := json.Unmarshal(ev.Data, &e); err != nil {
			t.Fatalf("the SDK cannot read %s: %v", ev.Data, err)
		}
		if e.Type == "ping" {
			continue
		}
		if err := msg.Accumulate(e); err != nil {
			t.Fatalf("the SDK cannot accumulate %s: %v", ev.Data, err)
		}
	}
}

func glob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) == 0 {
		t.Fatalf("no files for %s: %v", pattern, err)
	}
	return m
}

// translatingServer stands where the gateway will: it translates each chat
// request it receives, checks it with the Anthropic SDK's types, records
// it, and answers with an Anthropic answer (stream or not) translated back.
type translatingServer struct {
	t      *testing.T
	answer []byte // the Anthropic stream (SSE) or message (JSON) to answer with

	mu       sync.Mutex
	requests [][]byte // the translated Messages requests
}

func (s *translatingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	translated, info, err := ChatToMessages(nil, body, testOpts)
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":{"message":` + string(appendString(nil, err.Error())) + `,"type":"invalid_request_error"}}`))
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, translated)
	s.mu.Unlock()
	if !info.Stream {
		out, _, err := MessageToChat(nil, s.answer, ResponseOptions{Model: "claude", Created: 1})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
		return
	}
	var tr StreamTranslator
	tr.Reset("claude", 1, info.IncludeUsage)
	sc := sse.NewScanner(1 << 20)
	sc.Feed(s.answer)
	sc.End()
	w.Header().Set("Content-Type", "text/event-stream")
	var out []byte
	for {
		ev, ok, err := sc.Next()
		if err != nil || !ok {
			break
		}
		out = tr.Translate(out[:0], ev.Name, ev.Data)
		_, _ = w.Write(out)
	}
}

func (s *translatingServer) lastRequest() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[len(s.requests)-1]
}

var weatherTool = openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
	Name:        "get_weather",
	Description: openai.String("Weather of a city"),
	Parameters: openai.FunctionParameters{
		"type":       "object",
		"properties": map[string]any{"location": map[string]string{"type": "string"}},
	},
})

// TestOpenAISDKStreamToolCallRoundTrip: an openai-go client streams a
// translated Claude answer that calls two tools, accumulates it, sends the
// calls back with their results, and the next Messages request holds the
// same tool_use ids and inputs, and the results in one user turn.
func TestOpenAISDKStreamToolCallRoundTrip(t *testing.T) {
	stream, err := os.ReadFile("testdata/stream/tool-use.sse")
	if err != nil {
		t.Fatal(err)
	}
	srv := &translatingServer{t: t, answer: stream}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	client := openai.NewClient(option.WithBaseURL(hs.URL), option.WithAPIKey("k"), option.WithMaxRetries(0))

	params := openai.ChatCompletionNewParams{
		Model:         "claude",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("Weather in Paris?")},
		Tools:         []openai.ChatCompletionToolUnionParam{weatherTool},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}
	s := client.Chat.Completions.NewStreaming(context.Background(), params)
	var acc openai.ChatCompletionAccumulator
	for s.Next() {
		acc.AddChunk(s.Current())
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	sdkRoundTrip(t, srv.lastRequest())
	if len(acc.Choices) != 1 {
		t.Fatalf("choices: %+v", acc.Choices)
	}
	msg := acc.Choices[0].Message
	if msg.Content != "Okay, let's check \"the\" weather for Paris:\n" || acc.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("content %q finish %q", msg.Content, acc.Choices[0].FinishReason)
	}
	if len(msg.ToolCalls) != 2 ||
		msg.ToolCalls[0].ID != "toolu_01T1x1fJ34qAmk2tNTrN7Up6" || msg.ToolCalls[0].Function.Name != "get_weather" ||
		msg.ToolCalls[0].Function.Arguments != `{"location": "Paris"}` ||
		msg.ToolCalls[1].ID != "toolu_2" || msg.ToolCalls[1].Function.Arguments != `{}` {
		t.Fatalf("tool calls: %+v", msg.ToolCalls)
	}
	if acc.Usage.PromptTokens != 1492 || acc.Usage.CompletionTokens != 89 || acc.Usage.PromptTokensDetails.CachedTokens != 1000 {
		t.Fatalf("usage: %+v", acc.Usage)
	}

	// The same answer, accumulated by the Anthropic SDK and translated
	// whole, says the same.
	whole, err := json.Marshal(accumulateStream(t, "testdata/stream/tool-use.sse"))
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := MessageToChat(nil, whole, respOpts)
	if err != nil {
		t.Fatal(err)
	}
	var completion openai.ChatCompletion
	if err := json.Unmarshal(out, &completion); err != nil {
		t.Fatal(err)
	}
	if c := completion.Choices[0].Message; c.Content != msg.Content || len(c.ToolCalls) != 2 ||
		c.ToolCalls[0].ID != msg.ToolCalls[0].ID || compactJSON(t, c.ToolCalls[0].Function.Arguments) != compactJSON(t, msg.ToolCalls[0].Function.Arguments) {
		t.Fatalf("whole translation differs from the streamed one:\n%+v\n%+v", c, msg)
	}

	// Back: the calls and their results.
	params.Messages = append(params.Messages, msg.ToParam(),
		openai.ToolMessage("18C", msg.ToolCalls[0].ID), openai.ToolMessage("14:00", msg.ToolCalls[1].ID))
	s = client.Chat.Completions.NewStreaming(context.Background(), params)
	for s.Next() {
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	next := sdkRoundTrip(t, srv.lastRequest())
	if len(next.Messages) != 3 {
		t.Fatalf("%d turns, want user, assistant, user: %s", len(next.Messages), srv.lastRequest())
	}
	assistant, results := next.Messages[1].OfAssistant, next.Messages[2].OfUser
	if assistant == nil || len(assistant.Content) != 3 {
		t.Fatalf("assistant turn: %s", srv.lastRequest())
	}
	use := assistant.Content[1].OfToolUse
	if use == nil || use.ID != "toolu_01T1x1fJ34qAmk2tNTrN7Up6" || use.Name != "get_weather" {
		t.Fatalf("tool_use: %s", srv.lastRequest())
	}
	if input, _ := json.Marshal(use.Input); string(input) != `{"location":"Paris"}` {
		t.Fatalf("tool_use input %s", input)
	}
	if results == nil || len(results.Content) != 2 ||
		results.Content[0].OfToolResult == nil || results.Content[0].OfToolResult.ToolUseID != "toolu_01T1x1fJ34qAmk2tNTrN7Up6" ||
		results.Content[1].OfToolResult == nil || results.Content[1].OfToolResult.ToolUseID != "toolu_2" {
		t.Fatalf("tool results: %s", srv.lastRequest())
	}
	if len(next.System) != 1 || next.System[0].Text != "be brief" {
		t.Fatalf("system: %s", srv.lastRequest())
	}
}

// TestOpenAISDKNonStream: an openai-go client reads a translated answer.
func TestOpenAISDKNonStream(t *testing.T) {
	answer, err := os.ReadFile("testdata/message-to-chat/tool-use.json")
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(&translatingServer{t: t, answer: answer})
	defer hs.Close()
	client := openai.NewClient(option.WithBaseURL(hs.URL), option.WithAPIKey("k"), option.WithMaxRetries(0))
	c, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "claude",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Choices[0].Message.Content != "Let me check the weather." || c.Choices[0].FinishReason != "tool_calls" ||
		len(c.Choices[0].Message.ToolCalls) != 2 || c.Usage.PromptTokens != 3195 || c.Usage.CompletionTokens != 503 ||
		c.Usage.TotalTokens != 3698 || c.Usage.PromptTokensDetails.CachedTokens != 1000 {
		t.Fatalf("completion: %+v", c)
	}
	// An untranslatable field is a 400 naming it, which the SDK reads.
	_, err = client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "claude",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		N:        openai.Int(2),
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || !strings.Contains(apiErr.Message, "n:") {
		t.Fatalf("n: 2: err %v, want a 400 naming n", err)
	}
}

func compactJSON(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return b.String()
}
