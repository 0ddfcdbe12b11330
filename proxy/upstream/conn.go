package upstream

import (
	"errors"
	"net"
	"time"
)

// upstreamConn is one connection of an Upstream's pools, known to it until
// closed. It also knows where each request on it begins, so that a request
// is written only to a connection the upstream has not closed (see Write).
type upstreamConn struct {
	net.Conn
	u *Upstream
	// requests counts the requests begun on the connection; starting is set
	// from a request's start until the first write of it, and check when
	// that write must first probe for the upstream's close.
	requests int
	starting bool
	check    bool
	began    time.Time // when the latest request began
	probe    peerProbe
}

// errUpstreamCut is what dialing answers once shutdown has cut an upstream.
var errUpstreamCut = errors.New("the gateway is shutting down")

// track records conn among u's open connections, or closes it when u has
// been cut meanwhile.
func (u *Upstream) track(conn net.Conn) (net.Conn, error) {
	c := &upstreamConn{Conn: conn, u: u}
	c.probe.init(conn)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cut {
		conn.Close() //nolint:errcheck // never used
		return nil, &dialError{err: errUpstreamCut}
	}
	u.conns[c] = struct{}{}
	return c, nil
}

func (c *upstreamConn) Close() error {
	c.u.mu.Lock()
	delete(c.u.conns, c)
	c.u.mu.Unlock()
	return c.Conn.Close()
}

// SetWriteDeadline is called by fasthttp once per request, before it writes
// it (the gateway always sets a deadline): it marks the start of a request.
//
// The time since the previous request began bounds how long the connection
// idled: when that is under the upstream's stale_check_after, the probe's
// system call is skipped, as upstreams close idle connections after seconds,
// not milliseconds. The price: an upstream that closes a connection within
// that window (it restarted) fails the request written to it with a 502,
// which is still never sent twice.
func (c *upstreamConn) SetWriteDeadline(t time.Time) error {
	now := time.Now()
	c.requests++
	c.starting = true
	c.check = c.requests > 1 && now.Sub(c.began) >= c.u.staleCheck
	c.began = now
	return c.Conn.SetWriteDeadline(t)
}

// Write writes p; on the first write of a request it first makes sure the
// request can only be lost before any of it leaves. On a connection that
// carried a request before, an upstream that has closed it meanwhile (an idle
// timeout, a restart) has sent its FIN or reset already, and the probe sees
// it without waiting; then, or when the first write fails with nothing
// written, the request provably never reached the upstream, and the error
// says so (errNotSent). Any other failure may come after the upstream read
// the request, and must not be sent again.
func (c *upstreamConn) Write(p []byte) (int, error) {
	if !c.starting {
		return c.Conn.Write(p)
	}
	c.starting = false
	reused := c.requests > 1
	if c.check {
		if err := c.probe.peerClosed(); err != nil {
			return 0, &notSentError{reused: true, err: err}
		}
	}
	n, err := c.Conn.Write(p)
	if err != nil && n == 0 && !IsTimeout(err) {
		return 0, &notSentError{reused: reused, err: err}
	}
	return n, err
}

// eventDeadlineConn gives each read of a streamed answer its own deadline: the
// first-byte timeout until the answer starts, then the between-events timeout,
// never past the whole-request deadline fasthttp sets. fasthttp alone offers
// one absolute deadline, which would cut every stream longer than it.
type eventDeadlineConn struct {
	net.Conn
	firstByte, event time.Duration
	hard             time.Time // the deadline fasthttp asked for
	awaitingFirst    bool
}

// SetReadDeadline is called by fasthttp once per request, before it reads the
// answer: it marks the start of a new answer.
func (c *eventDeadlineConn) SetReadDeadline(t time.Time) error {
	c.hard = t
	c.awaitingFirst = true
	return c.Conn.SetReadDeadline(t)
}

func (c *eventDeadlineConn) Read(p []byte) (int, error) {
	d := c.event
	if c.awaitingFirst {
		d = c.firstByte
	}
	deadline := time.Now().Add(d)
	if !c.hard.IsZero() && c.hard.Before(deadline) {
		deadline = c.hard
	}
	if err := c.Conn.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.awaitingFirst = false
	}
	return n, err
}
