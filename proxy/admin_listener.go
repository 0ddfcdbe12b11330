package proxy

import (
	"errors"
	"fmt"
	"net"

	"github.com/valyala/fasthttp"
)

// ServeAdmin accepts connections for the admin routes on ln until Shutdown,
// with TLS when the config has a certificate. It is an error unless
// admin.listen is set: otherwise the main listener serves those routes.
func (s *Server) ServeAdmin(ln net.Listener) error {
	if s.adminHTTP == nil {
		return errors.New("proxy: admin.listen is not set: the main listener serves the admin routes")
	}
	if err := s.adminHTTP.Serve(s.listener(ln)); err != nil {
		return fmt.Errorf("proxy: serve admin %s: %w", ln.Addr(), err)
	}
	return nil
}

// adminHandler serves one request on the admin listener.
func (s *Server) adminHandler(ctx *fasthttp.RequestCtx) {
	s.ids.set(ctx)
	s.route(ctx, s.adminRouter)
	s.countOther(ctx)
}
