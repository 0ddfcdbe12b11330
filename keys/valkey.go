package keys

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/tokenhub/tokenhub/internal/name"
	"github.com/tokenhub/tokenhub/limits"
)

// The Valkey layout. Every name starts with the hash tag "{<prefix>}", so all
// of a store's data lives in one cluster slot: the Lua scripts and MGETs below
// touch several names at once, which Valkey Cluster allows only within a slot.
// One slot is served by one node, which bounds a deployment to what one node
// holds; key and plan records are a few hundred bytes, so that is millions.
//
//	{<prefix>}:key:<id>           key record (JSON, see record.go)
//	{<prefix>}:hash:<hex sha256>  id of the key whose secret has that hash
//	{<prefix>}:keys               set of every key id
//	{<prefix>}:plan:<name>        plan record (JSON, see record.go)
//	{<prefix>}:plans              set of every plan name
//	{<prefix>}:plan-users         hash: plan name → count of unrevoked keys
//	{<prefix>}:plan-users-derived present once plan-users counts every key
//
// The sets exist so that listing never needs SCAN, which in a cluster would
// have to visit every node. Every write also publishes its invalidations
// (see invalidation.go) on InvalidationChannel(prefix), from inside its
// script.
//
// plan-users lets deletePlanScript check "no unrevoked key uses the plan"
// without visiting every key. putKeyScript maintains it while
// plan-users-derived exists. Stores written before it existed have neither
// name: the first deletePlanScript counts every key (O(keys), once) and
// creates the marker in the same atomic step, so however many nodes start
// or delete at once, the counts are derived exactly once and no key write
// falls between the count and the marker. To re-derive (say, after nodes of
// an older version wrote keys without maintaining the counts), delete both
// names: the next plan delete counts again.

// Defaults of ValkeyOptions.
// The defaults are the usage ledger's: the key store and the ledger share
// one Valkey, one prefix and one bound on a call.
const (
	// DefaultValkeyPrefix is the Prefix used when none is given.
	DefaultValkeyPrefix = limits.DefaultValkeyPrefix
	// DefaultValkeyTimeout is the Timeout used when none is given: well
	// above a round trip in one data centre, well below a client's patience.
	DefaultValkeyTimeout = limits.DefaultValkeyTimeout
)

// ValkeyOptions says how to reach Valkey and where in it the store lives.
type ValkeyOptions struct {
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
	// server. It must satisfy ValidName; empty means DefaultValkeyPrefix.
	Prefix string
	// Timeout bounds every call of the store, so a dead server fails
	// requests fast instead of hanging them. Zero means DefaultValkeyTimeout.
	Timeout time.Duration
	// Observe, when set, is called after every command the client sends (a
	// pipeline counts as one), with its duration and error; a nil reply is
	// not an error. It is how metrics see Valkey.
	Observe func(d time.Duration, err error)
}

// ValkeyStore is the shared Store of a multi-node deployment: every node
// pointed at the same Valkey and prefix sees the same keys and plans. Each
// write is one Lua script, so it is atomic for every reader on every node.
type ValkeyStore struct {
	c          valkey.Client
	ownsClient bool
	timeout    time.Duration
	closed     atomic.Bool

	hashPrefix string // "{prefix}:hash:"
	keyPrefix  string // "{prefix}:key:"
	planPrefix string // "{prefix}:plan:"
	keysSet    string // "{prefix}:keys"
	plansSet   string // "{prefix}:plans"
	planUsers  string // "{prefix}:plan-users"
	derived    string // "{prefix}:plan-users-derived"
	channel    string // InvalidationChannel(prefix)
}

// errStoreClosed is returned by every method after Close.
var errStoreClosed = errors.New("store closed")

