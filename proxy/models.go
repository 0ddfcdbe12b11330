package proxy

import (
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/keys"
)

// listModels answers GET /v1/models with the models the key's plan allows.
func (s *Server) listModels(ctx *fasthttp.RequestCtx) {
	_, plan, ok := s.authenticate(ctx)
	if !ok {
		return
	}
	b := append(make([]byte, 0, 256), `{"object":"list","data":[`...)
	first := true
	for _, m := range s.routing.Load().models.sorted {
		if !allows(plan, m.name) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendModel(b, m)
	}
	b = append(b, "]}"...)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(b)
}

// getModel answers GET /v1/models/{model}; a model outside the plan is
// reported as missing, as OpenAI does for models a key cannot use. The id is
// percent-decoded: every SDK escapes it as a path segment, so a Hugging
// Face-style id arrives as meta-llama%2FLlama-3.1-8B. The route takes the
// rest of the path, so the same id written with a bare slash (curl) finds
// it too.
func (s *Server) getModel(ctx *fasthttp.RequestCtx) {
	_, plan, ok := s.authenticate(ctx)
	if !ok {
		return
	}
	raw, _ := ctx.UserValue("model").(string)
	var buf [maxModelID]byte
	name, ok := unescapePathSegment(buf[:0], raw)
	if !ok {
		writeError(ctx, errModelIDEscape, methodAndPath(ctx))
		return
	}
	m := s.routing.Load().models.lookup(name)
	if m == nil || !plan.Allows(name) {
		writeError(ctx, errModelNotFound, name)
		return
	}
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(appendModel(nil, m))
}

// maxModelID is the decoded id length getModel decodes on the stack; a
// longer one is decoded on the heap (and names no model anyone configured).
const maxModelID = 256

var errModelIDEscape = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "model", code: "invalid_url",
	message: "Invalid URL: the model id has a malformed percent-escape ('%' must be followed by two hex digits): "}

// unescapePathSegment appends the percent-decoded raw to dst, as RFC 3986
// decodes a path segment ('+' stays '+'); ok is false for a '%' not followed
// by two hex digits.
func unescapePathSegment(dst []byte, raw string) (_ []byte, ok bool) {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '%' {
			dst = append(dst, c)
			continue
		}
		if i+2 >= len(raw) {
			return nil, false
		}
		hi, okHi := unhex(raw[i+1])
		lo, okLo := unhex(raw[i+2])
		if !okHi || !okLo {
			return nil, false
		}
		dst = append(dst, hi<<4|lo)
		i += 2
	}
	return dst, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func allows(p *keys.Plan, model string) bool { return p.Allows([]byte(model)) }

func appendModel(b []byte, m *model) []byte {
	b = append(b, `{"id":`...)
	b = appendQuoted(b, m.name)
	b = append(b, `,"object":"model","created":`...)
	b = strconv.AppendInt(b, m.created, 10)
	b = append(b, `,"owned_by":`...)
	b = appendQuoted(b, m.ownedBy)
	return append(b, '}')
}
