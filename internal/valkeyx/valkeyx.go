// Package valkeyx owns how tokenhub reaches Valkey: the options a deployment
// states (addresses, credentials, database, TLS, prefix, call timeout and an
// observe hook for metrics), their defaults, building and checking a
// valkey.Client from them, and the hash tag that keeps a prefix's names in
// one cluster slot. The key store (keys) and the shared limits (limits) take
// a client, a prefix and a timeout from here, so they agree on every default
// without importing each other.
//
// valkeyx imports nothing of tokenhub's but internal/name.
package valkeyx

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/tokenhub/tokenhub/internal/name"
)

// Defaults of Options. The key store and the usage ledger share one Valkey,
// one prefix and one bound on a call.
const (
	// DefaultPrefix is the Prefix used when none is given.
	DefaultPrefix = "tokenhub"
	// DefaultTimeout is the Timeout used when none is given: well above a
	// round trip in one data centre, well below a client's patience.
	DefaultTimeout = 500 * time.Millisecond
)

// Options says how to reach Valkey and where in it tokenhub's data lives.
type Options struct {
	// Addrs are host:port addresses. One address may be a standalone server
	// or a cluster endpoint; valkey-go detects which. Several must be nodes
	// of one cluster.
	Addrs []string
	// Username and Password authenticate (an ACL user, or just a password).
	Username, Password string
	// DB is the database number of a standalone server.
	DB int
	// TLS connects with TLS 1.2 or later, verifying every node's
	// certificate against the first address's host name.
	TLS bool
	// Prefix namespaces every name, so several deployments can share a
	// server. It must satisfy name.Valid; empty means DefaultPrefix.
	Prefix string
	// Timeout bounds every call, so a dead server fails requests fast
	// instead of hanging them. Zero means DefaultTimeout.
	Timeout time.Duration
	// Observe, when set, is called after every command the client sends (a
	// pipeline counts as one), with its duration and error; a nil reply is
	// not an error. It is how metrics see Valkey.
	Observe func(d time.Duration, err error)
}

// WithDefaults returns o with an empty Prefix and a zero Timeout replaced
// by DefaultPrefix and DefaultTimeout.
func (o Options) WithDefaults() Options {
	o.Prefix = Prefix(o.Prefix)
	o.Timeout = Timeout(o.Timeout)
	return o
}

// Prefix returns prefix, or DefaultPrefix when it is empty.
func Prefix(prefix string) string {
	if prefix == "" {
		return DefaultPrefix
	}
	return prefix
}

// Timeout returns timeout, or DefaultTimeout when it is zero.
func Timeout(timeout time.Duration) time.Duration {
	if timeout == 0 {
		return DefaultTimeout
	}
	return timeout
}

// Check reports what is wrong with a prefix and a call timeout, after
// defaults: a prefix that is not a valid name (it would break the hash tag
// or the invalidation channel), or a negative timeout.
func Check(prefix string, timeout time.Duration) error {
	switch {
	case !name.Valid(prefix):
		return fmt.Errorf("prefix %q: use %s", prefix, name.Rule)
	case timeout < 0:
		return fmt.Errorf("timeout %v is negative", timeout)
	}
	return nil
}

// Tag returns "{prefix}", the hash tag of a prefix: every name that starts
// with it hashes to one cluster slot, which the scripts that touch several
// names at once need.
func Tag(prefix string) string { return "{" + prefix + "}" }

// Open connects to the Valkey that o describes (after WithDefaults) and
// checks within o.Timeout that it answers. The caller owns the client.
func Open(ctx context.Context, o Options) (valkey.Client, error) {
	o = o.WithDefaults()
	if len(o.Addrs) == 0 {
		return nil, errors.New("valkey: no addresses")
	}
	if err := Check(o.Prefix, o.Timeout); err != nil {
		return nil, fmt.Errorf("valkey: %w", err)
	}
	addrs := strings.Join(o.Addrs, ",")
	// The connection timeouts decide when a connection is declared dead and
	// redialed, not how long a call may take (Timeout does): twice a call's
	// budget, so one slow call does not tear down a healthy connection, and
	// at least a second, so a TLS handshake over a WAN fits.
	connTimeout := max(2*o.Timeout, time.Second)
	opt := valkey.ClientOption{
		InitAddress:      slices.Clone(o.Addrs),
		Username:         o.Username,
		Password:         o.Password,
		SelectDB:         o.DB,
		ClientName:       "tokenhub",
		Dialer:           net.Dialer{Timeout: connTimeout},
		ConnWriteTimeout: connTimeout,
		// The key Registry caches records itself and invalidates over
		// pub/sub; a second, server-assisted cache would only cost memory.
		DisableCache: true,
		// Every command through the connection's pipeline, even one alone:
		// only there does valkey-go give up on a command when its context
		// is cancelled. A lone command with a deadline is otherwise sent and
		// read on the caller's goroutine, which waits for the reply until
		// the deadline whatever the context says: a node shutting down
		// with Valkey hung waited out every such call's timeout.
		AlwaysPipelining: true,
	}
	if o.TLS {
		host, _, err := net.SplitHostPort(o.Addrs[0])
		if err != nil {
			return nil, fmt.Errorf("valkey: address %q: %w", o.Addrs[0], err)
		}
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	}
	// NewClient dials synchronously, bounded by Dialer.Timeout rather than ctx.
	c, err := valkey.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("valkey: connect to %s: %w", addrs, err)
	}
	if o.Observe != nil {
		c = observedClient{Client: c, observe: o.Observe}
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
		c.Close()
		return nil, fmt.Errorf("valkey: ping %s: %w", addrs, err)
	}
	return c, nil
}
