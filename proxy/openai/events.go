package openai

import (
	"bytes"

	"github.com/bytedance/sonic/ast"

	"github.com/tokenhub/tokenhub/internal/usd"
)

// Event is what a stream relay needs from one event of an upstream stream,
// whatever its protocol: the usage it reports, whether it ends what is
// billed, and the generated text it carries (the running estimate of output
// tokens, and what the budget cut-off weighs).
type Event struct {
	// Usage is the upstream's count for the whole stream, when HasUsage.
	Usage    usd.Tokens
	HasUsage bool
	// UsageOnly: a chat chunk with usage and no choices, the one OpenAI adds
	// for stream_options.include_usage.
	UsageOnly bool
	// Done: the protocol's end of the stream (chat's [DONE]; the Responses
	// API's response.completed, response.incomplete, response.failed).
	// Nothing after it is billed, so the relay settles before relaying it.
	Done bool
	// Created: the Responses API's response.created, which names the
	// response (ResponseID reads its id).
	Created bool
	// ContentBytes is the length in bytes of the generated text the event
	// carries.
	ContentBytes int
}

// ChatEvents reads the events of a chat or legacy completion stream.
type ChatEvents struct{}

// Read reads the data of one event.
func (ChatEvents) Read(data []byte) Event {
	var e Event
	if bytes.Equal(data, done) {
		e.Done = true
		return e
	}
	if used, ok := ChunkUsage(data); ok {
		e.Usage, e.HasUsage = used, true
		e.UsageOnly = IsUsageOnlyChunk(data)
	}
	e.ContentBytes = ContentBytes(data)
	return e
}

var done = []byte("[DONE]")

// ResponsesEvents reads the events of a Responses API stream, by the type
// field of their data (the event: line says the same, and SDKs read the data).
type ResponsesEvents struct{}

// Read reads the data of one event. Every event whose type ends in ".delta"
// carries generated text in its delta string (output text, refusals,
// reasoning, tool call arguments); the final event carries the response
// with its usage.
func (ResponsesEvents) Read(data []byte) Event {
	var e Event
	if !isObject(data) {
		return e
	}
	n := nodes.Get().(*ast.Node)
	defer release(n)
	js := b2s(data)
	typ, t := find(n, js, "type")
	if t != ast.V_STRING {
		return e
	}
	switch typ {
	case `"response.completed"`, `"response.incomplete"`, `"response.failed"`:
		e.Done = true
		e.Usage, e.HasUsage = ResponseUsage(data)
	case `"response.created"`:
		e.Created = true
	default:
		if len(typ) > len(`.delta"`) && typ[len(typ)-len(`.delta"`):] == `.delta"` {
			if d, t := find(n, js, "delta"); t == ast.V_STRING {
				e.ContentBytes = unquotedLen(d)
			}
		}
	}
	return e
}
