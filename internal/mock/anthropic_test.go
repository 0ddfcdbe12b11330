package mock

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/v2/option"
)

const testAnthropicKey = "sk-ant-test"

// anthropicClient returns the official Anthropic SDK client for ts that never
// retries, so that every request reaches the mock exactly once.
func (ts *testServer) anthropicClient(opts ...anthropicoption.RequestOption) *anthropic.Client {
	base := []anthropicoption.RequestOption{
		anthropicoption.WithBaseURL("http://" + ts.addr + "/"),
		anthropicoption.WithAPIKey(testAnthropicKey),
		anthropicoption.WithMaxRetries(0),
		anthropicoption.WithRequestTimeout(10 * time.Second),
	}
	c := anthropic.NewClient(append(base, opts...)...)
	return &c
}

// claudeMessages total 13 text bytes (system 8, user 5) in one message:
// ceil(13/4) + 3 = 7 input tokens.
var claudeMessages = []anthropic.MessageParam{
	anthropic.NewUserMessage(anthropic.NewTextBlock("Hello")),
}

const claudeSystem = "Be terse"
const claudeInputTokens = 7

func claudeParams(maxTokens int64) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     anthropic.ModelClaudeSonnet4_6,
		MaxTokens: maxTokens,
		System:    []anthropic.TextBlockParam{{Text: claudeSystem}},
		Messages:  claudeMessages,
	}
}

