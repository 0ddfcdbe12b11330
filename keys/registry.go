package keys

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// RegistryOptions tunes a Registry. Zero values select the defaults.
type RegistryOptions struct {
	// MaxKeys is how many key records the cache holds; required (config's
	// cache.max_keys holds the default).
	MaxKeys int64
	// NegativeTTL is how long a well-formed but unknown secret is remembered as
	// unknown, so repeating it costs no store read; required. The memory for
	// this is bounded (MaxKeys/10 entries, at least 1024).
	NegativeTTL time.Duration
	// StaleIfError bounds how long a cached key or plan is still served
	// while the store cannot be reached, counted from the last moment this
	// node knew it current: its last successful read or, while invalidations
	// arrive (see Invalidator), the last message received. Since a revocation
	// made elsewhere after that moment cannot reach this node, it is how late
	// a cut-off node may honour a revoked key: at most 4s keeps the 5-second
	// promise with 1s for the message's own delay (config's default).
	// Required. Unknown keys get ErrUnavailable meanwhile.
	StaleIfError time.Duration
	// StoreRetry is how long after a failed store read the store is left
	// alone (cached entries served, misses refused at once), so an outage
	// costs one timeout per StoreRetry rather than one per request; default 500ms.
	StoreRetry time.Duration
	// Now is the clock; default time.Now. Tests replace it.
	Now func() time.Time
}

// Registry authenticates secrets against a read-through cache in front of a
// Store and is the write path of the admin API. Every admin write goes to the
// store first and then evicts this node's cache, so the change holds from the
// very next Authenticate on this node.
type Registry struct {
	store        Store
	now          func() time.Time
	negativeTTL  time.Duration
	staleIfError time.Duration
	storeRetry   time.Duration

	// maxAge bounds, in nanoseconds, how old a cached entry may be before it
	// is read again; 0 means no bound. It is set while invalidations from
	// other nodes may be missed (see Invalidator).
	maxAge atomic.Int64
	// downUntil is when, in unix nanoseconds, the store may be tried again
	// after a failure.
	downUntil atomic.Int64
	// subscribedAt is when, in unix nanoseconds, the current invalidation
	// subscription began (MarkAllStale): entries filled before it may have
	// missed messages, so they are re-read before use and, while the store
	// is down, served only on the strength of their own read.
	subscribedAt atomic.Int64
	// coherentAt is when, in unix nanoseconds, an invalidation message last
	// arrived on the current subscription (MarkCoherent): every change made
	// before it was published has been applied to entries filled since
	// subscribedAt.
	coherentAt atomic.Int64

	// keys caches known keys and unknown caches hashes the store does not
	// have. They are separate so that a flood of random secrets cannot push
	// real keys out. Both are keyed by cacheKey(hash).
	keys    *ristretto.Cache[uint64, *keyEntry]
	unknown *ristretto.Cache[uint64, *keyEntry]
	// plans maps plan names to cached plans. Plans are few and change rarely,
	// so a copy-on-write map gives lock-free, allocation-free reads.
	plans atomic.Pointer[map[string]*planEntry]

	// mu orders cache fills against evictions. A fill remembers keySeq (or
	// planSeq) before it reads the store and stores its result only if no
	// eviction happened since; evictions bump the counter under mu. Without
	// this a fill that read a record just before RevokeKey wrote the store
	// could put the unrevoked record back after RevokeKey evicted it.
	mu      sync.Mutex
	keySeq  atomic.Uint64
	planSeq atomic.Uint64
	// gen is bumped by EvictAll; key entries of an older generation are
	// ignored, which empties the cache in O(1) without racing readers.
	gen    atomic.Uint64
	closed bool // under mu

	// adminMu serializes admin writes on this node. It is not what keeps
	// concurrent writes from overwriting each other (Store.PutKey's
	// compare-and-set does that across nodes); it only spares same-node
	// writers retries.
	adminMu sync.Mutex

	// stats is written by every lookup; the padding keeps it off the cache
	// line of the read-mostly fields above.
	_     [64]byte
	stats cacheStats
}

