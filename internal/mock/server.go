package mock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// HTTPServer returns a fasthttp server answering with s, set up as the mock
// is served on its own: by tokenhub-mock, and as the benchmark's upstream, so
// that a mock started by hand is the one the benchmark measures. It sends no
// Server header, takes bodies up to 64 MiB and headers up to 16 KiB, and
// bounds the reading of a request to a minute and an idle connection to two.
func (s *Server) HTTPServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               s.Handler,
		NoDefaultServerHeader: true,
		ReadBufferSize:        16 << 10,
		ReadTimeout:           time.Minute,
		IdleTimeout:           2 * time.Minute,
		MaxRequestBodySize:    64 << 20,
	}
}

// Serve serves srv on ln until ctx ends, then shuts it down, letting the
// answers in flight finish for at most grace. It returns an error if
// serving fails or the shutdown does other than time out.
func Serve(ctx context.Context, ln net.Listener, srv *fasthttp.Server, grace time.Duration) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.ShutdownWithContext(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
