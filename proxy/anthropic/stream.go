package anthropic

import (
	"github.com/bytedance/sonic"
	"github.com/bytedance/sonic/ast"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
)

// StreamTranslator turns a Messages stream into a chat.completion.chunk
// stream, one Anthropic event at a time. It keeps the stream's usage as it
// goes (input counts from message_start, the cumulative output count from
// each message_delta), so a stream cut anywhere bills what was produced up
// to the cut: read Usage after the last event fed.
//
// One translator serves one stream; Reset readies it for the next, keeping
// its buffers, so that a pooled translator allocates nothing per event in
// steady state (TestAllocsStreamTranslate).
type StreamTranslator struct {
	model        []byte // the client's model name, as a JSON string literal
	created      int64
	includeUsage bool

	id      []byte // the message id, as a JSON string literal
	usage   Usage
	started bool  // message_start seen
	done    bool  // message_stop or error seen: nothing more is written
	tools   int64 // tool_use blocks started: the current call's chat index is tools-1
	inTool  bool  // the current content block is a tool_use
	finish  string

	scratch []byte // decoded text of the event being translated
}

// Reset readies t for a new stream answering a client that asked for
// model, at created (Unix seconds); includeUsage: the client asked for the
// usage chunk (RequestInfo.IncludeUsage).
func (t *StreamTranslator) Reset(model string, created int64, includeUsage bool) {
	*t = StreamTranslator{
		model:        appendString(t.model[:0], model),
		created:      created,
		includeUsage: includeUsage,
		id:           t.id[:0],
		scratch:      t.scratch[:0],
	}
}

// Usage is the stream's usage so far.
func (t *StreamTranslator) Usage() Usage { return t.usage }

// Done reports whether the stream has ended: message_stop (after which
// [DONE] was written) or an error event.
func (t *StreamTranslator) Done() bool { return t.done }

// FinishReason is the chat finish_reason of the stream's message_delta,
// "" before it.
func (t *StreamTranslator) FinishReason() string { return t.finish }

// Translate appends to dst the chat SSE events (each "data: ...\n\n") for
// one Anthropic event, name its event: field and data its data, and
// returns dst. When name is empty the data's type is read instead.
// Events it does not know (ping, content_block_stop, future types) and
// malformed data write nothing; every event after message_stop or error
// is ignored. An error event becomes an OpenAI-shaped error event,
// {"error":{"message","type","code"}}; the stream then ends, without
// [DONE], as OpenAI's do.
func (t *StreamTranslator) Translate(dst, name, data []byte) []byte {
	if t.done || !isObject(data) || !sonic.Valid(data) {
		return dst
	}
	n := nodes.Get().(*ast.Node)
	defer release(n)
	js := b2s(data)
	typ := b2s(name)
	if typ == "" {
		raw, tt := find(n, js, "type")
		if tt != ast.V_STRING {
			return dst
		}
		typ = raw[1 : len(raw)-1]
	}
	switch typ {
	case "message_start":
		return t.messageStart(dst, n, js)
	case "content_block_start":
		return t.blockStart(dst, n, js)
	case "content_block_delta":
		return t.blockDelta(dst, n, js)
	case "message_delta":
		return t.messageDelta(dst, n, js)
	case "message_stop":
		t.done = true
		if t.includeUsage {
			dst = t.openChunk(dst)
			dst = append(dst, `"choices":[],`...)
			dst = t.usage.appendChat(dst)
			dst = append(dst, "}\n\n"...)
		}
		return append(dst, "data: [DONE]\n\n"...)
	case "error":
		t.done = true
		return t.errorEvent(dst, n, js)
	}
	return dst
}

func (t *StreamTranslator) messageStart(dst []byte, n *ast.Node, js string) []byte {
	if t.started {
		return dst // a second message_start would restart the usage
	}
	t.started = true
	if raw, tt := find(n, js, "message", "id"); tt == ast.V_STRING {
		t.scratch, _ = jsonscan.AppendUnescaped(t.scratch[:0], s2b(raw))
		t.id = appendString(t.id[:0], t.scratch)
	} else {
		t.id = append(t.id[:0], `""`...)
	}
	if u, has, ok := readUsage(n, js, "message", "usage"); ok {
		t.usage.Update(u, has)
	}
	dst = t.openChunk(dst)
	dst = append(dst, `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`...)
	return append(dst, "\n\n"...)
}

