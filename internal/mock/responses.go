package mock

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// minOutputTokens is the least max_output_tokens OpenAI takes.
const minOutputTokens = 16

// cacheMinTokens and cacheStep: OpenAI caches prompts of at least 1,024
// tokens, in steps of 128. The mock reports a prompt that long as cached
// that far, as if it had been sent before, so that cached_tokens is seen.
const (
	cacheMinTokens = 1024
	cacheStep      = 128
)

// response is one answer of the Responses API, as the mock builds it: what
// its body and its stream's events are made from. The byte slices point into
// the request's body, or into copies for a stream (written after the body
// is gone).
type response struct {
	seq                uint64 // names the response (resp_mock<hex>) and its message (msg_mock<hex>)
	created            int64
	model              []byte // JSON string literal
	instructions       []byte // JSON literal, nil for null
	previousResponseID []byte // JSON literal, nil for null
	maxOutput          int    // 0 for null
	store              bool
	words              int
	incomplete         bool // cut at max_output_tokens
	prompt, output     int  // the usage reported
}

// set fills rs for request r, answered with n words.
func (rs *response) set(s *Server, r *request, n int, finish string) {
	*rs = response{
		seq: s.ids.Add(1), created: time.Now().Unix(),
		model: r.model, instructions: r.instructions, previousResponseID: r.previousResponseID,
		maxOutput: r.maxTokens, store: r.store, words: n, incomplete: finish == finishLength,
		prompt: r.promptTokens, output: n + s.opts.OverReportTokens,
	}
}

// own copies what rs points into, so it outlives the request's body.
func (rs *response) own() {
	rs.model = bytes.Clone(rs.model)
	rs.instructions = bytes.Clone(rs.instructions)
	rs.previousResponseID = bytes.Clone(rs.previousResponseID)
}

func (rs *response) status() string {
	if rs.incomplete {
		return "incomplete"
	}
	return "completed"
}

func appendSeq(b []byte, seq uint64) []byte {
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[(seq>>uint(shift))&0xf])
	}
	return b
}

// appendObject appends the response object. done: the finished response,
// with its output and usage; else the one a stream starts with (status
// in_progress, no output, usage null).
func (rs *response) appendObject(b []byte, done bool) []byte {
	b = append(b, `{"id":"resp_mock`...)
	b = appendSeq(b, rs.seq)
	b = append(b, `","object":"response","created_at":`...)
	b = strconv.AppendInt(b, rs.created, 10)
	b = append(b, `,"status":"`...)
	if done {
		b = append(b, rs.status()...)
	} else {
		b = append(b, "in_progress"...)
	}
	b = append(b, `","background":false,"error":null,"incomplete_details":`...)
	if done && rs.incomplete {
		b = append(b, `{"reason":"max_output_tokens"}`...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"instructions":`...)
	b = appendLiteral(b, rs.instructions)
	b = append(b, `,"max_output_tokens":`...)
	if rs.maxOutput > 0 {
		b = strconv.AppendInt(b, int64(rs.maxOutput), 10)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"max_tool_calls":null,"model":`...)
	b = append(b, rs.model...)
	b = append(b, `,"output":[`...)
	if done {
		b = rs.appendMessage(b, true)
	}
	b = append(b, `],"parallel_tool_calls":true,"previous_response_id":`...)
	b = appendLiteral(b, rs.previousResponseID)
	b = append(b, `,"reasoning":{"effort":null,"summary":null},"service_tier":"default","store":`...)
	b = strconv.AppendBool(b, rs.store)
	b = append(b, `,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},"tool_choice":"auto","tools":[],"top_logprobs":0,"top_p":1.0,"truncation":"disabled","usage":`...)
	if done {
		b = rs.appendUsage(b)
	} else {
		b = append(b, "null"...)
	}
	return append(b, `,"user":null,"metadata":{}}`...)
}

func appendLiteral(b, v []byte) []byte {
	if v == nil {
		return append(b, "null"...)
	}
	return append(b, v...)
}

// appendUsage appends the usage object OpenAI sends with a response.
func (rs *response) appendUsage(b []byte) []byte {
	cached := 0
	if rs.prompt >= cacheMinTokens {
		cached = rs.prompt / cacheStep * cacheStep
	}
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(rs.prompt), 10)
	b = append(b, `,"input_tokens_details":{"cached_tokens":`...)
	b = strconv.AppendInt(b, int64(cached), 10)
	b = append(b, `},"output_tokens":`...)
	b = strconv.AppendInt(b, int64(rs.output), 10)
	b = append(b, `,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":`...)
	b = strconv.AppendInt(b, int64(rs.prompt+rs.output), 10)
	return append(b, '}')
}

