// Package proxy is tokenhub's HTTP side: the fasthttp server, routing, the
// OpenAI-compatible handlers, the upstream clients and the error contract.
package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/pprofhandler"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/dashboard"
	"github.com/tokenhub/tokenhub/internal/affinity"
	"github.com/tokenhub/tokenhub/internal/tracing"
	"github.com/tokenhub/tokenhub/keys"
	"github.com/tokenhub/tokenhub/limits"
)

// Options is what a Server is built from.
type Options struct {
	Config   *config.Config
	Registry *keys.Registry
	// Gate enforces rate limits and budgets and records usage.
	Gate *limits.Gate
	// AdminKey is the secret that authenticates the Keys and Plans APIs.
	AdminKey string
	Logger   *slog.Logger

	// Metrics, when not nil, are the series the Server serves; the node
	// makes them before the store so that they see every Valkey call.
	Metrics *Metrics

	// BaseContext is the parent of every store and gate call a request
	// makes; the node cancels it at the shutdown's cut (see
	// internal/node.Node.Base). Nil means context.Background().
	BaseContext context.Context
	// ResponseIDs remembers which upstream and key created each stored
	// response, for the Responses API's follow-ups. Nil: none is
	// remembered, and every follow-up answers 404.
	ResponseIDs affinity.Store
	// Traces exports a span per inference request; nil is tracing off.
	// The node owns it and shuts it down.
	Traces *tracing.Tracer
}

// Server is the gateway: it authenticates, checks plans and forwards.
type Server struct {
	registry *keys.Registry
	gate     *limits.Gate
	// base is Options.BaseContext: see callCtx.
	base context.Context
	// responseIDs: see Options.ResponseIDs and followups.go.
	responseIDs affinity.Store
	// routing holds the models and upstreams in force; a reload swaps it
	// whole, and each request loads it once.
	routing   atomic.Pointer[routing]
	adminHash [32]byte
	ids       *requestIDs
	router    *router.Router
	http      *fasthttp.Server
	// adminRouter and adminHTTP serve the admin routes on admin.listen;
	// both are nil when those routes share the main listener.
	adminRouter *router.Router
	adminHTTP   *fasthttp.Server
	// tls is the certificate both listeners serve; nil without TLS.
	tls *certificate
	log *slog.Logger
	// metrics are served on GET /metrics; access writes the access log (nil
	// when it is off).
	metrics *gatewayMetrics
	access  *accessLog
	// traces is Options.Traces.
	traces *tracing.Tracer

	// conns are the client connections of both listeners, for shutdown;
	// streams those a stream relay took over from fasthttp.
	conns    connSet
	streams  connSet
	draining atomic.Bool
	// storeLostAt is when the store was found unreachable, in unix
	// nanoseconds; 0 while it is reachable. See readyz.
	storeLostAt  atomic.Int64
	staleIfError time.Duration

	reload reloader

	// drains counts streams read on after their client left, to bill the
	// upstream's real usage; at most maxDrains at once, each for at most
	// drainTimeout.
	drains             atomic.Int64
	maxDrains          int64
	drainTimeout       time.Duration
	streamWriteTimeout time.Duration

	// bodies bounds the request body bytes held at once; maxBody is
	// max_body_bytes, chunkedBody what a chunked body reserves of bodies.
	bodies      bodyBudget
	maxBody     int64
	chunkedBody int64
}

