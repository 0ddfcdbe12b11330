package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/bytedance/sonic"
)

// ResponseOptions are what a chat completion says that a Messages answer
// does not.
type ResponseOptions struct {
	// Model is the model name the client asked for (the route's alias),
	// written as the completion's model.
	Model string
	// Created is the completion's creation time in Unix seconds (the
	// caller's clock: translation is pure).
	Created int64
}

// ErrNotMessage: an upstream's 2xx answer is not a Messages response.
var ErrNotMessage = errors.New("anthropic: the answer is not a Messages response")

type messageResponse struct {
	ID         string         `json:"id"`
	Type       string         `json:"type"`
	Content    []contentBlock `json:"content"`
	StopReason *string        `json:"stop_reason"`
	Usage      *Usage         `json:"usage"`
}

type contentBlock struct {
	Type  string          `json:"type"`
	Text  string          `json:"text"`
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// FinishReason maps an Anthropic stop_reason to a chat finish_reason:
// end_turn, stop_sequence and pause_turn (a server tool's long turn
// paused: the answer is complete as far as it goes) -> stop; max_tokens
// and model_context_window_exceeded -> length; tool_use -> tool_calls;
// refusal (the model declined, streaming classifiers) -> content_filter.
// An unknown reason reads as stop.
func FinishReason(stopReason string) string {
	switch stopReason {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	}
	return "stop"
}

// MessageToChat appends to dst the chat completion for an Anthropic
// Messages response body, and returns it with the answer's usage. Text
// blocks are joined into message.content; tool_use blocks become
// tool_calls (input re-encoded as the arguments string, ids kept);
// thinking and redacted_thinking blocks are dropped (the translated
// request never asks for thinking, and chat has no standard field for it);
// other blocks (server tools' results) are dropped too. It runs once per
// buffered answer.
func MessageToChat(dst, body []byte, opts ResponseOptions) ([]byte, Usage, error) {
	var m messageResponse
	if !sonic.Valid(body) {
		return dst, Usage{}, ErrNotMessage
	}
	if err := strict.Unmarshal(body, &m); err != nil || m.Type != "message" {
		return dst, Usage{}, ErrNotMessage
	}
	var u Usage
	if m.Usage != nil {
		u = m.Usage.clamped()
	}
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, m.ID)
	dst = append(dst, `,"object":"chat.completion","created":`...)
	dst = appendInt(dst, opts.Created)
	dst = append(dst, `,"model":`...)
	dst = appendString(dst, opts.Model)
	dst = append(dst, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
	var text []byte
	hasText := false
	for i := range m.Content {
		if m.Content[i].Type == "text" {
			hasText = true
			text = append(text, m.Content[i].Text...)
		}
	}
	if hasText {
		dst = appendString(dst, text)
	} else {
		dst = append(dst, "null"...)
	}
	calls := 0
	for i := range m.Content {
		b := &m.Content[i]
		if b.Type != "tool_use" {
			continue
		}
		if calls == 0 {
			dst = append(dst, `,"tool_calls":[`...)
		} else {
			dst = append(dst, ',')
		}
		calls++
		dst = append(dst, `{"id":`...)
		dst = appendString(dst, b.ID)
		dst = append(dst, `,"type":"function","function":{"name":`...)
		dst = appendString(dst, b.Name)
		dst = append(dst, `,"arguments":`...)
		input := b.Input
		if len(input) == 0 {
			input = json.RawMessage("{}")
		}
		dst = appendString(dst, compact(input))
		dst = append(dst, "}}"...)
	}
	if calls > 0 {
		dst = append(dst, ']')
	}
	dst = append(dst, `,"refusal":null},"logprobs":null,"finish_reason":`...)
	if m.StopReason == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '"')
		dst = append(dst, FinishReason(*m.StopReason)...)
		dst = append(dst, '"')
	}
	dst = append(dst, "}],"...)
	dst = u.appendChat(dst)
	return append(dst, '}'), u, nil
}

// compact returns raw JSON without insignificant whitespace, as OpenAI
// writes arguments; raw as it is if it cannot be compacted.
func compact(raw json.RawMessage) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, raw); err != nil {
		return raw
	}
	return out.Bytes()
}
