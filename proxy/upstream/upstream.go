package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// Endpoint is one of the inference endpoints the gateway forwards.
type Endpoint uint8

// The endpoints, in the order of the arrays indexed by them.
const (
	Chat Endpoint = iota
	Completions
	Embeddings
	NumEndpoints
)

var endpointPaths = [NumEndpoints]string{"/chat/completions", "/completions", "/embeddings"}

// Upstream is one provider the gateway forwards to, with its own keep-alive
// connection pools. Streams get a pool of their own so that long-lived streams
// cannot starve short requests, and so their connections can enforce a
// between-events deadline that would be wrong for buffered answers.
type Upstream struct {
	name         string
	client       *fasthttp.HostClient // buffered answers
	streamClient *fasthttp.HostClient // SSE streams
	uris         [NumEndpoints][]byte // absolute URLs, built once
	auth         []byte               // "Bearer <the gateway's upstream key>", or nil
	headers      [][2][]byte          // extra headers from the config
	tls          *tls.Config          // for https base URLs
	timeout      time.Duration        // whole request
	firstByte    time.Duration        // streams: until the response headers
	staleCheck   time.Duration        // see config.Upstream.StaleCheckAfter
	close        func() error
	// config is what the upstream was built from: a reload keeps an
	// upstream whose config is unchanged, with its warm connections.
	config config.Upstream

	// conns are the open connections of both pools, so that shutdown can
	// cut the requests still running at its deadline; once cut is set, no
	// new connection is made.
	mu    sync.Mutex
	conns map[*upstreamConn]struct{}
	cut   bool
}

// streamReadBuffer is the read buffer of a stream's upstream connection,
// held for the stream's whole life: it must hold the answer's headers
// (OpenAI's and Anthropic's are under 2 KiB) and no more, as 10,000 open
// streams hold 10,000 of them.
const streamReadBuffer = 4 << 10

// New builds an Upstream's clients from its config. Release frees them.
func New(c *config.Upstream) (*Upstream, error) {
	u := &Upstream{
		name:       c.Name,
		timeout:    c.Timeout,
		firstByte:  c.FirstByteTimeout,
		staleCheck: c.StaleCheckAfter,
		close:      func() error { return nil },
		config:     *c,
		conns:      make(map[*upstreamConn]struct{}),
	}
	if c.APIKey != "" {
		u.auth = []byte("Bearer " + c.APIKey)
	}
	for k, v := range c.Headers {
		u.headers = append(u.headers, [2][]byte{[]byte(k), []byte(v)})
	}

	var base *url.URL
	var connect fasthttp.DialFunc
	if c.BaseURL == config.InprocMock {
		// The built-in mock provider runs in-process behind an in-memory
		// listener, so it goes through exactly the same client path as a real one.
		ln := fasthttputil.NewInmemoryListener()
		srv := &fasthttp.Server{Handler: mock.New(mock.Options{}).Handler, NoDefaultServerHeader: true}
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.Serve(ln) //nolint:errcheck // ends when ln closes
		}()
		// Joined, so that a closed node leaves no mock server running.
		u.close = func() error {
			err := ln.Close()
			<-served
			return err
		}
		connect = func(string) (net.Conn, error) { return ln.Dial() }
		base = &url.URL{Scheme: "http", Host: "mock.inproc", Path: "/v1"}
	} else {
		var err error
		if base, err = url.Parse(c.BaseURL); err != nil {
			return nil, fmt.Errorf("upstream: %s: base_url: %w", c.Name, err)
		}
		dialer := &fasthttp.TCPDialer{DNSCacheDuration: time.Minute}
		timeout := c.ConnectTimeout
		connect = func(addr string) (net.Conn, error) { return dialer.DialTimeout(addr, timeout) }
	}
	dial := func(addr string) (net.Conn, error) {
		conn, err := connect(addr)
		if err != nil {
			return nil, &dialError{err: err}
		}
		return u.track(conn)
	}
	prefix := strings.TrimSuffix(base.String(), "/")
	for ep := range NumEndpoints {
		u.uris[ep] = []byte(prefix + endpointPaths[ep])
	}

	isTLS := base.Scheme == "https"
	u.tls = &tls.Config{ServerName: base.Hostname(), MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(0)}
	// secure does the TLS handshake while dialing, within connect_timeout,
	// where fasthttp would do it on the request's first write: so a failed
	// handshake is a dial error, which fails over (the request was never
	// sent), and the first write on a connection is the request's own.
	secure := func(conn net.Conn) (net.Conn, error) {
		if !isTLS {
			return conn, nil
		}
		tc := tls.Client(conn, u.tls)
		ctx, cancel := context.WithTimeout(context.Background(), c.ConnectTimeout)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close() //nolint:errcheck // never used
			return nil, &dialError{err: fmt.Errorf("tls handshake: %w", err)}
		}
		return tc, nil
	}
	addr := base.Host
	if base.Port() == "" {
		if isTLS {
			addr += ":443"
		} else {
			addr += ":80"
		}
	}
	mk := func(d fasthttp.DialFunc, readBuf int) *fasthttp.HostClient {
		return &fasthttp.HostClient{
			Addr:                addr,
			IsTLS:               isTLS,
			TLSConfig:           u.tls, // the connections come secured already (see secure)
			Dial:                d,
			MaxConns:            c.MaxConns,
			MaxConnWaitTimeout:  c.ConnectTimeout,
			MaxIdleConnDuration: c.MaxIdleConnDuration,
			// Each retry takes another pooled connection and is made only
			// when one was found closed before the request was written (see
			// retryStale), so every idle connection going stale at once (the
			// upstream restarted) costs at most one attempt each, then a
			// fresh connection.
			MaxIdemponentCallAttempts: max(c.MaxConns, fasthttp.DefaultMaxConnsPerHost) + 1,
			RetryIfErr:                retryStale,
			NoDefaultUserAgentHeader:  true,
			ReadBufferSize:            readBuf,
			WriteBufferSize:           16 << 10,
			MaxResponseBodySize:       256 << 20,
		}
	}
	u.client = mk(func(addr string) (net.Conn, error) {
		conn, err := dial(addr)
		if err != nil {
			return nil, err
		}
		return secure(conn)
	}, 16<<10)
	firstByte, event := c.FirstByteTimeout, c.EventTimeout
	u.streamClient = mk(func(addr string) (net.Conn, error) {
		conn, err := dial(addr)
		if err != nil {
			return nil, err
		}
		return secure(&eventDeadlineConn{Conn: conn, firstByte: firstByte, event: event})
	}, streamReadBuffer)
	return u, nil
}