// New builds a Server; it starts nothing until Serve.
func New(o Options) (*Server, error) {
	if o.Config == nil || o.Registry == nil || o.Gate == nil || o.AdminKey == "" {
		return nil, errors.New("proxy: Config, Registry, Gate and AdminKey are required")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	ids, err := newRequestIDs()
	if err != nil {
		return nil, err
	}
	cfg := o.Config
	if o.BaseContext == nil {
		o.BaseContext = context.Background()
	}
	s := &Server{
		registry:     o.Registry,
		gate:         o.Gate,
		base:         o.BaseContext,
		responseIDs:  o.ResponseIDs,
		traces:       o.Traces,
		adminHash:    sha256.Sum256([]byte(o.AdminKey)),
		ids:          ids,
		log:          log,
		staleIfError: cfg.Cache.StaleIfError,
		maxDrains:    int64(cfg.Server.MaxStreamDrains),
		drainTimeout: cfg.Server.StreamDrainTimeout,
		// A stream's client that takes nothing for this long is gone.
		streamWriteTimeout: cfg.Server.IdleTimeout,
		maxBody:            int64(cfg.MaxBodyBytes),
	}
	// A chunked body may grow fasthttp's buffer to max_body_bytes plus its
	// last chunk's CRLF, rounded up. The budget always fits one such body.
	s.chunkedBody = bodyCap(s.maxBody + 2)
	s.bodies.init(max(int64(cfg.Server.MaxBodyBytesInFlight), s.chunkedBody))
	if o.Metrics != nil {
		s.metrics = o.Metrics.gateway
	} else {
		s.metrics = newGatewayMetrics()
	}
	s.metrics.watchRegistry(o.Registry)
	s.access = newAccessLog(cfg.Log.Access, log, s.metrics.accessDropped.Inc)
	s.reload.init(cfg)
	r, err := newRouting(cfg, nil, time.Now().Unix())
	if err != nil {
		return nil, err
	}
	s.routing.Store(r)
	s.metrics.set.RegisterMetricsWriter(s.writeRouteMetrics)
	if cfg.TLS.Enabled() {
		if s.tls, err = newCertificate(cfg.TLS); err != nil {
			s.Close()
			return nil, err
		}
	}
	s.router, s.adminRouter = s.routes(cfg)
	if s.adminRouter == nil {
		s.http = s.newHTTPServer(cfg, s.Handler, s.admitBody(true, true))
	} else {
		s.http = s.newHTTPServer(cfg, s.Handler, s.admitBody(true, false))
		s.adminHTTP = s.newHTTPServer(cfg, s.adminHandler, s.admitBody(false, true))
	}
	return s, nil
}

func (s *Server) newHTTPServer(cfg *config.Config, h fasthttp.RequestHandler,
	headers func(*fasthttp.RequestHeader) fasthttp.RequestConfig) *fasthttp.Server {
	return &fasthttp.Server{
		Handler: h,
		// Refuses a body without a well-formed key, or without room in the
		// body budget, from its headers.
		HeaderReceived:               headers,
		ErrorHandler:                 s.serverError,
		ConnState:                    s.conns.track,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		MaxRequestBodySize:           int(cfg.MaxBodyBytes),
		ReadTimeout:                  cfg.Server.ReadTimeout,
		IdleTimeout:                  cfg.Server.IdleTimeout,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		// Streams take their connection over (see streamRelay) and hand it
		// back when they end.
		KeepHijackedConns: true,
		// Holds a request's headers (fasthttp's default size: an SDK's are
		// under 1 KiB). A stream gives its connection's buffer up, so each
		// stream costs one of these in garbage: the smaller the better.
		ReadBufferSize: 4 << 10,
		TCPKeepalive:   true,
		Logger:         fasthttpLogger{s.log},
		// Keeps the raw request out of fasthttp's error texts; fasthttpLogger
		// does not log those texts either, this is the second lock.
		SecureErrorLogMessage: true,
	}
}

// routes builds the two groups of routes: the public ones (inference,
// models, a key's own usage, health) and the admin ones (Keys and Plans
// APIs, reload, dashboard, metrics, profiler). With admin.listen empty both
// groups share one router and admin is nil; with it set, the admin group
// gets a router of its own, served only on that listener.
func (s *Server) routes(cfg *config.Config) (public, admin *router.Router) {
	public = s.newRouter()
	public.POST("/v1/chat/completions", s.chatCompletions)
	// The stored chat completions API, on every method: see
	// storedChatCompletions.
	public.GET("/v1/chat/completions", s.storedChatCompletions)
	public.ANY("/v1/chat/completions/{id}", s.storedChatCompletions)
	public.ANY("/v1/chat/completions/{id}/messages", s.storedChatCompletions)
	public.POST("/v1/completions", s.completions)
	public.POST("/v1/embeddings", s.embeddings)
	public.POST("/v1/responses", s.responses)
	public.POST("/v1/responses/input_tokens", s.inputTokens)
	public.POST("/v1/responses/compact", s.compact)
	public.GET("/v1/responses/{id}", s.getResponse)
	public.DELETE("/v1/responses/{id}", s.deleteResponse)
	public.POST("/v1/responses/{id}/cancel", s.cancelResponse)
	public.GET("/v1/responses/{id}/input_items", s.responseInputItems)
	public.POST("/v1/messages", s.messages)
	public.POST("/v1/messages/count_tokens", s.countTokens)
	public.GET("/v1/models", s.listModels)
	public.GET("/v1/models/{model:*}", s.getModel)
	public.GET("/healthz", healthz)
	public.GET("/readyz", s.readyz)

	r := public
	if cfg.Admin.Listen == "" {
		public.GET("/v1/keys/{id}/usage", s.keyUsage)
	} else {
		// The admin side lives only on admin.listen: here the admin key is
		// no key at all, as it is for inference.
		public.GET("/v1/keys/{id}/usage", s.refuseAdminKey(s.keyUsage))
		admin = s.newRouter()
		admin.GET("/healthz", healthz)
		admin.GET("/readyz", s.readyz)
		// The dashboard, served here, shows each key's usage.
		admin.GET("/v1/keys/{id}/usage", s.keyUsage)
		r = admin
	}
	r.POST("/v1/keys", s.admin(s.createKey))
	r.GET("/v1/keys", s.admin(s.listKeys))
	r.GET("/v1/keys/{id}", s.admin(s.getKey))
	r.PATCH("/v1/keys/{id}", s.admin(s.updateKey))
	r.DELETE("/v1/keys/{id}", s.admin(s.revokeKey))
	r.POST("/v1/keys/{id}/rotate", s.admin(s.rotateKey))
	r.GET("/v1/plans", s.admin(s.listPlans))
	r.GET("/v1/plans/{name}", s.admin(s.getPlan))
	r.PUT("/v1/plans/{name}", s.admin(s.putPlan))
	r.DELETE("/v1/plans/{name}", s.admin(s.deletePlan))
	r.POST("/admin/reload", s.admin(s.reloadHandler))
	r.GET("/admin/upstreams", s.admin(s.listUpstreams))

	// The operators' page: static files that call the admin API above from the browser.
	r.GET(dashboard.PathRoot, dashboard.Handler)
	r.GET(dashboard.PathRoot+"/{path:*}", dashboard.Handler)
	// The router takes "/dashboard/" for a trailing-slash variant of
	// "/dashboard" and would answer 404; the dashboard redirects it.
	r.NotFound = func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == dashboard.PathRoot+"/" {
			dashboard.Handler(ctx)
			return
		}
		unknownURL(ctx)
	}

	r.GET("/metrics", s.serveMetrics)

	if cfg.Admin.Pprof {
		// No admin key: pprof is off unless asked for, and belongs on a
		// private admin.listen (see config/example.yaml).
		r.GET("/debug/pprof/{path:*}", pprofhandler.PprofHandler)
	}
	return public, admin
}

