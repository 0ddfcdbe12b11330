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
// reported as missing, as OpenAI does for models a key cannot use.
func (s *Server) getModel(ctx *fasthttp.RequestCtx) {
	_, plan, ok := s.authenticate(ctx)
	if !ok {
		return
	}
	name, _ := ctx.UserValue("model").(string)
	m := s.routing.Load().models.byName[name]
	if m == nil || !allows(plan, name) {
		writeError(ctx, errModelNotFound, []byte(name))
		return
	}
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(appendModel(nil, m))
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