func (t *StreamTranslator) blockStart(dst []byte, n *ast.Node, js string) []byte {
	typ, _ := find(n, js, "content_block", "type")
	t.inTool = typ == `"tool_use"`
	if !t.inTool {
		return dst
	}
	t.tools++
	dst = t.openDelta(dst)
	dst = append(dst, `"tool_calls":[{"index":`...)
	dst = appendInt(dst, t.tools-1)
	dst = append(dst, `,"id":`...)
	dst = t.appendStringAt(dst, n, js, "content_block", "id")
	dst = append(dst, `,"type":"function","function":{"name":`...)
	dst = t.appendStringAt(dst, n, js, "content_block", "name")
	dst = append(dst, `,"arguments":""}}]`...)
	return t.closeDelta(dst, "")
}

func (t *StreamTranslator) blockDelta(dst []byte, n *ast.Node, js string) []byte {
	typ, _ := find(n, js, "delta", "type")
	switch typ {
	case `"text_delta"`:
		dst = t.openDelta(dst)
		dst = append(dst, `"content":`...)
		dst = t.appendStringAt(dst, n, js, "delta", "text")
		return t.closeDelta(dst, "")
	case `"input_json_delta"`:
		if !t.inTool {
			return dst
		}
		if raw, _ := find(n, js, "delta", "partial_json"); raw == `""` {
			return dst // Anthropic opens each input with an empty delta
		}
		dst = t.openDelta(dst)
		dst = append(dst, `"tool_calls":[{"index":`...)
		dst = appendInt(dst, t.tools-1)
		dst = append(dst, `,"function":{"arguments":`...)
		dst = t.appendStringAt(dst, n, js, "delta", "partial_json")
		dst = append(dst, "}}]"...)
		return t.closeDelta(dst, "")
	}
	// thinking_delta, signature_delta, citations_delta: not translated.
	return dst
}

func (t *StreamTranslator) messageDelta(dst []byte, n *ast.Node, js string) []byte {
	if u, has, ok := readUsage(n, js, "usage"); ok {
		t.usage.Update(u, has)
	}
	raw, tt := find(n, js, "delta", "stop_reason")
	if tt != ast.V_STRING {
		return dst
	}
	t.scratch, _ = jsonscan.AppendUnescaped(t.scratch[:0], s2b(raw))
	t.finish = FinishReason(b2s(t.scratch))
	dst = t.openDelta(dst)
	return t.closeDelta(dst, t.finish)
}

// errorEvent writes an Anthropic error event's error as OpenAI's.
func (t *StreamTranslator) errorEvent(dst []byte, n *ast.Node, js string) []byte {
	dst = append(dst, `data: {"error":{"message":`...)
	dst = t.appendStringAt(dst, n, js, "error", "message")
	dst = append(dst, `,"type":`...)
	dst = t.appendStringAt(dst, n, js, "error", "type")
	dst = append(dst, `,"param":null,"code":`...)
	dst = t.appendStringAt(dst, n, js, "error", "type")
	return append(dst, "}}\n\n"...)
}

// appendStringAt appends the string at path in js, re-encoded (so that the
// output is valid JSON whatever its escapes), or "" when there is none.
func (t *StreamTranslator) appendStringAt(dst []byte, n *ast.Node, js string, path ...any) []byte {
	raw, tt := find(n, js, path...)
	if tt != ast.V_STRING {
		return append(dst, `""`...)
	}
	var ok bool
	if t.scratch, ok = jsonscan.AppendUnescaped(t.scratch[:0], s2b(raw)); !ok {
		return append(dst, `""`...)
	}
	return appendString(dst, t.scratch)
}

// openChunk writes the start of a chunk, up to its choices.
func (t *StreamTranslator) openChunk(dst []byte) []byte {
	dst = append(dst, `data: {"id":`...)
	if len(t.id) == 0 {
		dst = append(dst, `""`...)
	} else {
		dst = append(dst, t.id...)
	}
	dst = append(dst, `,"object":"chat.completion.chunk","created":`...)
	dst = appendInt(dst, t.created)
	dst = append(dst, `,"model":`...)
	if len(t.model) == 0 {
		return append(dst, `"",`...)
	}
	dst = append(dst, t.model...)
	return append(dst, ',')
}

func (t *StreamTranslator) openDelta(dst []byte) []byte {
	dst = t.openChunk(dst)
	return append(dst, `"choices":[{"index":0,"delta":{`...)
}

// closeDelta ends a chunk opened by openDelta, with finish as its
// finish_reason (null when "").
func (t *StreamTranslator) closeDelta(dst []byte, finish string) []byte {
	dst = append(dst, `},"logprobs":null,"finish_reason":`...)
	if finish == "" {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '"')
		dst = append(dst, finish...)
		dst = append(dst, '"')
	}
	return append(dst, "}]}\n\n"...)
}