func (s *Server) newRouter() *router.Router {
	r := router.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	r.HandleOPTIONS = false
	r.NotFound = unknownURL
	r.MethodNotAllowed = methodNotAllowed
	r.PanicHandler = s.panicked
	return r
}

// Handler serves one request: every answer, errors included, carries an
// x-request-id.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	s.ids.set(ctx)
	s.route(ctx, s.router)
	s.countOther(ctx)
}

// route serves a request on r, or answers 503 server_busy when the header
// hook refused its body for want of budget; then gives back what its body
// reserved (see admitBody). A handler that keeps the body past its return
// (a stream relay's upstream request) holds it outside the budget from then.
func (s *Server) route(ctx *fasthttp.RequestCtx, r *router.Router) {
	slot := bodySlotOf(ctx.Conn())
	switch {
	case slot != nil && slot.refused:
		slot.refused = false
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		writeError(ctx, errBodiesBusy, nil)
		ctx.SetConnectionClose()
		// The client may be sending the body still: the 503 must not be
		// lost to a reset (see lingerDrain).
		lingerDrain(ctx.Conn())
	case s.bodyFits(ctx):
		r.Handler(ctx)
	}
	if slot != nil {
		slot.check = keyCheck{}
		slot.anthropic = false
		slot.release()
	}
}

