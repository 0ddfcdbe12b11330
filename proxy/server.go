// Package proxy is tokenhub's HTTP side: the fasthttp server, routing, the
// OpenAI-compatible handlers, the upstream clients and the error contract.
package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/config"
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
}

// Server is the gateway: it authenticates, checks plans and forwards.
type Server struct {
	registry  *keys.Registry
	gate      *limits.Gate
	models    *modelTable
	upstreams []*Upstream
	adminHash [32]byte
	ids       *requestIDs
	router    *router.Router
	http      *fasthttp.Server
	log       *slog.Logger

	// drains counts streams read on after their client left, to bill the
	// upstream's real usage; at most maxDrains at once, each for at most
	// drainTimeout.
	drains       atomic.Int64
	maxDrains    int64
	drainTimeout time.Duration
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
	s := &Server{
		registry:     o.Registry,
		gate:         o.Gate,
		adminHash:    sha256.Sum256([]byte(o.AdminKey)),
		ids:          ids,
		log:          log,
		maxDrains:    int64(o.Config.Server.MaxStreamDrains),
		drainTimeout: o.Config.Server.StreamDrainTimeout,
	}
	byName := make(map[string]*Upstream, len(o.Config.Upstreams))
	for i := range o.Config.Upstreams {
		u, err := newUpstream(&o.Config.Upstreams[i])
		if err != nil {
			s.Close()
			return nil, err
		}
		byName[u.name] = u
		s.upstreams = append(s.upstreams, u)
	}
	if s.models, err = newModelTable(o.Config.Models, byName, time.Now().Unix()); err != nil {
		s.Close()
		return nil, err
	}
	s.router = s.routes()
	s.http = &fasthttp.Server{
		Handler:                      s.Handler,
		ErrorHandler:                 s.serverError,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		MaxRequestBodySize:           int(o.Config.MaxBodyBytes),
		ReadTimeout:                  o.Config.Server.ReadTimeout,
		IdleTimeout:                  o.Config.Server.IdleTimeout,
		ReadBufferSize:               16 << 10,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		TCPKeepalive:                 true,
		Logger:                       fasthttpLogger{log},
	}
	return s, nil
}

func (s *Server) routes() *router.Router {
	r := router.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	r.HandleOPTIONS = false
	r.NotFound = unknownURL
	r.MethodNotAllowed = methodNotAllowed
	r.PanicHandler = s.panicked

	r.POST("/v1/chat/completions", s.chatCompletions)
	r.POST("/v1/completions", s.completions)
	r.POST("/v1/embeddings", s.embeddings)
	r.GET("/v1/models", s.listModels)
	r.GET("/v1/models/{model}", s.getModel)

	r.POST("/v1/keys", s.admin(s.createKey))
	r.GET("/v1/keys", s.admin(s.listKeys))
	r.GET("/v1/keys/{id}", s.admin(s.getKey))
	r.PATCH("/v1/keys/{id}", s.admin(s.updateKey))
	r.DELETE("/v1/keys/{id}", s.admin(s.revokeKey))
	r.POST("/v1/keys/{id}/rotate", s.admin(s.rotateKey))
	r.GET("/v1/keys/{id}/usage", s.keyUsage)
	r.GET("/v1/plans", s.admin(s.listPlans))
	r.GET("/v1/plans/{name}", s.admin(s.getPlan))
	r.PUT("/v1/plans/{name}", s.admin(s.putPlan))
	r.DELETE("/v1/plans/{name}", s.admin(s.deletePlan))

	r.GET("/healthz", healthz)
	return r
}

// Handler serves one request: every answer, errors included, carries an
// x-request-id.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	s.ids.set(ctx)
	s.router.Handler(ctx)
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.http.Serve(ln); err != nil {
		return fmt.Errorf("proxy: serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting and waits for open requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.http.ShutdownWithContext(ctx)
}

// Close releases the upstreams' resources (the in-process mock's listener).
func (s *Server) Close() {
	for _, u := range s.upstreams {
		u.close() //nolint:errcheck // nothing to do about a close error at exit
	}
}

func (s *Server) serverError(ctx *fasthttp.RequestCtx, err error) {
	s.ids.set(ctx)
	serverError(ctx, err)
}

func (s *Server) panicked(ctx *fasthttp.RequestCtx, v any) {
	s.log.Error("handler panic", "panic", fmt.Sprint(v), "path", string(ctx.Path()),
		"request_id", string(ctx.Response.Header.Peek(headerRequestID)))
	writeError(ctx, errInternal, nil)
}

func unknownURL(ctx *fasthttp.RequestCtx) {
	writeError(ctx, errUnknownURL, methodAndPath(ctx))
}

func methodNotAllowed(ctx *fasthttp.RequestCtx) {
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

// fasthttpLogger routes fasthttp's own messages into slog.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn(fmt.Sprintf(format, args...), "source", "fasthttp")
}
