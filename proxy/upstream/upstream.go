package upstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/proxy/anthropic"
)

// Endpoint is one of the inference endpoints the gateway forwards.
type Endpoint uint8

// The endpoints, in the order of the arrays indexed by them.
const (
	Chat Endpoint = iota
	Completions
	Embeddings
	Responses
	// Messages and CountTokens are Anthropic's Messages API (an anthropic
	// upstream's only endpoints).
	Messages
	CountTokens
	// Compact is the Responses API's compaction of a conversation, a model
	// call billed like a create (POST /responses/compact).
	Compact
	NumEndpoints
)

var endpointPaths = [NumEndpoints]string{"/chat/completions", "/completions", "/embeddings", "/responses",
	"/messages", "/messages/count_tokens", "/responses/compact"}

// IsResponses reports whether ep is one of the Responses API's model calls
// (a create or a compaction): their bodies, usage and previous responses
// are the Responses API's.
func (ep Endpoint) IsResponses() bool { return ep == Responses || ep == Compact }

// Upstream is one provider the gateway forwards to, with its own keep-alive
// connection pools. Streams get a pool of their own so that long-lived streams
// cannot starve short requests, and so their connections can enforce a
// between-events deadline that would be wrong for buffered answers.
type Upstream struct {
	name         string
	client       *fasthttp.HostClient // buffered answers
	streamClient *fasthttp.HostClient // SSE streams
	uris         [NumEndpoints][]byte // absolute URLs, built once
	kind         string               // config.KindOpenAI or config.KindAnthropic
	authName     []byte               // Authorization, or x-api-key for anthropic
	auth         []byte               // "Bearer <the gateway's upstream key>" or the key, or nil
	apiKey       []byte               // the key alone, for redaction
	version      []byte               // anthropic: the anthropic-version sent by default
	translation  []byte               // anthropic: the anthropic-version of translated requests
	headers      [][2][]byte          // extra headers from the config
	tls          *tls.Config          // for https base URLs
	timeout      time.Duration        // whole request
	firstByte    time.Duration        // streams: until the response headers
	staleCheck   time.Duration        // see config.Upstream.StaleCheckAfter
	close        func() error
	// budget bounds the failovers sent here from other routes.
	budget *retryBudget
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
		budget:     newRetryBudget(c.Health.RetryRatio, c.Health.MinRetries),
	}
	u.kind = c.Kind
	if u.kind == "" {
		u.kind = config.KindOpenAI
	}
	u.authName = []byte(fasthttp.HeaderAuthorization)
	if c.APIKey != "" {
		u.apiKey = []byte(c.APIKey)
		u.auth = []byte("Bearer " + c.APIKey)
	}
	if u.kind == config.KindAnthropic {
		u.authName = []byte("x-api-key")
		u.auth = u.apiKey
		u.version = []byte(c.AnthropicVersion)
		u.translation = u.version
		if c.AnthropicVersion == "" {
			u.version = []byte(anthropic.DefaultVersion)
			u.translation = []byte(anthropic.Version20230601)
		}
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

// Timeout bounds a whole request to u, failovers to it included: they
// keep the deadline of the request's first attempt.
func (u *Upstream) Timeout() time.Duration { return u.timeout }

// URI is the absolute URL of endpoint ep at the upstream.
func (u *Upstream) URI(ep Endpoint) []byte { return u.uris[ep] }

// Auth is the header that carries the gateway's own key for the upstream:
// Authorization: Bearer <key> for an openai upstream, x-api-key: <key> for
// an anthropic one; value is nil when the config gives no key. It is a
// secret: never log it.
func (u *Upstream) Auth() (name, value []byte) { return u.authName, u.auth }

// APIKey is the gateway's key for the upstream alone, or nil: what must be
// redacted from anything the upstream says back. A secret: never log it.
func (u *Upstream) APIKey() []byte { return u.apiKey }

// Kind is the protocol the upstream speaks: config.KindOpenAI or
// config.KindAnthropic.
func (u *Upstream) Kind() string { return u.kind }

// Anthropic reports whether the upstream speaks Anthropic's Messages API.
func (u *Upstream) Anthropic() bool { return u.kind == config.KindAnthropic }

// AnthropicVersion is the anthropic-version an anthropic upstream is sent
// when the request does not carry its own (nil for an openai upstream): the
// configured one, else the current one the SDKs send.
func (u *Upstream) AnthropicVersion() []byte { return u.version }

// TranslationVersion is the anthropic-version of the Messages requests the
// gateway writes from chat completions: the configured one, else 2023-06-01,
// whose request shape the translation writes and which, unlike 2026-10-21,
// takes the sampling parameters (temperature, top_p) OpenAI clients send.
func (u *Upstream) TranslationVersion() []byte { return u.translation }

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