func TestAnthropicMessage(t *testing.T) {
	ts := start(t, Options{Anthropic: AnthropicOptions{APIKey: testAnthropicKey}})
	client := ts.anthropicClient()
	f := func(name string, p anthropic.MessageNewParams, wantText string, wantStop anthropic.StopReason, wantOutput int64) {
		t.Helper()
		got, err := client.Messages.New(testContext(t), p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.HasPrefix(got.ID, "msg_mock") || got.Model != p.Model || got.Role != "assistant" || got.Type != "message" {
			t.Fatalf("%s: head: %s", name, got.RawJSON())
		}
		text := ""
		for _, block := range got.Content {
			text += block.Text
		}
		if text != wantText || got.StopReason != wantStop {
			t.Fatalf("%s: text %q stop %q, want %q %q", name, text, got.StopReason, wantText, wantStop)
		}
		u := got.Usage
		if u.InputTokens != claudeInputTokens || u.OutputTokens != wantOutput || u.CacheReadInputTokens != 0 || u.CacheCreationInputTokens != 0 {
			t.Fatalf("%s: usage %s", name, u.RawJSON())
		}
	}
	f("unbounded: Options.Chunks words", claudeParams(1024), Text(DefaultChunks), anthropic.StopReasonEndTurn, DefaultChunks)
	f("max_tokens below Chunks cuts", claudeParams(5), Text(5), anthropic.StopReasonMaxTokens, 5)
	f("max_tokens 0 warms the cache only", claudeParams(0), "", anthropic.StopReasonMaxTokens, 0)
	withStop := claudeParams(1024)
	withStop.StopSequences = []string{"dolor"}
	// Word 2 is " dolor": two words returned, the stop sequence billed.
	f("stop sequence", withStop, Text(2), anthropic.StopReasonStopSequence, 3)
}

func TestAnthropicCacheTokens(t *testing.T) {
	ts := start(t, Options{Anthropic: AnthropicOptions{CacheReadInputTokens: 1000, CacheCreationInputTokens: 200}})
	client := ts.anthropicClient()
	got, err := client.Messages.New(testContext(t), claudeParams(3))
	if err != nil {
		t.Fatal(err)
	}
	if u := got.Usage; u.InputTokens != claudeInputTokens || u.CacheReadInputTokens != 1000 || u.CacheCreationInputTokens != 200 ||
		u.CacheCreation.Ephemeral5mInputTokens != 200 || u.OutputTokens != 3 {
		t.Fatalf("usage %s", u.RawJSON())
	}
	got, err = client.Messages.New(testContext(t), claudeParams(3),
		anthropicoption.WithHeader(HeaderCacheRead, "7"), anthropicoption.WithHeader(HeaderCacheCreation, "0"))
	if err != nil {
		t.Fatal(err)
	}
	if u := got.Usage; u.CacheReadInputTokens != 7 || u.CacheCreationInputTokens != 0 {
		t.Fatalf("with headers: usage %s", u.RawJSON())
	}
	count, err := client.Messages.CountTokens(testContext(t), anthropic.MessageCountTokensParams{
		Model:    anthropic.ModelClaudeSonnet4_6,
		System:   anthropic.MessageCountTokensParamsSystemUnion{OfTextBlockArray: []anthropic.TextBlockParam{{Text: claudeSystem}}},
		Messages: claudeMessages,
	})
	if err != nil || count.InputTokens != claudeInputTokens+1000+200 {
		t.Fatalf("count_tokens: %v %+v, want the whole prompt, cached parts included", err, count)
	}
}

func TestAnthropicStream(t *testing.T) {
	ts := start(t, Options{Anthropic: AnthropicOptions{CacheReadInputTokens: 30, CacheCreationInputTokens: 20}})
	client := ts.anthropicClient()
	f := func(name string, p anthropic.MessageNewParams) {
		t.Helper()
		want, err := client.Messages.New(testContext(t), p)
		if err != nil {
			t.Fatalf("%s: buffered: %v", name, err)
		}
		stream := client.Messages.NewStreaming(testContext(t), p)
		var got anthropic.Message
		var types []string
		for stream.Next() {
			ev := stream.Current()
			if len(types) == 0 || types[len(types)-1] != ev.Type {
				types = append(types, ev.Type)
			}
			if ev.Type == "message_start" && (ev.Message.Usage.InputTokens != want.Usage.InputTokens ||
				ev.Message.Usage.CacheReadInputTokens != 30 || ev.Message.Usage.OutputTokens > 1) {
				t.Fatalf("%s: message_start usage %s", name, ev.Message.Usage.RawJSON())
			}
			if err := got.Accumulate(ev); err != nil {
				t.Fatalf("%s: accumulate %s: %v", name, ev.RawJSON(), err)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("%s: stream: %v", name, err)
		}
		// The SDK does not hand pings on; TestAnthropicStreamBytes sees them.
		wantTypes := "message_start content_block_start content_block_delta content_block_stop message_delta message_stop"
		if len(want.Content) == 0 {
			wantTypes = "message_start message_delta message_stop"
		}
		if strings.Join(types, " ") != wantTypes {
			t.Fatalf("%s: events %v, want %s", name, types, wantTypes)
		}
		if got.StopReason != want.StopReason || got.StopSequence != want.StopSequence || len(got.Content) != len(want.Content) {
			t.Fatalf("%s: streamed %s, buffered %s", name, got.RawJSON(), want.RawJSON())
		}
		for i := range want.Content {
			if got.Content[i].Text != want.Content[i].Text || got.Content[i].Name != want.Content[i].Name ||
				string(got.Content[i].Input) != string(want.Content[i].Input) {
				t.Fatalf("%s: block %d streamed %s, buffered %s", name, i, got.Content[i].RawJSON(), want.Content[i].RawJSON())
			}
		}
		gu, wu := got.Usage, want.Usage
		if gu.InputTokens != wu.InputTokens || gu.OutputTokens != wu.OutputTokens ||
			gu.CacheReadInputTokens != wu.CacheReadInputTokens || gu.CacheCreationInputTokens != wu.CacheCreationInputTokens {
			t.Fatalf("%s: streamed usage %s, buffered %s", name, gu.RawJSON(), wu.RawJSON())
		}
	}
	f("end_turn", claudeParams(1024))
	f("max_tokens", claudeParams(4))
	f("max_tokens 0", claudeParams(0))
	withStop := claudeParams(1024)
	withStop.StopSequences = []string{"sit"}
	f("stop_sequence", withStop)
	f("tool_use", weatherParams("What is the weather in Paris? Use get_weather."))
}

var weatherTool = anthropic.ToolParam{
	Name:        "get_weather",
	Description: anthropic.String("The weather in a city"),
	InputSchema: anthropic.ToolInputSchemaParam{
		Properties: map[string]any{
			"city": map[string]any{"type": "string"},
			"days": map[string]any{"type": "integer"},
		},
		Required: []string{"city"},
	},
}

func weatherParams(ask string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     anthropic.ModelClaudeSonnet4_6,
		MaxTokens: 1024,
		Tools:     []anthropic.ToolUnionParam{{OfTool: &weatherTool}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(ask))},
	}
}