// Name is the upstream's name in the config, for logs and metrics.
func (u *Upstream) Name() string { return u.name }

// URI is the absolute URL of endpoint ep at the upstream.
func (u *Upstream) URI(ep Endpoint) []byte { return u.uris[ep] }

// Authorization is the value of the Authorization header that carries the
// gateway's own key for the upstream ("Bearer <key>"), or nil when the
// config gives none. It is a secret: never log it.
func (u *Upstream) Authorization() []byte { return u.auth }

// Headers are the extra headers the config adds to every request to the
// upstream, as name-value pairs. Do not modify them.
func (u *Upstream) Headers() [][2][]byte { return u.headers }

// Do sends req to the upstream and reads the answer into resp, on the pool
// for streams when stream is set (resp then keeps the body to read as a
// stream), all within the upstream's timeout from sent, the caller's clock
// reading when it sends. A pooled connection found closed before the request
// was written is replaced by another (see retryStale); any error is the
// caller's to classify with NeverSent, IsTimeout and IsDropped.
func (u *Upstream) Do(req *fasthttp.Request, resp *fasthttp.Response, stream bool, sent time.Time) error {
	if stream {
		resp.StreamBody = true
		return u.streamClient.DoDeadline(req, resp, sent.Add(u.timeout))
	}
	return u.client.DoDeadline(req, resp, sent.Add(u.timeout))
}

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

var (
	errPeerClosed  = errors.New("closed by the upstream")
	errUnsolicited = errors.New("the upstream sent bytes before the request")
)

// errNotSent is what every error that proves the upstream never received
// the request matches (errors.Is).
var errNotSent = errors.New("the request was never sent")

// notSentError is a request found unsendable before a byte of it was
// written: the connection was closed by the upstream (reused: a pooled
// one), or the first write failed.
type notSentError struct {
	reused bool
	err    error
}

func (e *notSentError) Error() string {
	return "the upstream connection was closed before the request was written: " + e.err.Error()
}
func (e *notSentError) Is(target error) bool { return target == errNotSent }
func (e *notSentError) Unwrap() error        { return e.err }

// CutConnections closes every connection u has open, failing the requests
// and streams still using them, and refuses new ones: shutdown does it at
// its deadline. It returns how many it closed.
func (u *Upstream) CutConnections() int {
	u.mu.Lock()
	u.cut = true
	conns := make([]*upstreamConn, 0, len(u.conns))
	for c := range u.conns {
		conns = append(conns, c)
	}
	u.mu.Unlock()
	for _, c := range conns {
		c.Close() //nolint:errcheck // the point is that it stops
	}
	return len(conns)
}

// Release closes u's idle connections and, for the in-process mock, its
// listener. Requests still running on u finish on the connections they
// hold; a request that would need a new connection to the in-process mock
// after Release fails over like any unreachable upstream.
func (u *Upstream) Release() {
	u.client.CloseIdleConnections()
	u.streamClient.CloseIdleConnections()
	u.close() //nolint:errcheck // nothing to do about it
}

// retryStale lets fasthttp send a request again on another connection
// only when a pooled one was found closed before a byte of the request was
// written (see upstreamConn.Write): the upstream never saw it, so the second
// send is the first it gets. A request that may have been read, even if the
// upstream then closed without a byte of answer, is never sent again: the
// provider may have run and billed it. A fresh connection failing is not
// retried here but reported, for the caller to fail over (see NeverSent).
func retryStale(_ *fasthttp.Request, _ int, err error) (resetTimeout, retry bool) {
	var e *notSentError
	return false, errors.As(err, &e) && e.reused
}

// dialError marks a failure to connect, which always allows failover.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// IsTimeout reports whether err is the upstream taking too long (as opposed to
// refusing or dropping the connection): a connect timeout is not one.
func IsTimeout(err error) bool {
	var de *dialError
	if errors.As(err, &de) {
		return false // a connect timeout is a connection failure: fail over
	}
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// NeverSent reports whether err proves the request never reached the
// upstream: no connection could be made (refused, unreachable, no free
// connection) or it was found closed before the request was written. Only
// those may fail over to the next route; a request the upstream may have
// read is not sent to a second provider.
func NeverSent(err error) bool {
	var de *dialError
	return errors.As(err, &de) || errors.Is(err, errNotSent) || errors.Is(err, fasthttp.ErrNoFreeConns)
}

// IsDropped reports whether err is the connection closed or reset after the
// request was written, before a complete answer: the upstream may have run
// the request, which must not be sent again.
func IsDropped(err error) bool {
	return !NeverSent(err) && (errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
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
