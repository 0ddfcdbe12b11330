package mock

import (
	"bytes"
	"strconv"
	"sync"

	"github.com/valyala/fasthttp"
)

// The Responses API's follow-ups, as OpenAI serves them for stored
// responses: GET /v1/responses/{id}, DELETE /v1/responses/{id},
// POST /v1/responses/{id}/cancel, GET /v1/responses/{id}/input_items, and
// POST /v1/responses/input_tokens; and POST /v1/responses/compact
// (compact.go).
//
// The mock keeps the last storedSlots responses created with store not
// false, in a ring indexed by the sequence number their id carries: memory
// is bounded (storedSlots times at most storedMaxBytes of what a response
// echoes) however many are created, any key holder being able to reach the
// built-in mock, and keeping one allocates nothing once the ring is warm.
// An older id, like an unknown one, answers 404 as OpenAI does for a
// response past its retention.
const (
	storedSlots = 256
	// storedMaxBytes bounds what a slot keeps of a response's request
	// (model, instructions, previous_response_id, input). A response that
	// echoes more is kept without its input, and its input_items answer an
	// error saying so.
	storedMaxBytes = 64 << 10
	// storedInitialBytes is what each slot holds from the start, so that
	// the usual request is kept without allocating.
	storedInitialBytes = 1 << 10
)

// storedResponse is one slot of the ring.
type storedResponse struct {
	response // byte slices point into buf
	input    []byte
	buf      []byte
	// used: the slot holds the response seq names; false once deleted.
	used bool
	// inputKept: input is the request's; false when it was over storedMaxBytes.
	inputKept bool
}

// storedRing is the mock's memory of stored responses.
type storedRing struct {
	mu    sync.Mutex
	slots [storedSlots]storedResponse
}

func (r *storedRing) init() {
	for i := range r.slots {
		r.slots[i].buf = make([]byte, 0, storedInitialBytes)
	}
}