// keyEntry is a cached answer for one secret hash: the key, or nil for
// "unknown".
type keyEntry struct {
	hash [32]byte // compared on every hit: the cache key is only 64 bits of it
	key  *Key
	gen  uint64
	// filledAt is when the entry was read from the store, in unix nanoseconds
	// of the Registry's clock; it bounds how long unknown entries count and
	// will bound staleness when other nodes' writes are involved.
	filledAt int64
}

// planEntry is a cached plan, or nil for "does not exist".
type planEntry struct {
	plan     *Plan
	filledAt int64
}

// Tunables of the Registry that no operator sets. The cache's sizes and
// bounds (RegistryOptions) have their defaults in the config, their one
// source.
const (
	defaultStoreRetry = 500 * time.Millisecond
	minUnknownEntries = 1024
	// cacheBufferItems is ristretto's recommended access-batch size.
	cacheBufferItems = 64
)

// NewRegistry returns a Registry reading through to store. The Registry does
// not own the store: Close leaves it open.
func NewRegistry(store Store, opts RegistryOptions) (*Registry, error) {
	if store == nil {
		return nil, errors.New("keys: new registry: nil store")
	}
	switch {
	case opts.MaxKeys <= 0:
		return nil, fmt.Errorf("keys: new registry: max keys %d: must be positive", opts.MaxKeys)
	case opts.NegativeTTL <= 0:
		return nil, fmt.Errorf("keys: new registry: negative TTL %v: must be positive", opts.NegativeTTL)
	case opts.StaleIfError <= 0:
		return nil, fmt.Errorf("keys: new registry: stale-if-error %v: must be positive", opts.StaleIfError)
	}
	if opts.StoreRetry <= 0 {
		opts.StoreRetry = defaultStoreRetry
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	keys, err := newKeyCache(opts.MaxKeys)
	if err != nil {
		return nil, fmt.Errorf("keys: new registry: key cache: %w", err)
	}
	unknown, err := newKeyCache(max(opts.MaxKeys/10, minUnknownEntries))
	if err != nil {
		keys.Close()
		return nil, fmt.Errorf("keys: new registry: unknown-key cache: %w", err)
	}
	r := &Registry{
		store:        store,
		now:          opts.Now,
		negativeTTL:  opts.NegativeTTL,
		staleIfError: opts.StaleIfError,
		storeRetry:   opts.StoreRetry,
		keys:         keys,
		unknown:      unknown,
	}
	r.plans.Store(&map[string]*planEntry{})
	return r, nil
}

// newKeyCache returns a cache of up to n entries of cost 1 each.
func newKeyCache(n int64) (*ristretto.Cache[uint64, *keyEntry], error) {
	return ristretto.NewCache(&ristretto.Config[uint64, *keyEntry]{
		NumCounters:        10 * n, // ristretto's advice: 10x the number of entries
		MaxCost:            n,
		BufferItems:        cacheBufferItems,
		IgnoreInternalCost: true,
		// The keys are already uniform (SHA-256 bits); the default would box
		// them into an interface on every Get.
		KeyToHash: func(k uint64) (uint64, uint64) { return k, 0 },
	})
}

// cacheKey is the ristretto key of a secret hash.
func cacheKey(hash *[32]byte) uint64 {
	return binary.LittleEndian.Uint64(hash[:8])
}

// Authenticate resolves a presented secret to its key and plan. It returns
// ErrMalformedKey, ErrUnknownKey, ErrRevoked, ErrExpired or an error wrapping
// ErrPlanNotFound; with the last three the key is returned too, so callers can
// log its id. Anything else is a store failure.
//
// The returned Key and Plan are shared with the cache and must not be
// modified. When both are cached, Authenticate does not touch the store and
// makes no allocation of its own; ristretto's Get hands its access log to the
// admission policy in 512-byte batches, one per 64 Gets (about 8 B/op).
func (r *Registry) Authenticate(ctx context.Context, secret []byte) (*Key, *Plan, error) {
	hash, err := ParseSecret(secret)
	if err != nil {
		return nil, nil, err
	}
	now := r.now()
	k, err := r.keyByHash(ctx, &hash, now)
	if err != nil {
		return nil, nil, err
	}
	if err := k.Check(now); err != nil {
		return k, nil, err
	}
	p, err := r.plan(ctx, k.Plan, now)
	if err != nil {
		return k, nil, err
	}
	return k, p, nil
}

// CacheStats counts how key lookups were answered since the Registry
// opened.
type CacheStats struct {
	// Hits were answered from the cache, fresh.
	Hits uint64
	// NegativeHits were answered "unknown key" from the cache.
	NegativeHits uint64
	// Misses read the store.
	Misses uint64
	// StaleHits were answered from an entry past its freshness because the
	// store is down (cache.stale_if_error).
	StaleHits uint64
	// Unavailable were refused because the store is down and the key was not
	// cached.
	Unavailable uint64
}

type cacheStats struct {
	hits, negativeHits, misses, staleHits, unavailable atomic.Uint64
}

// Stats returns the key cache's counts so far.
func (r *Registry) Stats() CacheStats {
	s := &r.stats
	return CacheStats{Hits: s.hits.Load(), NegativeHits: s.negativeHits.Load(), Misses: s.misses.Load(),
		StaleHits: s.staleHits.Load(), Unavailable: s.unavailable.Load()}
}

// keyByHash returns the key for hash from the cache, or from the store,
// filling the cache.
func (r *Registry) keyByHash(ctx context.Context, hash *[32]byte, now time.Time) (*Key, error) {
	ck := cacheKey(hash)
	gen := r.gen.Load()
	var stale *keyEntry
	if e, ok := r.keys.Get(ck); ok && e.hash == *hash && e.gen == gen {
		if r.fresh(e.filledAt, now) {
			r.stats.hits.Add(1)
			return e.key, nil
		}
		stale = e
	}
	if e, ok := r.unknown.Get(ck); ok && e.hash == *hash && e.gen == gen &&
		now.UnixNano()-e.filledAt < int64(r.negativeTTL) && e.filledAt >= r.subscribedAt.Load() {
		r.stats.negativeHits.Add(1)
		return nil, ErrUnknownKey
	}
	if r.storeDown(now) {
		// Do not make every request wait out the store's timeout while it is
		// known to be down: serve what was cached, refuse what was not.
		if stale != nil && r.servableStale(stale.filledAt, now) {
			r.stats.staleHits.Add(1)
			return stale.key, nil
		}
		r.stats.unavailable.Add(1)
		return nil, fmt.Errorf("keys: authenticate: %w", ErrUnavailable)
	}
	r.stats.misses.Add(1)

	// Load seq before gen: an EvictAll between the two changes seq, so the
	// fill is dropped rather than stored under the new generation.
	seq := r.keySeq.Load()
	gen = r.gen.Load()
	k, err := r.store.KeyByHash(ctx, *hash)
	e := &keyEntry{hash: *hash, key: k, gen: gen, filledAt: now.UnixNano()}
	switch {
	case err == nil:
		r.fillKey(r.keys, ck, e, seq, 0)
		return k, nil
	case errors.Is(err, ErrNotFound):
		e.key = nil
		r.fillKey(r.unknown, ck, e, seq, r.negativeTTL)
		return nil, ErrUnknownKey
	default:
		r.markStoreDown(now)
		if stale != nil && r.servableStale(stale.filledAt, now) {
			return stale.key, nil
		}
		return nil, fmt.Errorf("keys: authenticate: %w", err)
	}
}

// fillKey stores e in c unless a key eviction happened since seq was read.
func (r *Registry) fillKey(c *ristretto.Cache[uint64, *keyEntry], ck uint64, e *keyEntry, seq uint64, ttl time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.keySeq.Load() != seq {
		return
	}
	// Set may drop the entry under contention or admission pressure; the next
	// miss simply fills again.
	c.SetWithTTL(ck, e, 1, ttl)
}

// plan returns the named plan from the plan cache or the store, filling the
// cache. A missing plan is remembered for NegativeTTL.
func (r *Registry) plan(ctx context.Context, name string, now time.Time) (*Plan, error) {
	e := (*r.plans.Load())[name]
	if e != nil {
		if e.plan != nil && r.fresh(e.filledAt, now) {
			return e.plan, nil
		}
		if e.plan == nil && now.UnixNano()-e.filledAt < int64(r.negativeTTL) {
			return nil, fmt.Errorf("keys: plan %s: %w", name, ErrPlanNotFound)
		}
	}
	if r.storeDown(now) {
		if e != nil && e.plan != nil && r.servableStale(e.filledAt, now) {
			return e.plan, nil
		}
		return nil, fmt.Errorf("keys: plan %s: %w", name, ErrUnavailable)
	}
	seq := r.planSeq.Load()
	p, err := r.store.Plan(ctx, name)
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		p = nil
	default:
		r.markStoreDown(now)
		if e != nil && e.plan != nil && r.servableStale(e.filledAt, now) {
			return e.plan, nil
		}
		return nil, fmt.Errorf("keys: authenticate: %w", err)
	}

	r.mu.Lock()
	if !r.closed && r.planSeq.Load() == seq {
		m := maps.Clone(*r.plans.Load())
		m[name] = &planEntry{plan: p, filledAt: now.UnixNano()}
		r.plans.Store(&m)
	}
	r.mu.Unlock()

	if p == nil {
		return nil, fmt.Errorf("keys: plan %s: %w", name, ErrPlanNotFound)
	}
	return p, nil
}

