package proxy

import (
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/proxy/openai"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// compact serves POST /v1/responses/compact, the Responses API's compaction
// of a long conversation: a model call, admitted, limited and billed from
// its usage as a create is, pinned to the route holding its
// previous_response_id, with no follow-ups of its own.
func (s *Server) compact(ctx *fasthttp.RequestCtx) { s.inference(ctx, upstream.Compact) }

var (
	errCompactStream = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "stream", code: "unknown_parameter",
		message: "Unknown parameter: 'stream'. A compaction is answered whole."}
	errCompactMaxOutput = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "max_output_tokens", code: "unknown_parameter",
		message: "Unknown parameter: 'max_output_tokens'. A compaction's output is bounded by the model alone."}
)

// compactable refuses the fields of a create that a compaction does not
// take and that would change what the gateway reads: OpenAI refuses them
// too, but admission must not weigh the output at a cap no upstream
// applies, nor relay as a stream what is answered whole. It answers the
// refusal itself.
func compactable(ctx *fasthttp.RequestCtx, f *openai.Request) bool {
	switch {
	case f.Stream:
		writeError(ctx, errCompactStream, nil)
		return false
	case f.MaxTokens >= 0:
		writeError(ctx, errCompactMaxOutput, nil)
		return false
	}
	return true
}