// appendMessage appends the output message item: with its text when done,
// else empty and in progress (as response.output_item.added shows it).
func (rs *response) appendMessage(b []byte, done bool) []byte {
	b = append(b, `{"id":"msg_mock`...)
	b = appendSeq(b, rs.seq)
	b = append(b, `","type":"message","status":"`...)
	switch {
	case !done:
		b = append(b, "in_progress"...)
	default:
		b = append(b, rs.status()...)
	}
	b = append(b, `","content":[`...)
	if done {
		b = rs.appendPart(b, true)
	}
	return append(b, `],"role":"assistant"}`...)
}

// appendPart appends the output_text content part, with its text when done.
func (rs *response) appendPart(b []byte, done bool) []byte {
	b = append(b, `{"type":"output_text","annotations":[],"logprobs":[],"text":"`...)
	if done {
		b = appendWords(b, rs.words)
	}
	return append(b, `"}`...)
}

// writeResponse answers a buffered Responses API request of n words.
func (s *Server) writeResponse(ctx *fasthttp.RequestCtx, r *request, n int, finish string) {
	buf := s.getBuffer()
	var rs response
	rs.set(s, r, n, finish)
	s.stored.keep(&rs, r.input)
	b := rs.appendObject(buf.b[:0], true)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(b)
	buf.b = b
	s.putBuffer(buf)
}

// responseStream is a streamed response: its events, written after the
// handler returns as the chat stream's are.
type responseStream struct {
	response
	buf       []byte
	sequence  int
	latency   time.Duration
	interval  time.Duration
	failAfter int
}

// startResponseStream answers r with the Responses API's event stream:
// response.created, response.in_progress, output_item.added,
// content_part.added, an output_text.delta per word, output_text.done,
// content_part.done, output_item.done, then response.completed (or
// response.incomplete when max_output_tokens cut it) with the usage.
func (s *Server) startResponseStream(ctx *fasthttp.RequestCtx, r *request, set *settings, n int, finish string) {
	st := &responseStream{latency: set.latency, interval: set.interval, failAfter: set.failAfter}
	st.set(s, r, n, finish)
	s.stored.keep(&st.response, r.input)
	st.own()
	if st.failAfter > 0 {
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) { st.run(&chunkedConn{conn: c, head: sseResponseHead}) })
		return
	}
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) { st.run(flushWriter{w}) })
}

// event starts an event of type typ: its event: line, and its data up to
// and including the sequence number and a comma.
func (st *responseStream) event(typ string) []byte {
	b := append(st.buf[:0], "event: "...)
	b = append(b, typ...)
	b = append(b, "\ndata: {\"type\":\""...)
	b = append(b, typ...)
	b = append(b, `","sequence_number":`...)
	b = strconv.AppendInt(b, int64(st.sequence), 10)
	st.sequence++
	return append(b, ',')
}

// send ends the event in b and writes it; false when the client is gone.
func (st *responseStream) send(w eventWriter, b []byte) bool {
	b = append(b, "}\n\n"...)
	st.buf = b
	return w.writeEvent(b) == nil
}

// item appends the item and content indexes of the one message.
func (st *responseStream) item(b []byte) []byte {
	b = append(b, `"item_id":"msg_mock`...)
	b = appendSeq(b, st.seq)
	return append(b, `","output_index":0,"content_index":0`...)
}

func (st *responseStream) run(w eventWriter) {
	sleep(st.latency)
	b := st.event("response.created")
	b = append(b, `"response":`...)
	if !st.send(w, st.appendObject(b, false)) {
		return
	}
	b = st.event("response.in_progress")
	b = append(b, `"response":`...)
	if !st.send(w, st.appendObject(b, false)) {
		return
	}
	b = st.event("response.output_item.added")
	b = append(b, `"output_index":0,"item":`...)
	if !st.send(w, st.appendMessage(b, false)) {
		return
	}
	b = st.event("response.content_part.added")
	b = append(st.item(b), `,"part":`...)
	if !st.send(w, st.appendPart(b, false)) {
		return
	}
	for k := range st.words {
		if st.failAfter > 0 && k == st.failAfter {
			return
		}
		if k > 0 {
			sleep(st.interval)
		}
		b = st.event("response.output_text.delta")
		b = append(st.item(b), `,"delta":"`...)
		b = append(b, words[k%len(words)]...)
		if !st.send(w, append(b, `","logprobs":[]`...)) {
			return
		}
	}
	if st.failAfter > 0 {
		return
	}
	sleep(st.interval)
	b = st.event("response.output_text.done")
	b = append(st.item(b), `,"text":"`...)
	b = appendWords(b, st.words)
	if !st.send(w, append(b, `","logprobs":[]`...)) {
		return
	}
	b = st.event("response.content_part.done")
	b = append(st.item(b), `,"part":`...)
	if !st.send(w, st.appendPart(b, true)) {
		return
	}
	b = st.event("response.output_item.done")
	b = append(b, `"output_index":0,"item":`...)
	if !st.send(w, st.appendMessage(b, true)) {
		return
	}
	last := "response.completed"
	if st.incomplete {
		last = "response.incomplete"
	}
	b = st.event(last)
	b = append(b, `"response":`...)
	st.send(w, st.appendObject(b, true))
}