// admitBody returns fasthttp's HeaderReceived hook for a listener: a request
// with a body whose bearer token is neither a user key that authenticates
// (when user: known, unrevoked, unexpired, on a plan; Registry.Authenticate,
// from its cache or the store) nor the admin key (when admin) will be refused
// from its headers, so fasthttp is told it has no body and does not wait for
// one, and the connection is closed after the answer (its unread body must
// not be read as a next request). The handler answers the refusal (401, or
// 503 store_unavailable) from the hook's check, which the connection's slot
// keeps for it (see keyCheck): the key is looked up once per request.
//
// A body that passes reserves, from the node's body budget, what fasthttp
// will allocate to read it (bodyCap of its length; chunkedBody when
// chunked), before fasthttp allocates it; one that finds too little left is
// refused the same way and answered 503 server_busy (see route), never
// queued, so the bound never turns into a wait. The reservation is held in
// the connection's slot (one request at a time per HTTP/1 connection) and
// given back by the handler's end (route), the error handler (a body read
// that failed: too large, timed out, cut) or, failing both, the
// connection's Close.
//
// The key is checked against the store, not just for its form: its checksum
// is easy to forge, and a forged key that reserved would hold its share of
// the budget until read_timeout, so four such connections declaring 16 MiB
// would deny every body on the node. A request with a refused body costs
// what fasthttp read with its headers, at most its 4 KiB read buffer.
func (s *Server) admitBody(user, admin bool) func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
	return func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
		ctx := requestCtxOf(h)
		slot := bodySlotOf(ctx.Conn())
		if slot != nil {
			// A check left by a request no path finished (none known) is
			// not this request's.
			slot.check = keyCheck{}
			slot.anthropic = isMessagesURI(h.RequestURI())
		}
		cl := int64(h.ContentLength())
		if cl == 0 || cl == -2 || cl > s.maxBody {
			// No body, or one fasthttp refuses (413) without reading it.
			return fasthttp.RequestConfig{}
		}
		if slot == nil {
			// Not a connection of our listeners: nothing to hold the
			// reservation (or the key's check), so no body.
			refuseBody(h)
			return fasthttp.RequestConfig{}
		}
		if !s.mayHaveBody(ctx, slot, user, admin) {
			refuseBody(h)
			return fasthttp.RequestConfig{}
		}
		need := s.chunkedBody
		if cl > 0 {
			need = bodyCap(cl)
		}
		if slot.refused = !slot.reserve(need); slot.refused {
			refuseBody(h)
		}
		return fasthttp.RequestConfig{}
	}
}

// refuseBody tells fasthttp that the request has no body, and to close the
// connection after its answer.
func refuseBody(h *fasthttp.RequestHeader) {
	h.SetContentLength(0)
	h.SetConnectionClose()
}

// requestCtxOf returns the RequestCtx whose request header h is. fasthttp
// calls HeaderReceived with &ctx.Request.Header (serveConnCounted) and gives
// the hook no other way to the request's connection;
// TestRequestCtxOfHeader pins this.
func requestCtxOf(h *fasthttp.RequestHeader) *fasthttp.RequestCtx {
	return (*fasthttp.RequestCtx)(unsafe.Add(unsafe.Pointer(h), -requestHeaderOffset))
}

const requestHeaderOffset = int(unsafe.Offsetof((*fasthttp.RequestCtx)(nil).Request) +
	unsafe.Offsetof((*fasthttp.Request)(nil).Header))

// mayHaveBody reports whether the request's bearer token may send a body:
// a user key that authenticates (when user), whose check it leaves in slot
// for the handler, or the admin key (when admin).
func (s *Server) mayHaveBody(ctx *fasthttp.RequestCtx, slot *bodySlot, user, admin bool) bool {
	token := bearerToken(ctx)
	if token == nil {
		return false
	}
	if user {
		c := &slot.check
		c.key, c.plan, c.err = s.registry.Authenticate(s.callCtx(ctx), token)
		c.at = time.Now()
		if c.err == nil {
			return true
		}
	}
	return admin && s.isAdmin(token)
}

// keyCheck is the header hook's authentication of a request's key, kept in
// its connection's slot for the handler (see Server.keyOf): a request with
// a body costs one key lookup, as one without does, in the cache's work, in
// its counts and, for a key not cached yet, in store round trips.
type keyCheck struct {
	key  *keys.Key
	plan *keys.Plan
	err  error
	at   time.Time // when it was made; zero when there is none
}

