package mock

import (
	"bytes"

	"github.com/bytedance/sonic"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
)

// toolChoice is a Messages request's tool_choice.type.
type toolChoice uint8

const (
	choiceAuto toolChoice = iota
	choiceAny
	choiceTool
	choiceNone
)

// role is a message's role.
type role uint8

const (
	roleUser role = iota + 1
	roleAssistant
	roleSystem
)

// span is where a value lies in the request body.
type span struct{ start, end int }

// stopSequence is one of a request's stop_sequences.
type stopSequence struct {
	literal []byte // the JSON string literal, echoed as is
	text    []byte // decoded
}

// anthropicTool is one entry of a request's tools.
type anthropicTool struct {
	name   []byte // decoded
	schema int    // where input_schema starts in the body; -1 when absent
}

// messagesRequest holds what the mock reads from a Messages (or
// count_tokens) body. Byte slices point into the body or into arena, and are
// valid only while the handler runs.
type messagesRequest struct {
	model      []byte // the model's JSON string literal, quotes included, echoed as is
	modelName  []byte // decoded
	maxTokens  int
	stream     bool
	messages   int // how many messages
	inputBytes int // text bytes the input token estimate counts
	stops      []stopSequence
	tools      []anthropicTool
	choice     toolChoice
	choiceName []byte
	// The last message: its role, the text literals of its text blocks (where
	// a tool's name is looked for) and whether it carries tool results.
	lastRole      role
	lastText      []span
	lastHasResult bool
	// tool_use ids of the previous and the current message, decoded, and
	// whether each found its tool_result.
	prevIDs, curIDs         [][]byte
	prevMatched, curMatched []bool
	// sampling is the first sampling parameter the body holds (temperature,
	// top_p or top_k), which API version 2026-10-21 refuses; nil if none.
	sampling *anthropicError
	// failure is the message error parse returns a pointer to, so that
	// answering one does not allocate.
	failure messageError
	// arena holds decoded strings. It is sized to the body first, which no
	// set of decoded literals can exceed, so it never moves while slices
	// point into it.
	arena []byte
}

// anthropicInputTokens estimates a request's input tokens as the OpenAI
// mock does a chat's: ceil(text bytes / 4) + 3 per message. Text bytes are
// those of the system prompt, of text blocks, of tool results' text and of
// tool_use inputs, plus each tool definition's JSON.
func (r *messagesRequest) inputTokens() int {
	return (r.inputBytes+3)/4 + 3*r.messages
}

// reset empties r for the next body, keeping its buffers.
func (r *messagesRequest) reset(bodyLen int) {
	arena := r.arena[:0]
	if cap(arena) < bodyLen {
		arena = make([]byte, 0, bodyLen)
	}
	*r = messagesRequest{
		stops:       r.stops[:0],
		tools:       r.tools[:0],
		lastText:    r.lastText[:0],
		prevIDs:     r.prevIDs[:0],
		curIDs:      r.curIDs[:0],
		prevMatched: r.prevMatched[:0],
		curMatched:  r.curMatched[:0],
		arena:       arena,
	}
}

// fail records me as the request's error and returns it.
func (r *messagesRequest) fail(me messageError) *messageError {
	r.failure = me
	return &r.failure
}

// decode returns the contents of the string literal lit with its escapes
// decoded: lit itself, unquoted, when it has none.
func (r *messagesRequest) decode(lit []byte) []byte {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	start := len(r.arena)
	out, ok := jsonscan.AppendUnescaped(r.arena, lit)
	if !ok || cap(out) != cap(r.arena) {
		return inner // cannot happen for valid JSON; never let the arena move
	}
	r.arena = out
	return out[start:]
}

// Limits that keep a hostile body from making the mock hold unbounded state.
const (
	maxStopSequences = 64
	maxTools         = 256
	maxToolUses      = 256
	maxTextSpans     = 256
)