// A whole tool round trip with the SDK: the mock calls the tool the user
// mentions, takes its result in the next user turn and answers in text.
func TestAnthropicToolRoundTrip(t *testing.T) {
	ts := start(t, Options{})
	client := ts.anthropicClient()
	p := weatherParams("What is the weather in Paris? Use get_weather.")
	first, err := client.Messages.New(testContext(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if first.StopReason != anthropic.StopReasonToolUse || len(first.Content) != 1 {
		t.Fatalf("first answer %s, want one tool_use block", first.RawJSON())
	}
	call := first.Content[0].AsToolUse()
	var input struct {
		City string `json:"city"`
		Days int    `json:"days"`
	}
	if call.Name != "get_weather" || !strings.HasPrefix(call.ID, "toolu_mock") ||
		json.Unmarshal(call.Input, &input) != nil || input.City != "lorem" || input.Days != 1 {
		t.Fatalf("tool_use %s", first.Content[0].RawJSON())
	}
	p.Messages = append(p.Messages, first.ToParam(),
		anthropic.NewUserMessage(anthropic.NewToolResultBlock(call.ID, "18 degrees, sunny", false)))
	second, err := client.Messages.New(testContext(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if second.StopReason != anthropic.StopReasonEndTurn || len(second.Content) != 1 || second.Content[0].Text != Text(DefaultChunks) {
		t.Fatalf("second answer %s, want text", second.RawJSON())
	}

	// A tool_result whose id no tool_use of the message before has is
	// Anthropic's 400, naming the id.
	p.Messages[2] = anthropic.NewUserMessage(anthropic.NewToolResultBlock("toolu_other", "x", false))
	_, err = client.Messages.New(testContext(t), p)
	wantAnthropicError(t, err, 400, "invalid_request_error",
		"messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_other. "+
			"Each `tool_result` block must have a corresponding `tool_use` block in the previous message.")
}

func TestAnthropicToolChoice(t *testing.T) {
	ts := start(t, Options{})
	client := ts.anthropicClient()
	f := func(name string, opts AnthropicOptions, p anthropic.MessageNewParams, wantTool bool) {
		t.Helper()
		c := client
		if opts.ToolUse {
			c = start(t, Options{Anthropic: opts}).anthropicClient()
		}
		got, err := c.Messages.New(testContext(t), p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if gotTool := got.StopReason == anthropic.StopReasonToolUse; gotTool != wantTool {
			t.Fatalf("%s: %s, want tool call %v", name, got.RawJSON(), wantTool)
		}
	}
	f("not asked", AnthropicOptions{}, weatherParams("Hello"), false)
	f("mentioned", AnthropicOptions{}, weatherParams("call get_weather"), true)
	f("ToolUse option", AnthropicOptions{ToolUse: true}, weatherParams("Hello"), true)
	any := weatherParams("Hello")
	any.ToolChoice = anthropic.ToolChoiceUnionParam{OfAny: &anthropic.ToolChoiceAnyParam{}}
	f("tool_choice any", AnthropicOptions{}, any, true)
	named := weatherParams("Hello")
	named.ToolChoice = anthropic.ToolChoiceParamOfTool("get_weather")
	f("tool_choice tool", AnthropicOptions{}, named, true)
	none := weatherParams("call get_weather")
	none.ToolChoice = anthropic.ToolChoiceUnionParam{OfNone: &anthropic.ToolChoiceNoneParam{}}
	f("tool_choice none", AnthropicOptions{}, none, false)
}

// wantAnthropicError checks that err is the SDK's typed API error with the
// status, type and message given.
func wantAnthropicError(t *testing.T, err error, status int, typ, message string) {
	t.Helper()
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("got %v, want an *anthropic.Error", err)
	}
	if apiErr.StatusCode != status || string(apiErr.Type()) != typ || (message != "" && apiErr.Message != message) ||
		!strings.HasPrefix(apiErr.RequestID, "req_mock") {
		t.Fatalf("got %d %q %q (request id %q), want %d %q %q", apiErr.StatusCode, apiErr.Type(), apiErr.Message, apiErr.RequestID,
			status, typ, message)
	}
}

func TestAnthropicSDKErrors(t *testing.T) {
	ts := start(t, Options{Anthropic: AnthropicOptions{APIKey: testAnthropicKey}})
	f := func(name string, client *anthropic.Client, p anthropic.MessageNewParams, status int, typ, message string) {
		t.Helper()
		_, err := client.Messages.New(testContext(t), p)
		wantAnthropicError(t, err, status, typ, message)
		stream := client.Messages.NewStreaming(testContext(t), p)
		for stream.Next() {
			t.Fatalf("%s: streamed an event: %s", name, stream.Current().RawJSON())
		}
		wantAnthropicError(t, stream.Err(), status, typ, message)
	}
	f("wrong key", ts.anthropicClient(anthropicoption.WithAPIKey("sk-ant-wrong")), claudeParams(5),
		401, "authentication_error", "invalid x-api-key")
	f("no anthropic-version", ts.anthropicClient(anthropicoption.WithHeaderDel("anthropic-version")), claudeParams(5),
		400, "invalid_request_error", "anthropic-version: header is required")
	unknown := claudeParams(5)
	unknown.Model = "claude-nope-9"
	f("unknown model", ts.anthropicClient(), unknown, 404, "not_found_error", "model: claude-nope-9")
	f("overloaded", ts.anthropicClient(anthropicoption.WithHeader(HeaderStatus, "529")), claudeParams(5),
		529, "overloaded_error", "Overloaded")
}

func TestAnthropicOverloadedOption(t *testing.T) {
	ts := start(t, Options{Status: StatusOverloaded})
	_, err := ts.anthropicClient().Messages.New(testContext(t), claudeParams(5))
	wantAnthropicError(t, err, 529, "overloaded_error", "Overloaded")
}

// StreamErrorAfter ends a stream with Anthropic's error event, which the SDK
// turns into its typed error after the events before it.
func TestAnthropicStreamError(t *testing.T) {
	ts := start(t, Options{Anthropic: AnthropicOptions{StreamErrorAfter: 3}})
	stream := ts.anthropicClient().Messages.NewStreaming(testContext(t), claudeParams(1024))
	var got anthropic.Message
	for stream.Next() {
		if err := got.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	// The error arrives in a 200 stream: the SDK reports the stream's status.
	wantAnthropicError(t, stream.Err(), 200, "overloaded_error", "Overloaded")
	if len(got.Content) != 1 || got.Content[0].Text != Text(3) || got.Usage.InputTokens != claudeInputTokens {
		t.Fatalf("before the error: %s", got.RawJSON())
	}
}

// TestAnthropicSamplingByVersion: API version 2026-10-21, what the current
// SDKs send, refuses temperature, top_p and top_k even at their defaults,
// with Anthropic's words; 2023-06-01 takes them.
func TestAnthropicSamplingByVersion(t *testing.T) {
	ts := start(t, Options{})
	client := ts.anthropicClient()
	for _, tc := range []struct {
		version, field, value string
		refused               bool
	}{
		{"2026-10-21", "temperature", "1", true},
		{"2026-10-21", "top_p", "0.5", true},
		{"2026-10-21", "top_k", "5", true},
		{"2023-06-01", "temperature", "0.5", false},
		{"2023-06-01", "top_k", "5", false},
	} {
		p := claudeParams(16)
		var v any
		if err := json.Unmarshal([]byte(tc.value), &v); err != nil {
			t.Fatal(err)
		}
		_, err := client.Messages.New(testContext(t), p,
			anthropicoption.WithHeader("anthropic-version", tc.version), anthropicoption.WithJSONSet(tc.field, v))
		var apiErr *anthropic.Error
		switch {
		case tc.refused && (!errors.As(err, &apiErr) || apiErr.StatusCode != 400 ||
			!strings.Contains(apiErr.RawJSON(), tc.field+": Extra inputs are not permitted")):
			t.Errorf("%s on %s: %v; want 400 %s: Extra inputs are not permitted", tc.field, tc.version, err, tc.field)
		case !tc.refused && err != nil:
			t.Errorf("%s on %s: %v; want it taken", tc.field, tc.version, err)
		}
	}
}
