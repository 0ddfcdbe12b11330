package proxy

import (
	"context"
	"time"

	"github.com/valyala/fasthttp"
)

var (
	errShuttingDown = &apiError{status: fasthttp.StatusServiceUnavailable, typ: typeServer, code: "shutting_down",
		message: "Not ready: the gateway is shutting down."}
	errStoreLost = &apiError{status: fasthttp.StatusServiceUnavailable, typ: typeServer, code: "store_unavailable",
		message: "Not ready: the key store has been unreachable for longer than cache.stale_if_error, so no cached key may be served any more."}
)

// readyz answers GET /readyz: whether this node should be sent traffic.
// /healthz, by contrast, only says the process is serving.
//
// Ready (200 {"status":"ready"}) means a configuration is loaded (always true
// once serving: a refused reload leaves the previous one in force) and keys
// can be resolved: the store is reachable, or the node is serving from its
// cache within policy. The store counts as reachable while no read of it
// failed in the last 500 ms (keys.Registry.StoreDown) and, with Valkey, while
// invalidation heartbeats make their round trip through it
// (keys.Invalidator.Healthy; they lapse 1.5 s into an outage). While it is
// not, cached keys are still served for cache.stale_if_error after they were
// last read, so the node stays ready, answering
// {"status":"ready","store":"unreachable"}, until the store has been
// unreachable for stale_if_error; then nothing cached may be served any
// more and it answers 503 store_unavailable.
//
// After SIGTERM it answers 503 shutting_down, so a load balancer stops
// sending new requests while the in-flight ones finish.
func (s *Server) readyz(ctx *fasthttp.RequestCtx) {
	if s.draining.Load() {
		writeError(ctx, errShuttingDown, nil)
		return
	}
	ctx.SetContentTypeBytes(contentTypeJSON)
	lost := s.storeLostAt.Load()
	switch {
	case lost == 0:
		ctx.SetBodyString(`{"status":"ready"}`)
	case time.Since(time.Unix(0, lost)) < s.staleIfError:
		ctx.SetBodyString(`{"status":"ready","store":"unreachable"}`)
	default:
		writeError(ctx, errStoreLost, nil)
	}
}

// WatchStore samples reachable until ctx ends, recording when the store was
// first found unreachable, for readyz. The node runs it on a goroutine of
// its own and joins it.
func (s *Server) WatchStore(ctx context.Context, reachable func() bool) {
	s.watchStore(ctx, reachable, storeWatchInterval)
}

// storeWatchInterval is how often watchStore samples the store's health.
const storeWatchInterval = 250 * time.Millisecond

// watchStore samples reachable every interval until ctx ends, recording when
// the store was first found unreachable, for readyz.
func (s *Server) watchStore(ctx context.Context, reachable func() bool, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if reachable() {
			s.storeLostAt.Store(0)
		} else {
			s.storeLostAt.CompareAndSwap(0, time.Now().UnixNano())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