// parse reads a Messages body (countTokens: a count_tokens body, which has no
// max_tokens). It returns the error to answer, or nil. As in Anthropic's
// server, which is written in Python, the last of repeated keys wins: every
// value is located first and read once the whole object has been seen, so a
// bad value that a later one replaces is never looked at.
func (r *messagesRequest) parse(body []byte, countTokens bool) (*anthropicError, *messageError) {
	r.reset(len(body))
	if !sonic.Valid(body) {
		return errAnthropicMalformedJSON, nil
	}
	i := jsonscan.SkipSpace(body, 0)
	if body[i] != '{' {
		return errAnthropicNotObject, nil
	}
	model, maxTokens, stream, messages, system, stops, tools, choice := -1, -1, -1, -1, -1, -1, -1, -1
	m := newMembers(body, i)
	for {
		key, ok := m.next()
		if !ok {
			break
		}
		at := m.val
		switch string(key) {
		case "model":
			model = at
		case "max_tokens":
			maxTokens = at
		case "stream":
			stream = at
		case "messages":
			messages = at
		case "system":
			system = at
		case "stop_sequences":
			stops = at
		case "tools":
			tools = at
		case "tool_choice":
			choice = at
		case "temperature", "top_p", "top_k":
			if r.sampling == nil {
				r.sampling = errAnthropicSampling[string(key)]
			}
		}
	}

	if model < 0 {
		return errAnthropicNoModel, nil
	}
	if v := valueAt(body, model); v[0] != '"' || len(v) == 2 {
		return errAnthropicModelType, nil
	} else {
		r.model, r.modelName = v, r.decode(v)
	}
	if !countTokens {
		if maxTokens < 0 {
			return errAnthropicNoMaxTokens, nil
		}
		n, ok := parseInt(valueAt(body, maxTokens))
		if !ok {
			return errAnthropicMaxTokensType, nil
		}
		if n < 0 {
			return errAnthropicMaxTokensRange, nil
		}
		r.maxTokens = n
		if stream >= 0 {
			switch string(valueAt(body, stream)) {
			case "true":
				r.stream = true
			case "false", "null":
			default:
				return errAnthropicStreamType, nil
			}
		}
	}
	if messages < 0 {
		return errAnthropicNoMessages, nil
	}
	if system >= 0 {
		if e := r.parseSystem(body, system); e != nil {
			return e, nil
		}
	}
	if stops >= 0 && !countTokens {
		if e := r.parseStops(body, stops); e != nil {
			return e, nil
		}
	}
	if tools >= 0 {
		if e := r.parseTools(body, tools); e != nil {
			return e, nil
		}
	}
	if choice >= 0 {
		if e := r.parseToolChoice(body, choice); e != nil {
			return e, nil
		}
	}
	return r.parseMessages(body, messages)
}

func valueAt(body []byte, at int) []byte {
	return body[at:jsonscan.SkipValue(body, at)]
}

// parseSystem reads the top-level system prompt: a string or text blocks.
func (r *messagesRequest) parseSystem(body []byte, at int) *anthropicError {
	switch body[at] {
	case 'n':
		return nil
	case '"':
		r.inputBytes += len(valueAt(body, at)) - 2
		return nil
	case '[':
	default:
		return errAnthropicSystemType
	}
	els := newElements(body, at)
	for {
		block, ok := els.next()
		if !ok {
			return nil
		}
		typ, text := blockTypeAndText(body, block)
		if string(typ) != `"text"` || text == nil || text[0] != '"' {
			return errAnthropicSystemType
		}
		r.inputBytes += len(text) - 2
	}
}

// blockTypeAndText returns the raw type and text values of the content block
// at body[at], the last of each when repeated; nil for one that is absent.
func blockTypeAndText(body []byte, at int) (typ, text []byte) {
	fields := newMembers(body, at)
	for {
		k, ok := fields.next()
		if !ok {
			return typ, text
		}
		switch string(k) {
		case "type":
			typ = fields.value()
		case "text":
			text = fields.value()
		}
	}
}

func (r *messagesRequest) parseStops(body []byte, at int) *anthropicError {
	if body[at] == 'n' {
		return nil
	}
	if body[at] != '[' {
		return errAnthropicStopsType
	}
	els := newElements(body, at)
	for {
		el, ok := els.next()
		if !ok {
			return nil
		}
		v := els.value()
		if body[el] != '"' {
			return errAnthropicStopsType
		}
		if len(v) > 2 && len(r.stops) < maxStopSequences {
			r.stops = append(r.stops, stopSequence{literal: v, text: r.decode(v)})
		}
	}
}