// SetMaxAge bounds how old a cached key or plan may be before it is read from
// the store again; 0 removes the bound. The Invalidator sets it while this
// node may be missing other nodes' invalidations.
func (r *Registry) SetMaxAge(d time.Duration) { r.maxAge.Store(int64(d)) }

// fresh reports whether an entry filled at filledAt may be used without
// reading the store again.
func (r *Registry) fresh(filledAt int64, now time.Time) bool {
	if filledAt < r.subscribedAt.Load() {
		return false
	}
	ma := r.maxAge.Load()
	return ma == 0 || now.UnixNano()-filledAt < ma
}

// servableStale reports whether an entry that is due for a re-read may still
// be served because the store cannot be reached: while less than
// StaleIfError has passed since the entry was last known current.
func (r *Registry) servableStale(filledAt int64, now time.Time) bool {
	known := filledAt
	if filledAt >= r.subscribedAt.Load() {
		known = max(known, r.coherentAt.Load())
	}
	return now.UnixNano()-known < int64(r.staleIfError)
}

// MarkAllStale is for when an invalidation subscription (re)starts: messages
// published before it may have been missed, so every cached key and plan is
// read again before its next use. Unlike EvictAll the entries stay, so while
// the store cannot be reached they are still served within StaleIfError of
// their last read, instead of every key getting ErrUnavailable.
func (r *Registry) MarkAllStale() {
	now := r.now().UnixNano()
	r.subscribedAt.Store(now)
	r.coherentAt.Store(now)
}