// keep stores rs, with input (a JSON value, nil when absent), unless it was
// created with store false.
func (r *storedRing) keep(rs *response, input []byte) {
	head := len(rs.model) + len(rs.instructions) + len(rs.previousResponseID)
	if !rs.store || head > storedMaxBytes {
		return
	}
	inputKept := head+len(input) <= storedMaxBytes
	if !inputKept {
		input = nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	sl := &r.slots[rs.seq%storedSlots]
	sl.response, sl.used, sl.inputKept = *rs, true, inputKept
	if n := head + len(input); cap(sl.buf) < n {
		sl.buf = make([]byte, 0, n)
	}
	sl.buf = appendFields(sl.buf[:0], [...]*[]byte{&sl.model, &sl.instructions, &sl.previousResponseID, &sl.input},
		[...][]byte{rs.model, rs.instructions, rs.previousResponseID, input})
}

// appendFields appends each of from to b and points the matching to at its
// copy (nil stays nil). b must have room for them all, so that the copies
// stay where the pointers say.
func appendFields(b []byte, to [4]*[]byte, from [4][]byte) []byte {
	for i, v := range from {
		if v == nil {
			*to[i] = nil
			continue
		}
		start := len(b)
		b = append(b, v...)
		*to[i] = b[start:len(b):len(b)]
	}
	return b
}

// find returns a copy of the slot of the response id names, appended into
// dst's buffer, or false.
func (r *storedRing) find(id []byte, dst *storedResponse) bool {
	seq, ok := responseSeq(id)
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	sl := &r.slots[seq%storedSlots]
	if !sl.used || sl.seq != seq {
		return false
	}
	dst.response, dst.used, dst.inputKept = sl.response, true, sl.inputKept
	if n := len(sl.model) + len(sl.instructions) + len(sl.previousResponseID) + len(sl.input); cap(dst.buf) < n {
		dst.buf = make([]byte, 0, n)
	}
	dst.buf = appendFields(dst.buf[:0], [...]*[]byte{&dst.model, &dst.instructions, &dst.previousResponseID, &dst.input},
		[...][]byte{sl.model, sl.instructions, sl.previousResponseID, sl.input})
	return true
}

// forget drops the response id names; false when there is none.
func (r *storedRing) forget(id []byte) bool {
	seq, ok := responseSeq(id)
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	sl := &r.slots[seq%storedSlots]
	if !sl.used || sl.seq != seq {
		return false
	}
	sl.used = false
	return true
}

var responseIDPrefix = []byte("resp_mock")

// responseSeq reads the sequence number of a mock response id,
// resp_mock<16 hex digits>.
func responseSeq(id []byte) (uint64, bool) {
	if len(id) != len(responseIDPrefix)+16 || !bytes.HasPrefix(id, responseIDPrefix) {
		return 0, false
	}
	var seq uint64
	for _, c := range id[len(responseIDPrefix):] {
		switch {
		case c >= '0' && c <= '9':
			seq = seq<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			seq = seq<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return seq, true
}

var (
	pathResponses   = []byte("/v1/responses/")
	pathInputTokens = []byte("input_tokens")
	suffixCancel    = []byte("/cancel")
	suffixItems     = []byte("/input_items")
)

// isFollowUp reports whether path is one of the follow-ups' paths.
func isFollowUp(path []byte) bool {
	return bytes.HasPrefix(path, pathResponses) && len(path) > len(pathResponses)
}

// serveFollowUp answers a request on /v1/responses/<rest>.
func (s *Server) serveFollowUp(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	rest := path[len(pathResponses):]
	method := ctx.Method()
	isGet, isPost := string(method) == fasthttp.MethodGet, string(method) == fasthttp.MethodPost
	switch {
	case isPost && bytes.Equal(rest, pathInputTokens):
		s.countInputTokens(ctx)
	case isPost && bytes.Equal(rest, pathCompact):
		s.compact(ctx)
	case bytes.HasSuffix(rest, suffixCancel):
		if !isPost {
			writeUnknownURL(ctx, fasthttp.StatusMethodNotAllowed, method, path)
			return
		}
		s.cancelResponse(ctx, rest[:len(rest)-len(suffixCancel)])
	case bytes.HasSuffix(rest, suffixItems):
		if !isGet {
			writeUnknownURL(ctx, fasthttp.StatusMethodNotAllowed, method, path)
			return
		}
		s.listInputItems(ctx, rest[:len(rest)-len(suffixItems)])
	case bytes.IndexByte(rest, '/') >= 0:
		writeUnknownURL(ctx, fasthttp.StatusNotFound, method, path)
	case isGet:
		s.getResponse(ctx, rest)
	case string(method) == fasthttp.MethodDelete:
		s.deleteResponse(ctx, rest)
	default:
		writeUnknownURL(ctx, fasthttp.StatusMethodNotAllowed, method, path)
	}
}

// writeResponseNotFound answers 404 for id as OpenAI does.
func writeResponseNotFound(ctx *fasthttp.RequestCtx, id []byte) {
	var scratch [512]byte
	b := append(scratch[:0], `{"error":{"message":"Response with id '`...)
	b = appendEscaped(b, id[:min(len(id), 128)])
	b = append(b, `' not found.","type":"invalid_request_error","param":null,"code":null}}`...)
	writeErrorBody(ctx, fasthttp.StatusNotFound, b)
}

var (
	errNotBackground = badRequest("", "",
		"Only responses created with background=true can be cancelled.")
	errInputNotKept = badRequest("", "input_not_kept",
		"The mock keeps the input of a stored response only up to 64 KiB; this one's was larger.")
)

// lookup finds the stored response id names into a pooled slot, or answers
// 404 and returns nil. The caller puts the slot back.
func (s *Server) lookup(ctx *fasthttp.RequestCtx, id []byte) *storedResponse {
	sl := s.slots.Get().(*storedResponse)
	if !s.stored.find(id, sl) {
		s.slots.Put(sl)
		writeResponseNotFound(ctx, id)
		return nil
	}
	return sl
}

func (s *Server) getResponse(ctx *fasthttp.RequestCtx, id []byte) {
	sl := s.lookup(ctx, id)
	if sl == nil {
		return
	}
	defer s.slots.Put(sl)
	buf := s.getBuffer()
	b := sl.appendObject(buf.b[:0], true)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(b)
	buf.b = b
	s.putBuffer(buf)
}

func (s *Server) deleteResponse(ctx *fasthttp.RequestCtx, id []byte) {
	if !s.stored.forget(id) {
		writeResponseNotFound(ctx, id)
		return
	}
	var scratch [128]byte
	b := append(scratch[:0], `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","object":"response.deleted","deleted":true}`...)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(b)
}

// cancelResponse: only a background response can be cancelled, and the
// mock makes none, so a stored one answers OpenAI's 400.
func (s *Server) cancelResponse(ctx *fasthttp.RequestCtx, id []byte) {
	sl := s.lookup(ctx, id)
	if sl == nil {
		return
	}
	s.slots.Put(sl)
	writeError(ctx, errNotBackground)
}

// listInputItems answers the response's input as a list of items: a string
// input is one user message with that text; an array of items is listed as
// it was sent. Every item is on the one page.
func (s *Server) listInputItems(ctx *fasthttp.RequestCtx, id []byte) {
	sl := s.lookup(ctx, id)
	if sl == nil {
		return
	}
	defer s.slots.Put(sl)
	if !sl.inputKept {
		writeError(ctx, errInputNotKept)
		return
	}
	buf := s.getBuffer()
	b := append(buf.b[:0], `{"object":"list","data":`...)
	switch {
	case len(sl.input) > 0 && sl.input[0] == '"':
		b = append(b, `[{"id":"msg_mockin`...)
		b = appendSeq(b, sl.seq)
		b = append(b, `","type":"message","role":"user","status":"completed","content":[{"type":"input_text","text":`...)
		b = append(b, sl.input...)
		b = append(b, `}]}],"first_id":"msg_mockin`...)
		b = appendSeq(b, sl.seq)
		b = append(b, `","last_id":"msg_mockin`...)
		b = appendSeq(b, sl.seq)
		b = append(b, `"`...)
	case len(sl.input) > 0 && sl.input[0] == '[':
		b = append(b, sl.input...)
		b = append(b, `,"first_id":null,"last_id":null`...)
	default:
		b = append(b, `[],"first_id":null,"last_id":null`...)
	}
	b = append(b, `,"has_more":false}`...)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(b)
	buf.b = b
	s.putBuffer(buf)
}

// countInputTokens answers POST /v1/responses/input_tokens with the input
// tokens a create of the same body would report.
func (s *Server) countInputTokens(ctx *fasthttp.RequestCtx) {
	var r request
	if e := r.parse(ctx.PostBody(), epResponses, s.opts.EmbeddingDims); e != nil {
		writeError(ctx, e)
		return
	}
	var scratch [96]byte
	b := append(scratch[:0], `{"object":"response.input_tokens","input_tokens":`...)
	b = strconv.AppendInt(b, int64(r.promptTokens), 10)
	b = append(b, '}')
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(b)
}