func (r *messagesRequest) parseTools(body []byte, at int) *anthropicError {
	if body[at] == 'n' {
		return nil
	}
	if body[at] != '[' {
		return errAnthropicToolsType
	}
	els := newElements(body, at)
	for {
		el, ok := els.next()
		if !ok {
			return nil
		}
		if body[el] != '{' {
			return errAnthropicToolsType
		}
		tool := anthropicTool{schema: -1}
		var name []byte
		fields := newMembers(body, el)
		for {
			k, ok := fields.next()
			if !ok {
				break
			}
			switch string(k) {
			case "name":
				name = fields.value()
			case "input_schema":
				tool.schema = fields.val
			}
		}
		end := fields.end()
		els.consumed(end)
		if name == nil || name[0] != '"' || len(name) == 2 {
			return errAnthropicToolName
		}
		tool.name = r.decode(name)
		r.inputBytes += end - el
		if len(r.tools) < maxTools {
			r.tools = append(r.tools, tool)
		}
	}
}

func (r *messagesRequest) parseToolChoice(body []byte, at int) *anthropicError {
	if body[at] == 'n' {
		return nil
	}
	var typ, name []byte
	fields := newMembers(body, at)
	for {
		k, ok := fields.next()
		if !ok {
			break
		}
		switch string(k) {
		case "type":
			typ = fields.value()
		case "name":
			name = fields.value()
		}
	}
	switch string(typ) {
	case `"auto"`:
		r.choice = choiceAuto
	case `"any"`:
		r.choice = choiceAny
	case `"none"`:
		r.choice = choiceNone
	case `"tool"`:
		if name == nil || name[0] != '"' {
			return errAnthropicToolChoiceName
		}
		r.choice, r.choiceName = choiceTool, r.decode(name)
	default:
		return errAnthropicToolChoice
	}
	return nil
}

// parseMessages checks the messages array at body[at] as Anthropic does:
// roles, non-empty content, tool_use only from the assistant and tool_result
// only from the user, each tool_result answering a tool_use of the message
// right before, and each tool_use answered in the message right after.
func (r *messagesRequest) parseMessages(body []byte, at int) (*anthropicError, *messageError) {
	if body[at] != '[' {
		return errAnthropicMessagesType, nil
	}
	els := newElements(body, at)
	for i := 0; ; i++ {
		msg, ok := els.next()
		if !ok {
			break
		}
		last := jsonscan.SkipSpace(body, jsonscan.SkipValue(body, msg))
		isLast := last < len(body) && body[last] == ']'
		if body[msg] != '{' {
			return nil, r.fail(messageError{e: errAnthropicMessageType, message: i, block: -1})
		}
		var roleV []byte
		content := -1
		fields := newMembers(body, msg)
		for {
			k, ok := fields.next()
			if !ok {
				break
			}
			switch string(k) {
			case "role":
				roleV = fields.value()
			case "content":
				content = fields.val
			}
		}
		els.consumed(fields.end())

		var rl role
		switch string(roleV) {
		case `"user"`:
			rl = roleUser
		case `"assistant"`:
			rl = roleAssistant
		case `"system"`:
			rl = roleSystem
		default:
			return nil, r.fail(messageError{e: errAnthropicRole, message: i, block: -1})
		}
		if content < 0 {
			return nil, r.fail(messageError{e: errAnthropicContentType, message: i, block: -1})
		}
		// The previous message's tool_use ids become the ones this message's
		// tool_results may answer; only an assistant message has any.
		r.prevIDs, r.curIDs = r.curIDs, r.prevIDs[:0]
		r.prevMatched, r.curMatched = r.curMatched, r.prevMatched[:0]
		r.lastText, r.lastHasResult = r.lastText[:0], false
		if me := r.parseContent(body, content, i, rl, isLast); me != nil {
			return nil, me
		}
		for k, matched := range r.prevMatched {
			if !matched {
				return nil, r.fail(messageError{e: errAnthropicMissingResult, message: i - 1, block: -1, id: r.prevIDs[k]})
			}
		}
		r.messages++
		r.lastRole = rl
	}
	if r.messages == 0 {
		return errAnthropicEmptyMessages, nil
	}
	return nil, nil
}