// MarkCoherent records that an invalidation message just arrived on the
// current subscription, so entries filled since it began are known current
// as of now (see StaleIfError).
func (r *Registry) MarkCoherent() { r.coherentAt.Store(r.now().UnixNano()) }

// StoreDown reports whether a store read failed within the last StoreRetry:
// meanwhile cached keys are served for up to StaleIfError after their last
// successful read, and keys not cached are refused with ErrUnavailable.
func (r *Registry) StoreDown() bool { return r.storeDown(r.now()) }

func (r *Registry) storeDown(now time.Time) bool { return now.UnixNano() < r.downUntil.Load() }

func (r *Registry) markStoreDown(now time.Time) {
	r.downUntil.Store(now.UnixNano() + int64(r.storeRetry))
}

// EvictKeyHash makes this node forget what it cached about the secret with
// this hash, known or unknown. When it returns, the next Authenticate of that
// secret reads the store.
func (r *Registry) EvictKeyHash(hash [32]byte) {
	ck := cacheKey(&hash)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.keySeq.Add(1)
	r.keys.Del(ck)
	r.unknown.Del(ck)
	// Del removes the visible entry at once, but a fill's Set queued before
	// it is applied later, resurrecting the entry until the Del's own queued
	// delete catches up. Wait returns once both have been applied.
	r.keys.Wait()
	r.unknown.Wait()
}