// OpenValkey connects to the Valkey that o describes and checks that it
// answers. The store owns the client: Close closes it.
func OpenValkey(ctx context.Context, o ValkeyOptions) (*ValkeyStore, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultValkeyPrefix
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultValkeyTimeout
	}
	switch {
	case len(o.Addrs) == 0:
		return nil, errors.New("keys: valkey: no addresses")
	case !ValidName(o.Prefix):
		return nil, fmt.Errorf("keys: valkey: prefix %q: use %s", o.Prefix, name.Rule)
	case o.Timeout < 0:
		return nil, fmt.Errorf("keys: valkey: timeout %v is negative", o.Timeout)
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
		// The Registry caches records itself and invalidates over pub/sub;
		// a second, server-assisted cache would only cost memory.
		DisableCache: true,
	}
	if o.TLS {
		host, _, err := net.SplitHostPort(o.Addrs[0])
		if err != nil {
			return nil, fmt.Errorf("keys: valkey: address %q: %w", o.Addrs[0], err)
		}
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	}
	// NewClient dials synchronously, bounded by Dialer.Timeout rather than ctx.
	c, err := valkey.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("keys: valkey: connect to %s: %w", addrs, err)
	}
	if o.Observe != nil {
		c = observedClient{Client: c, observe: o.Observe}
	}
	s := newValkeyStore(c, o.Prefix, o.Timeout, true)
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
		c.Close()
		return nil, fmt.Errorf("keys: valkey: ping %s: %w", addrs, err)
	}
	return s, nil
}

// NewValkeyStore returns a store that uses c, which the caller keeps owning:
// Close does not close it. Empty prefix and zero timeout mean the defaults.
// It panics if prefix does not satisfy ValidName; configuration is validated
// before it gets here.
func NewValkeyStore(c valkey.Client, prefix string, timeout time.Duration) *ValkeyStore {
	if prefix == "" {
		prefix = DefaultValkeyPrefix
	}
	if timeout <= 0 {
		timeout = DefaultValkeyTimeout
	}
	if !ValidName(prefix) {
		panic(fmt.Sprintf("keys: NewValkeyStore: invalid prefix %q", prefix))
	}
	return newValkeyStore(c, prefix, timeout, false)
}

func newValkeyStore(c valkey.Client, prefix string, timeout time.Duration, owns bool) *ValkeyStore {
	tag := "{" + prefix + "}:"
	return &ValkeyStore{
		c:          c,
		ownsClient: owns,
		timeout:    timeout,
		hashPrefix: tag + "hash:",
		keyPrefix:  tag + "key:",
		planPrefix: tag + "plan:",
		keysSet:    tag + "keys",
		plansSet:   tag + "plans",
		planUsers:  tag + "plan-users",
		derived:    tag + "plan-users-derived",
		channel:    InvalidationChannel(prefix),
	}
}

// Client returns the store's client, for the other users of the same Valkey
// (invalidation over pub/sub, rate-limit counters).
func (s *ValkeyStore) Client() valkey.Client { return s.c }

// begin returns the context for one call: ctx bounded by the store's timeout.
func (s *ValkeyStore) begin(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if s.closed.Load() {
		return nil, nil, errStoreClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	return ctx, cancel, nil
}

// mgetBatch is how many records one MGET asks for, so listing a large store
// does not block the server for one long command.
const mgetBatch = 500

// records returns the records named by the members of set, in no order. A
// record deleted between reading the set and reading the records is skipped,
// as if the listing had happened a moment later.
func (s *ValkeyStore) records(ctx context.Context, set, prefix string) ([][]byte, error) {
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	members, err := s.c.Do(ctx, s.c.B().Smembers().Key(set).Build()).AsStrSlice()
	if err != nil {
		return nil, err
	}
	if len(members) == 0 {
		return nil, nil
	}
	var cmds valkey.Commands
	for batch := range slices.Chunk(members, mgetBatch) {
		names := make([]string, len(batch))
		for i, m := range batch {
			names[i] = prefix + m
		}
		cmds = append(cmds, s.c.B().Mget().Key(names...).Build())
	}
	recs := make([][]byte, 0, len(members))
	for _, res := range s.c.DoMulti(ctx, cmds...) {
		vals, err := res.ToArray()
		if err != nil {
			return nil, err
		}
		for _, v := range vals {
			rec, err := v.AsBytes()
			if valkey.IsValkeyNil(err) {
				continue
			}
			if err != nil {
				return nil, err
			}
			recs = append(recs, rec)
		}
	}
	return recs, nil
}

// Close implements Store. It closes the client only if OpenValkey made it.
// Closing twice is harmless.
func (s *ValkeyStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.ownsClient {
		s.c.Close()
	}
	return nil
}
