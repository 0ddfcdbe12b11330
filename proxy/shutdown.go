package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// After the shutdown deadline, cut requests get cutSettle to write their
// final error event and settle before the client connections still open
// are closed too (a cut stream's connection lingers as an idle keep-alive
// one: fasthttp stops closing connections after its shutdown returns), and
// cutWait more for their handlers to return.
const (
	cutSettle = time.Second
	cutWait   = 5 * time.Second
)

// Shutdown stops accepting on every listener, closes idle keep-alive
// connections at once, and lets in-flight requests and streams run until ctx
// ends. Whatever is still running then is cut: first its upstream
// connections, so each stream ends with an error event and is billed what
// it relayed, then its client connection. Shutdown returns once every
// handler has returned, so every request's spend is settled before
// Node.Close flushes it; it gives up cutSettle+cutWait after the cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	servers := []*fasthttp.Server{s.http}
	if s.adminHTTP != nil {
		servers = append(servers, s.adminHTTP)
	}
	errs := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errs <- srv.ShutdownWithContext(ctx) }()
	}
	s.conns.closeIdleHanded()
	var err error
	for range servers {
		err = errors.Join(err, <-errs)
	}
	// The servers do not count the connections streams took over; a stream
	// that ends now closes its connection rather than serve another request.
	for err == nil && s.streams.count() > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		// Everything finished in time; err can only be a listener's close error.
		return err
	}

	cut := 0
	for _, u := range s.upstreams() {
		cut += u.CutConnections()
	}
	s.log.Warn("shutdown deadline reached; cutting the requests still running",
		"client_connections", s.conns.count()+s.streams.count(), "upstream_connections", cut)
	open := waitAll(cutSettle, &s.conns, &s.streams)
	if open > 0 {
		s.conns.closeAll()
		s.streams.closeAll()
		open = waitAll(cutWait, &s.conns, &s.streams)
	}
	if open > 0 {
		return fmt.Errorf("proxy: shutdown: %d connections still open %s after the cut; their spend may be unsettled", open, cutSettle+cutWait)
	}
	return nil
}

// upstreams returns every upstream that requests may still be using: the
// current ones and those retired by a reload less than a grace period ago.
func (s *Server) upstreams() []*upstream.Upstream {
	all := s.reload.retiredUpstreams()
	if r := s.routing.Load(); r != nil {
		all = append(all, r.upstreams.All()...)
	}
	return all
}

// connSet is the open client connections of the servers whose ConnState hook
// is its track method, so shutdown can close those still open at its deadline
// and wait for them.
type connSet struct {
	mu sync.Mutex
	m  map[net.Conn]struct{}
}

// track follows one connection's state. It runs twice per request (active,
// idle) and then only notes a handed-back connection's idleness: only
// opening and closing cost a lock.
func (cs *connSet) track(c net.Conn, state fasthttp.ConnState) {
	switch state {
	case fasthttp.StateActive, fasthttp.StateIdle:
		if hc, ok := c.(*handedConn); ok {
			hc.idle.Store(state == fasthttp.StateIdle)
		}
	case fasthttp.StateNew:
		cs.mu.Lock()
		if cs.m == nil {
			cs.m = make(map[net.Conn]struct{})
		}
		cs.m[c] = struct{}{}
		cs.mu.Unlock()
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		cs.mu.Lock()
		delete(cs.m, c)
		cs.mu.Unlock()
	}
}

// handedConn is a client connection a stream relay gave back to fasthttp
// (ServeConn) when its stream ended. fasthttp counts such a connection as new,
// which its shutdown leaves alone for 5 seconds in case a first request is
// on its way; a client that keeps its connection after a stream, as SDKs
// do, would hold shutdown that long. So it is marked idle between requests
// and shutdown closes it at once when idle, as fasthttp does its own.
type handedConn struct {
	net.Conn
	idle atomic.Bool
}

// closeIdleHanded closes the handed-back connections waiting for a request.
func (cs *connSet) closeIdleHanded() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for c := range cs.m {
		if hc, ok := c.(*handedConn); ok && hc.idle.Load() {
			c.Close() //nolint:errcheck // the point is that it stops
		}
	}
}

// closeAll closes every open connection; their handlers see write errors.
func (cs *connSet) closeAll() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for c := range cs.m {
		c.Close() //nolint:errcheck // the point is that it stops
	}
}

func (cs *connSet) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.m)
}

// wait waits up to d for every connection to be closed, and returns how many
// are still open.
func (cs *connSet) wait(d time.Duration) int {
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		if n := cs.count(); n == 0 || time.Now().After(deadline) {
			return n
		}
	}
}

// waitAll waits up to d for every connection of sets to be closed, and
// returns how many are still open.
func waitAll(d time.Duration, sets ...*connSet) int {
	deadline := time.Now().Add(d)
	open := 0
	for _, cs := range sets {
		open += cs.wait(time.Until(deadline))
	}
	return open
}
