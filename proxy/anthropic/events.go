package anthropic

import (
	"github.com/bytedance/sonic"
	"github.com/bytedance/sonic/ast"
)

// EventKind is the type of a Messages stream event, as far as billing a
// passed-through stream cares.
type EventKind uint8

// The kinds of event ReadEvent tells apart; every other type (ping,
// content_block_start, content_block_stop, future ones) is EventOther.
const (
	EventOther EventKind = iota
	EventMessageStart
	EventMessageDelta
	EventMessageStop
	EventContentDelta
	EventError
)

// Event is what a relay of a native Messages stream needs of one event:
// its kind, the usage it carries (message_start's, message_delta's: feed
// Usage.Update with Usage and Has), and the length of the generated text a
// content_block_delta carries (text, tool input JSON, thinking), the
// running estimate of the output until message_delta's count.
type Event struct {
	Kind         EventKind
	Usage        Usage
	Has          UsageFields
	HasUsage     bool
	ContentBytes int
}

// ReadEvent reads the data of one event of a Messages stream, by its type
// field (the event: line says the same, and the SDKs read the data).
// Malformed data reads as EventOther. It allocates nothing.
func ReadEvent(data []byte) Event {
	var e Event
	if !isObject(data) || !sonic.Valid(data) {
		return e
	}
	n := nodes.Get().(*ast.Node)
	defer release(n)
	js := b2s(data)
	typ, _ := find(n, js, "type")
	switch typ {
	case `"content_block_delta"`:
		e.Kind = EventContentDelta
		dt, _ := find(n, js, "delta", "type")
		var field string
		switch dt {
		case `"text_delta"`:
			field = "text"
		case `"input_json_delta"`:
			field = "partial_json"
		case `"thinking_delta"`:
			field = "thinking"
		default:
			return e // signature_delta, citations_delta: no generated text
		}
		if raw, t := find(n, js, "delta", field); t == ast.V_STRING {
			e.ContentBytes = unquotedLen(raw)
		}
	case `"message_start"`:
		e.Kind = EventMessageStart
		e.Usage, e.Has, e.HasUsage = readUsage(n, js, "message", "usage")
	case `"message_delta"`:
		e.Kind = EventMessageDelta
		e.Usage, e.Has, e.HasUsage = readUsage(n, js, "usage")
	case `"message_stop"`:
		e.Kind = EventMessageStop
	case `"error"`:
		e.Kind = EventError
	}
	if e.HasUsage {
		e.Usage = e.Usage.clamped()
	}
	return e
}

// IsError reports whether body is an Anthropic error body,
// {"type":"error","error":{"type":"...",...}}, which the Anthropic SDKs read
// as a typed error and so may pass through as it is.
func IsError(body []byte) bool {
	if !isObject(body) || !sonic.Valid(body) {
		return false
	}
	n := nodes.Get().(*ast.Node)
	defer release(n)
	js := b2s(body)
	typ, _ := find(n, js, "type")
	_, t := find(n, js, "error", "type")
	return typ == `"error"` && t == ast.V_STRING
}

// unquotedLen is the length of a JSON string literal's contents, each
// escape counted as one byte (a \u escape of a non-ASCII rune is more in
// UTF-8, so this errs low by at most two bytes an escape).
func unquotedLen(q string) int {
	n := 0
	for i := 1; i < len(q)-1; i++ {
		if q[i] == '\\' {
			if i+1 < len(q)-1 && q[i+1] == 'u' {
				i += 5
			} else {
				i++
			}
		}
		n++
	}
	return n
}