// keyCheckFor is how long after the headers the hook's check stands for the
// handler. An honest body arrives with its headers or just after; one that
// takes longer is checked again once it has arrived, so a key revoked while
// its body trickles in is refused then (TestBodyKeyRevokedWhileArriving).
// Within it a request counts as authenticated at its headers, up to this
// much earlier than its handler runs.
const keyCheckFor = time.Second

// bodyFits answers 413 to a request declaring a body over max_body_bytes,
// on every route, before anything reads it.
func (s *Server) bodyFits(ctx *fasthttp.RequestCtx) bool {
	if int64(ctx.Request.Header.ContentLength()) <= s.maxBody {
		return true
	}
	writeError(ctx, errBodyTooLarge, nil)
	ctx.SetConnectionClose()
	lingerDrain(ctx.Conn())
	return false
}

// bodyBudget is the node-wide bound on request body bytes held at once
// (server.max_body_bytes_in_flight); see admitBody.
type bodyBudget struct {
	left atomic.Int64
	size int64
}

func (b *bodyBudget) init(size int64) {
	b.size = size
	b.left.Store(size)
}

// reserve takes n bytes, or nothing and false when fewer are left.
func (b *bodyBudget) reserve(n int64) bool {
	if b.left.Add(-n) < 0 {
		b.left.Add(n)
		return false
	}
	return true
}

// inUse is how many bytes are reserved now.
func (b *bodyBudget) inUse() int64 { return b.size - b.left.Load() }

// bodyCap is the capacity of the buffer fasthttp allocates to read a body of
// n bytes (appendBodyFixedSize: n rounded up to a power of two, up to
// 100 MiB; n beyond); TestBodyCap pins it.
func bodyCap(n int64) int64 {
	if n > 100<<20 {
		return n
	}
	return 1 << bits.Len64(uint64(n-1))
}

// bodySlot is one connection's share of the body budget: what the request
// being read on it reserved. Releasing swaps it to zero, so that the
// handler's end, the error handler and the connection's Close may each
// release and the bytes go back once.
type bodySlot struct {
	budget *bodyBudget
	held   atomic.Int64
	closed atomic.Bool
	// refused is set by the header hook when the request found the budget
	// spent, for the handler to answer 503; check is the hook's check of
	// the request's key. Only the connection's serving goroutine touches
	// them.
	refused bool
	check   keyCheck
	// anthropic: the request whose body is being read is to /v1/messages
	// (set by the header hook; a request whose headers failed to parse
	// never set it, so each request's end clears it). fasthttp resets a
	// request whose body it failed to read before its error handler runs:
	// this is how that answer keeps the client's protocol.
	anthropic bool
}

// reserve takes n bytes of the budget for the request being read, or
// nothing and false when fewer are left.
func (b *bodySlot) reserve(n int64) bool {
	// A previous request's reservation that no path gave back (none known).
	b.release()
	if !b.budget.reserve(n) {
		return false
	}
	b.held.Store(n)
	if b.closed.Load() {
		// Close ran meanwhile and may have found nothing held.
		b.release()
	}
	return true
}

func (b *bodySlot) release() {
	if n := b.held.Swap(0); n != 0 {
		b.budget.left.Add(n)
	}
}

func (b *bodySlot) close() {
	b.closed.Store(true)
	b.release()
}

// bodySlotOf returns the body slot of the connection a request came on: a
// clientConn, possibly under the wrappers a stream relay puts on it when it
// hands the connection back (handedConn, prefixedConn); nil for another.
func bodySlotOf(c net.Conn) *bodySlot {
	for {
		switch v := c.(type) {
		case interface{ bodySlot() *bodySlot }:
			return v.bodySlot()
		case *handedConn:
			c = v.Conn
		case *prefixedConn:
			c = v.Conn
		default:
			return nil
		}
	}
}

