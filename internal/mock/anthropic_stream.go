package mock

import (
	"bufio"
	"net"
	"strconv"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// anthropicEvent is one server-sent event of a Messages stream, rendered in
// anthropicCall.out, which it ends at.
type anthropicEvent struct {
	end  int
	kind eventKind
}

type eventKind uint8

const (
	eventOther  eventKind = iota
	eventDelta            // a content_block_delta: paced, counted for the cut options
	eventFinish           // message_delta: paced like a delta
)

var emptyObject = []byte("{}")

// toolInputPiece is the most bytes of a tool's input one input_json_delta
// carries; Anthropic, too, streams the input in small pieces.
const toolInputPiece = 12

// startAnthropicStream answers with Anthropic's event sequence: message_start
// (input and cache usage, output_tokens 1), content_block_start, ping, one
// content_block_delta per word (or per piece of a tool's input JSON),
// content_block_stop, message_delta (stop reason, cumulative usage) and
// message_stop. Every event is rendered here, while the request body is still
// there; fasthttp's stream goroutine (or the hijacked connection, when the
// stream is to be cut) only writes them, paced.
func (s *Server) startAnthropicStream(ctx *fasthttp.RequestCtx, call *anthropicCall, set *settings, a *anthropicAnswer, u anthropicUsage) {
	r := &call.req
	call.latency, call.interval, call.failAfter = set.latency, set.interval, set.failAfter
	call.errAfter = s.opts.Anthropic.StreamErrorAfter
	call.events = call.events[:0]
	b := call.out[:0]

	b = append(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"...)
	b = s.appendMessageHead(b, r.model)
	b = append(b, `],"stop_reason":null,"stop_sequence":null,"usage":`...)
	start := u
	start.output = min(1, u.output)
	b = appendAnthropicUsage(b, start)
	b = append(b, '}') // the message
	b = call.endEvent(b, eventOther)

	switch {
	case a.tool >= 0:
		b = append(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"...)
		b = s.appendToolUseBlock(b, r.tools[a.tool].name, emptyObject)
		b = call.endEvent(b, eventOther)
		b = call.appendPing(b)
		// Anthropic opens a tool's input with an empty piece.
		b = call.appendInputDelta(b, nil)
		for in := call.toolInput; len(in) > 0; {
			n := min(toolInputPiece, len(in))
			for n < len(in) && !utf8.RuneStart(in[n]) {
				n++ // never split a character
			}
			b = call.appendInputDelta(b, in[:n])
			in = in[n:]
		}
		b = call.appendBlockStop(b)
	case a.words > 0:
		b = append(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"...)
		b = appendTextBlock(b, 0)
		b = call.endEvent(b, eventOther)
		b = call.appendPing(b)
		for k := range a.words {
			b = append(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\""...)
			b = append(b, words[k%len(words)]...)
			b = append(b, `"}`...)
			b = call.endEvent(b, eventDelta)
		}
		b = call.appendBlockStop(b)
	default:
		b = call.appendPing(b)
	}

	// The usage of message_delta is cumulative: input and cache counts are
	// repeated, output_tokens is the whole answer's. A gateway that adds
	// them to message_start's bills the input twice.
	b = append(b, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{"...)
	b = appendStop(b, a)
	b = append(b, `},"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(u.input), 10)
	b = append(b, `,"cache_creation_input_tokens":`...)
	b = strconv.AppendInt(b, int64(u.cacheCreation), 10)
	b = append(b, `,"cache_read_input_tokens":`...)
	b = strconv.AppendInt(b, int64(u.cacheRead), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(u.output), 10)
	b = append(b, '}')
	b = call.endEvent(b, eventFinish)
	b = append(b, "event: message_stop\ndata: {\"type\":\"message_stop\""...)
	b = call.endEvent(b, eventOther)
	call.out = b

	var id [32]byte
	requestID := s.appendID(id[:0], "req_mock")
	call.errEvent = append(call.errEvent[:0], "event: error\ndata: "...)
	call.errEvent = s.appendAnthropicError(call.errEvent, anthropicOverloaded, []byte("Overloaded"), nil)
	call.errEvent = append(call.errEvent, "\n\n"...)

	if call.failAfter > 0 {
		// As for OpenAI streams: a stream that must die mid-body takes over
		// the connection and writes HTTP itself.
		head := append(call.head[:0], "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\nrequest-id: "...)
		head = append(head, requestID...)
		call.head = append(head, "\r\nTransfer-Encoding: chunked\r\n\r\n"...)
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) {
			call.run(&chunkedConn{conn: c, head: call.head})
			s.putAnthropicCall(call)
		})
		return
	}
	ctx.SetContentType("text/event-stream; charset=utf-8")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.SetBytesV("request-id", requestID)
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		call.run(flushWriter{w})
		s.putAnthropicCall(call)
	})
}

// endEvent closes the event being rendered in b (its data's JSON object and
// the blank line) and records it.
func (call *anthropicCall) endEvent(b []byte, kind eventKind) []byte {
	b = append(b, "}\n\n"...)
	call.events = append(call.events, anthropicEvent{end: len(b), kind: kind})
	return b
}

// appendPing appends the ping Anthropic sends after the first block starts,
// spaced as Anthropic spaces it.
func (call *anthropicCall) appendPing(b []byte) []byte {
	b = append(b, "event: ping\ndata: {\"type\": \"ping\""...)
	return call.endEvent(b, eventOther)
}

func (call *anthropicCall) appendInputDelta(b, piece []byte) []byte {
	b = append(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\""...)
	b = appendEscaped(b, piece)
	b = append(b, `"}`...)
	return call.endEvent(b, eventDelta)
}

func (call *anthropicCall) appendBlockStop(b []byte) []byte {
	b = append(b, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0"...)
	return call.endEvent(b, eventOther)
}

// run writes the stream's events, paced: Latency before the first, the
// interval before each delta after the first and before message_delta. It
// ends early when the client goes away, and where FailAfterChunks cuts the
// connection or StreamErrorAfter sends the error event instead of the rest.
func (call *anthropicCall) run(w eventWriter) {
	sleep(call.latency)
	deltas, start := 0, 0
	for _, ev := range call.events {
		switch ev.kind {
		case eventDelta, eventFinish:
			if call.failAfter > 0 && (ev.kind == eventFinish || deltas == call.failAfter) {
				return
			}
			if call.errAfter > 0 && (ev.kind == eventFinish || deltas == call.errAfter) {
				_ = w.writeEvent(call.errEvent)
				return
			}
			if deltas > 0 || ev.kind == eventFinish {
				sleep(call.interval)
			}
			deltas++
		}
		if w.writeEvent(call.out[start:ev.end]) != nil {
			return
		}
		start = ev.end
	}
}
