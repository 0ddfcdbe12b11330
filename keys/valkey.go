package keys

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/tokenhub/tokenhub/internal/valkeyx"
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

// OpenValkey connects to the Valkey that o describes (see valkeyx.Open) and
// returns the store in it under o.Prefix. The store owns the client: Close
// closes it.
func OpenValkey(ctx context.Context, o valkeyx.Options) (*ValkeyStore, error) {
	o = o.WithDefaults()
	c, err := valkeyx.Open(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return newValkeyStore(c, o.Prefix, o.Timeout, true), nil
}

// NewValkeyStore returns a store that uses c, which the caller keeps owning:
// Close does not close it. Empty prefix and zero timeout mean the defaults.
// It panics if prefix does not satisfy ValidName; configuration is validated
// before it gets here.
func NewValkeyStore(c valkey.Client, prefix string, timeout time.Duration) *ValkeyStore {
	prefix = valkeyx.Prefix(prefix)
	if timeout <= 0 {
		timeout = valkeyx.DefaultTimeout
	}
	if !ValidName(prefix) {
		panic(fmt.Sprintf("keys: NewValkeyStore: invalid prefix %q", prefix))
	}
	return newValkeyStore(c, prefix, timeout, false)
}

func newValkeyStore(c valkey.Client, prefix string, timeout time.Duration, owns bool) *ValkeyStore {
	tag := valkeyx.Tag(prefix) + ":"
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