// Serve accepts connections on ln until Shutdown, with TLS when the config
// has a certificate.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.http.Serve(s.listener(ln)); err != nil {
		return fmt.Errorf("proxy: serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// Close releases the upstreams' resources (the in-process mock's listener),
// those retired by reloads included. Call it after Shutdown.
func (s *Server) Close() {
	s.access.close()
	for _, u := range s.reload.closeRetired() {
		u.Release()
	}
	if r := s.routing.Load(); r != nil {
		for _, u := range r.upstreams.All() {
			u.Release()
		}
	}
}

func (s *Server) serverError(ctx *fasthttp.RequestCtx, err error) {
	s.ids.set(ctx)
	// The request ends here, its body read or not: what it reserved goes
	// back (see admitBody).
	var anthropic bool
	if slot := bodySlotOf(ctx.Conn()); slot != nil {
		anthropic = slot.anthropic
		slot.refused, slot.anthropic = false, false
		slot.check = keyCheck{}
		slot.release()
	}
	serverError(ctx, err, anthropic)
}

func (s *Server) panicked(ctx *fasthttp.RequestCtx, v any) {
	s.log.Error("handler panic", "panic", fmt.Sprint(v), "path", string(ctx.Path()),
		"request_id", string(ctx.Response.Header.Peek(headerRequestID)))
	writeError(ctx, errInternal, nil)
}

func unknownURL(ctx *fasthttp.RequestCtx) {
	writeError(ctx, errUnknownURL, methodAndPath(ctx))
}

// refuseAdminKey wraps a public handler that would take the admin key, for
// a listener where the admin side is not served.
func (s *Server) refuseAdminKey(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if token := bearerToken(ctx); token != nil && s.isAdmin(token) {
			writeError(ctx, errUnknownKey, nil)
			return
		}
		h(ctx)
	}
}

func methodNotAllowed(ctx *fasthttp.RequestCtx) {
	// The router lists OPTIONS among the allowed methods although it is
	// not served (HandleOPTIONS is off): an Allow header names only what
	// answers.
	allow := ctx.Response.Header.Peek(fasthttp.HeaderAllow)
	var kept []byte
	for m := range bytes.SplitSeq(allow, []byte(",")) {
		m = bytes.TrimSpace(m)
		if len(m) == 0 || string(m) == fasthttp.MethodOptions {
			continue
		}
		if len(kept) > 0 {
			kept = append(kept, ", "...)
		}
		kept = append(kept, m...)
	}
	ctx.Response.Header.SetBytesV(fasthttp.HeaderAllow, kept)
	writeError(ctx, errMethodNotAllowed, methodAndPath(ctx))
}

func methodAndPath(ctx *fasthttp.RequestCtx) []byte {
	b := append([]byte(nil), ctx.Method()...)
	b = append(b, ' ')
	return append(b, ctx.Path()...)
}

func healthz(ctx *fasthttp.RequestCtx) {
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBodyString(`{"status":"ok"}`)
}

// fasthttpLogger routes fasthttp's own messages into slog without what a
// client sent. fasthttp formats its errors with the raw request in them
// (headers with their keys, body bytes), so an error is logged only as its
// class; addresses and numbers pass; any other argument is redacted. The
// format string is fasthttp's own constant text.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	safe := make([]any, len(args))
	for i, a := range args {
		safe[i] = logSafe(a)
	}
	l.log.Warn(fmt.Sprintf(format, safe...), "source", "fasthttp")
}

// logSafe returns what of a fasthttp log argument may be logged.
func logSafe(a any) any {
	switch v := a.(type) {
	case net.Addr:
		return v.String()
	case int, int64, uint64, uint32, int32, time.Duration:
		return v
	case error:
		return errorClass(v)
	}
	return "[redacted]"
}

// errorClass names what went wrong with a connection in words of our own,
// never the error's text, which may quote the request.
func errorClass(err error) string {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, errBareLF):
		return "request line ends without CR"
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return "request body too large"
	case errors.As(err, &small):
		return "request headers too large"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, net.ErrClosed):
		return "connection closed"
	}
	return "malformed request"
}

// callCtx is the context of the store and gate calls a request makes: the
// node's base context (Options.BaseContext), done at the shutdown's cut, so
// that no call outlives it. Never the *fasthttp.RequestCtx itself, which
// fasthttp recycles when the handler returns, while a context derived from
// it (a call's timeout) may still look it up afterwards from its timer's
// goroutine, a data race. Its Done is the server's, not the request's, so it
// would cancel nothing sooner either.
func (s *Server) callCtx(*fasthttp.RequestCtx) context.Context { return s.base }
