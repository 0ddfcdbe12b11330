package proxy

import (
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// What every upstream request carries, whatever protocol it speaks: the
// builders (buildUpstreamRequest, setAnthropicRequest, setUpstreamHeaders)
// start and end with these and add their protocol's headers between.

// startUpstreamPost starts req afresh as a POST of JSON to endpoint ep of u,
// with the gateway's own credentials (never the client's). The protocol's
// own headers follow, then endUpstreamHeaders.
func startUpstreamPost(req *fasthttp.Request, u *upstream.Upstream, ep upstream.Endpoint) {
	req.Reset()
	req.Header.SetMethodBytes(methodPost)
	req.SetRequestURIBytes(u.URI(ep))
	req.Header.SetContentTypeBytes(contentTypeJSON)
	setUpstreamAuth(req, u)
}

// setUpstreamAuth writes the gateway's credentials for u: a bearer token,
// or an anthropic upstream's x-api-key.
func setUpstreamAuth(req *fasthttp.Request, u *upstream.Upstream) {
	if name, auth := u.Auth(); auth != nil {
		req.Header.SetCanonical(name, auth)
	}
}

// endUpstreamHeaders writes what every upstream request ends with: the
// request's id, and the upstream's configured headers, last so that they
// stand over the gateway's own.
func endUpstreamHeaders(req *fasthttp.Request, ctx *fasthttp.RequestCtx, u *upstream.Upstream) {
	req.Header.SetCanonical(headerXRequestID, ctx.Response.Header.Peek(headerRequestID))
	for _, h := range u.Headers() {
		req.Header.SetBytesKV(h[0], h[1])
	}
}