// EvictPlan makes this node forget the named plan.
func (r *Registry) EvictPlan(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.planSeq.Add(1)
	m := maps.Clone(*r.plans.Load())
	delete(m, name)
	r.plans.Store(&m)
}

// EvictAll makes this node forget every cached key and plan, for when it may
// have missed invalidations.
func (r *Registry) EvictAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.keySeq.Add(1)
	r.planSeq.Add(1)
	r.gen.Add(1)
	r.plans.Store(&map[string]*planEntry{})
}

// Close releases the caches. The store stays open. Call it after the last
// Authenticate has returned: ristretto does not support Get racing Close.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	r.keys.Close()
	r.unknown.Close()
}

// CreateKey creates a key on an existing plan and returns it with its secret,
// which is not stored anywhere and cannot be recovered. A zero expiresAt means
// the key never expires.
func (r *Registry) CreateKey(ctx context.Context, spec KeySpec) (*Key, string, error) {
	name, plan := spec.Name, spec.Plan
	if err := checkKeyLimits(spec.RPM, spec.TPM); err != nil {
		return nil, "", fmt.Errorf("keys: create key: %w", err)
	}
	if !validKeyName(name) {
		return nil, "", fmt.Errorf("keys: create key: %w: name must be valid UTF-8 of at most %d bytes", ErrInvalidKey, maxKeyNameLen)
	}
	r.adminMu.Lock()
	defer r.adminMu.Unlock()
	// The plan's existence is checked by PutKey, in the step that writes
	// the key: a check here could pass just before another node deletes it.
	id, err := r.unusedKeyID(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("keys: create key: %w", err)
	}
	secret, err := NewSecret()
	if err != nil {
		return nil, "", fmt.Errorf("keys: create key %s: %w", id, err)
	}
	k := &Key{
		ID:        id,
		Name:      name,
		Plan:      plan,
		Hash:      HashSecret(secret),
		Last4:     last4(secret),
		CreatedAt: r.now().UTC(),
		ExpiresAt: spec.ExpiresAt.UTC(),
		RPM:       spec.RPM,
		TPM:       spec.TPM,
	}
	if err := r.store.PutKey(ctx, k); err != nil {
		return nil, "", fmt.Errorf("keys: create key: %w", err)
	}
	// Forget a cached "unknown" for this hash, however unlikely.
	r.EvictKeyHash(k.Hash)
	return k, secret, nil
}

// unusedKeyID returns a key id no stored key has. With 96 random bits a
// collision is not expected in practice, but PutKey would silently replace the
// other key, so it is cheap insurance.
func (r *Registry) unusedKeyID(ctx context.Context) (string, error) {
	for range 3 {
		id, err := newKeyID()
		if err != nil {
			return "", err
		}
		_, err = r.store.KeyByID(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return id, nil
		}
		if err != nil {
			return "", err
		}
	}
	return "", errors.New("key id collisions: the random source is broken")
}