// parseContent checks message i's content at body[at].
func (r *messagesRequest) parseContent(body []byte, at, i int, rl role, isLast bool) *messageError {
	emptyAllowed := isLast && rl == roleAssistant
	switch body[at] {
	case '"':
		v := valueAt(body, at)
		if len(v) == 2 && !emptyAllowed {
			return r.fail(messageError{e: errAnthropicEmptyContent, message: i, block: -1})
		}
		r.inputBytes += len(v) - 2
		r.lastText = append(r.lastText, span{at, at + len(v)})
		return nil
	case '[':
	default:
		return r.fail(messageError{e: errAnthropicContentType, message: i, block: -1})
	}
	blocks := newElements(body, at)
	j := 0
	for ; ; j++ {
		block, ok := blocks.next()
		if !ok {
			break
		}
		if body[block] != '{' {
			return r.fail(messageError{e: errAnthropicBlockType, message: i, block: j})
		}
		var typ, text, id, name, useID []byte
		input, result, textAt := -1, -1, -1
		fields := newMembers(body, block)
		for {
			k, ok := fields.next()
			if !ok {
				break
			}
			switch string(k) {
			case "type":
				typ = fields.value()
			case "text":
				textAt = fields.val
				text = fields.value()
			case "id":
				id = fields.value()
			case "name":
				name = fields.value()
			case "input":
				input = fields.val
			case "tool_use_id":
				useID = fields.value()
			case "content":
				result = fields.val
			}
		}
		blocks.consumed(fields.end())
		if typ == nil || typ[0] != '"' {
			return r.fail(messageError{e: errAnthropicBlockType, message: i, block: j})
		}
		if rl == roleSystem && string(typ) != `"text"` {
			return r.fail(messageError{e: errAnthropicSystemBlock, message: i, block: j})
		}
		switch string(typ) {
		case `"text"`:
			if text == nil || text[0] != '"' || len(text) == 2 {
				return r.fail(messageError{e: errAnthropicEmptyText, message: i, block: j})
			}
			r.inputBytes += len(text) - 2
			if len(r.lastText) < maxTextSpans {
				r.lastText = append(r.lastText, span{textAt, textAt + len(text)})
			}
		case `"tool_use"`:
			if rl != roleAssistant {
				return r.fail(messageError{e: errAnthropicToolUseRole, message: i, block: j})
			}
			if id == nil || id[0] != '"' || len(id) == 2 || name == nil || name[0] != '"' || len(name) == 2 {
				return r.fail(messageError{e: errAnthropicToolUseID, message: i, block: j})
			}
			if input >= 0 {
				r.inputBytes += len(valueAt(body, input))
			}
			if len(r.curIDs) < maxToolUses {
				r.curIDs = append(r.curIDs, r.decode(id))
				r.curMatched = append(r.curMatched, false)
			}
		case `"tool_result"`:
			if rl != roleUser {
				return r.fail(messageError{e: errAnthropicToolResultRole, message: i, block: j})
			}
			if useID == nil || useID[0] != '"' {
				return r.fail(messageError{e: errAnthropicToolUseID, message: i, block: j})
			}
			want := r.decode(useID)
			found := false
			for k, got := range r.prevIDs {
				if bytes.Equal(got, want) {
					r.prevMatched[k], found = true, true
				}
			}
			if !found {
				return r.fail(messageError{e: errAnthropicOrphanResult, message: i, block: j, id: want})
			}
			if result >= 0 {
				n, _ := contentLen(body, result)
				r.inputBytes += n
			}
			r.lastHasResult = true
		}
	}
	if j == 0 && !emptyAllowed {
		return r.fail(messageError{e: errAnthropicEmptyContent, message: i, block: -1})
	}
	return nil
}

// mentionedTool returns the index of the first tool whose name the last
// message, when it is the user's, mentions in its text; -1 when none.
func (r *messagesRequest) mentionedTool(body []byte) int {
	if r.lastRole != roleUser {
		return -1
	}
	for t, tool := range r.tools {
		for _, sp := range r.lastText {
			if bytes.Contains(body[sp.start:sp.end], tool.name) {
				return t
			}
		}
	}
	return -1
}