// last4 returns the last four characters of secret in a string of its own;
// a substring would keep the whole secret alive in memory with the Key.
func last4(secret string) string {
	return strings.Clone(secret[len(secret)-4:])
}

// Key returns the key with the given id from the store.
func (r *Registry) Key(ctx context.Context, id string) (*Key, error) {
	return r.store.KeyByID(ctx, id)
}

// Keys returns all keys from the store, ordered by CreatedAt then ID.
func (r *Registry) Keys(ctx context.Context) ([]*Key, error) {
	return r.store.Keys(ctx)
}

// KeySpec is what CreateKey makes a key from.
type KeySpec struct {
	Name string
	Plan string // must exist
	// ExpiresAt is when the key stops working; zero means never.
	ExpiresAt time.Time
	// RPM and TPM lower the plan's limits for this key; 0 keeps the plan's.
	RPM, TPM int64
}

// KeyChanges says what UpdateKey changes; nil fields stay as they are.
type KeyChanges struct {
	Name *string
	Plan *string // must exist
	// RPM and TPM set the key's own limits; 0 returns to the plan's.
	RPM, TPM *int64
}

// checkKeyLimits validates a key's own rpm and tpm.
func checkKeyLimits(rpm, tpm int64) error {
	if rpm < 0 || rpm > maxPerMinute || tpm < 0 || tpm > maxPerMinute {
		return fmt.Errorf("%w: rpm and tpm must be from 0 (the plan's) to %d", ErrInvalidKey, maxPerMinute)
	}
	return nil
}

// maxWriteAttempts bounds the read-modify-write retries of a key write that
// keeps losing its compare-and-set to writes on other nodes. Each lost round
// means another write succeeded, so running out takes a storm of admin writes
// on one key; the caller then gets ErrConflict and may retry.
const maxWriteAttempts = 16

// modifyKey reads the key, applies edit to it and writes it back with
// Store.PutKey's compare-and-set, reading again and re-applying edit when
// another writer (on any node) changed the key in between. edit returns
// write=false when the key needs no write. It returns the key as stored.
func (r *Registry) modifyKey(ctx context.Context, id string, edit func(k *Key) (write bool, err error)) (*Key, error) {
	var err error
	for range maxWriteAttempts {
		var k *Key
		k, err = r.store.KeyByID(ctx, id)
		if err != nil {
			return nil, err
		}
		write, editErr := edit(k)
		if editErr != nil {
			return nil, editErr
		}
		if !write {
			return k, nil
		}
		err = r.store.PutKey(ctx, k)
		if err == nil {
			return k, nil
		}
		if !errors.Is(err, ErrConflict) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("keys: key %s: gave up after %d attempts: %w", id, maxWriteAttempts, err)
}

// UpdateKey applies ch to a key in one write, so a change holds whole or not
// at all.
func (r *Registry) UpdateKey(ctx context.Context, id string, ch KeyChanges) (*Key, error) {
	if ch.Name != nil && !validKeyName(*ch.Name) {
		return nil, fmt.Errorf("keys: update key %s: %w: name must be valid UTF-8 of at most %d bytes", id, ErrInvalidKey, maxKeyNameLen)
	}
	r.adminMu.Lock()
	defer r.adminMu.Unlock()
	// A new plan's existence is checked by PutKey, as in CreateKey.
	k, err := r.modifyKey(ctx, id, func(k *Key) (bool, error) {
		if ch.Name != nil {
			k.Name = *ch.Name
		}
		if ch.Plan != nil {
			k.Plan = *ch.Plan
		}
		if ch.RPM != nil {
			k.RPM = *ch.RPM
		}
		if ch.TPM != nil {
			k.TPM = *ch.TPM
		}
		if err := checkKeyLimits(k.RPM, k.TPM); err != nil {
			return false, fmt.Errorf("keys: update key %s: %w", id, err)
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	r.EvictKeyHash(k.Hash)
	return k, nil
}

// RevokeKey revokes a key; it is refused from the next Authenticate on this
// node. Revoking a revoked key keeps the first RevokedAt. Revocation is
// terminal: the stores refuse any later write that would clear it.
func (r *Registry) RevokeKey(ctx context.Context, id string) (*Key, error) {
	r.adminMu.Lock()
	defer r.adminMu.Unlock()
	k, err := r.modifyKey(ctx, id, func(k *Key) (bool, error) {
		if !k.RevokedAt.IsZero() {
			return false, nil
		}
		k.RevokedAt = r.now().UTC()
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	// Evict even when already revoked: this node may hold an entry from
	// before another node revoked the key.
	r.EvictKeyHash(k.Hash)
	return k, nil
}

// RotateKey gives a key a new secret, returned once; the old secret is refused
// from the next Authenticate on this node. Revoked keys cannot be rotated
// (ErrRevoked).
func (r *Registry) RotateKey(ctx context.Context, id string) (*Key, string, error) {
	r.adminMu.Lock()
	defer r.adminMu.Unlock()
	secret, err := NewSecret()
	if err != nil {
		return nil, "", fmt.Errorf("keys: rotate key %s: %w", id, err)
	}
	var old [32]byte
	k, err := r.modifyKey(ctx, id, func(k *Key) (bool, error) {
		if !k.RevokedAt.IsZero() {
			return false, fmt.Errorf("keys: rotate key %s: %w", id, ErrRevoked)
		}
		old = k.Hash
		k.Hash = HashSecret(secret)
		k.Last4 = last4(secret)
		return true, nil
	})
	if err != nil {
		return nil, "", err
	}
	r.EvictKeyHash(old)
	r.EvictKeyHash(k.Hash)
	return k, secret, nil
}

// PutPlan validates p and creates or replaces the plan of its name. p itself
// is not modified or retained.
func (r *Registry) PutPlan(ctx context.Context, p *Plan) error {
	if err := copyPlan(p).Compile(); err != nil {
		return fmt.Errorf("keys: put plan: %w", err)
	}
	r.adminMu.Lock()
	defer r.adminMu.Unlock()
	if err := r.store.PutPlan(ctx, p); err != nil {
		return err
	}
	r.EvictPlan(p.Name)
	return nil
}

// Plan returns the named plan from the store, compiled.
func (r *Registry) Plan(ctx context.Context, name string) (*Plan, error) {
	return r.store.Plan(ctx, name)
}

// Plans returns all plans from the store, ordered by name.
func (r *Registry) Plans(ctx context.Context) ([]*Plan, error) {
	return r.store.Plans(ctx)
}

// DeletePlan deletes a plan that no unrevoked key uses; otherwise it returns
// an error wrapping ErrPlanInUse. Expired keys count as users: only
// revocation releases a plan. The store checks this in the step that
// deletes (see Store.DeletePlan), so a key created on, or moved onto, the
// plan by another node at the same moment either makes the delete fail or
// fails itself with ErrPlanNotFound.
func (r *Registry) DeletePlan(ctx context.Context, name string) error {
	r.adminMu.Lock()
	defer r.adminMu.Unlock()
	if err := r.store.DeletePlan(ctx, name); err != nil {
		return err
	}
	r.EvictPlan(name)
	return nil
}

// SeedPlans creates or replaces the given plans, typically from the config
// file at start. All are validated before any is written, so an invalid
// config changes nothing.
func (r *Registry) SeedPlans(ctx context.Context, plans []*Plan) error {
	for _, p := range plans {
		if err := copyPlan(p).Compile(); err != nil {
			return fmt.Errorf("keys: seed plans: %w", err)
		}
	}
	for _, p := range plans {
		if err := r.PutPlan(ctx, p); err != nil {
			return fmt.Errorf("keys: seed plans: %w", err)
		}
	}
	return nil
}
