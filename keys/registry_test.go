package keys

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingStore counts the store reads the request path makes and can pause
// KeyByHash after it has read the store, to stage races deterministically.
type countingStore struct {
	Store
	byHash, plan atomic.Int64
	// afterKeyByHash, if set, runs after every KeyByHash read.
	afterKeyByHash atomic.Pointer[func()]
}

func (s *countingStore) KeyByHash(ctx context.Context, hash [32]byte) (*Key, error) {
	s.byHash.Add(1)
	k, err := s.Store.KeyByHash(ctx, hash)
	if f := s.afterKeyByHash.Load(); f != nil {
		(*f)()
	}
	return k, err
}

func (s *countingStore) Plan(ctx context.Context, name string) (*Plan, error) {
	s.plan.Add(1)
	return s.Store.Plan(ctx, name)
}

// fakeClock is a settable clock for RegistryOptions.Now.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// fixture is a Registry over a counting memStore with a fake clock and the
// plans "free" (gpt-4o-mini) and "pro" (everything).
type fixture struct {
	t     *testing.T
	ctx   context.Context
	store *countingStore
	clock *fakeClock
	r     *Registry
}

// The cache's settings in tests: the config's defaults (config.defaultCache),
// which keys takes explicitly.
const (
	testNegativeTTL  = 2 * time.Second
	testStaleIfError = 4 * time.Second
	testStaleAfter   = time.Second
)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	fx := &fixture{t: t, ctx: context.Background(), store: &countingStore{Store: newMemStore()}, clock: &fakeClock{}}
	fx.clock.ns.Store(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	r, err := NewRegistry(fx.store, RegistryOptions{MaxKeys: 1000, NegativeTTL: testNegativeTTL, StaleIfError: testStaleIfError, Now: fx.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	fx.r = r
	err = r.SeedPlans(fx.ctx, []*Plan{
		{Name: "free", Models: []string{"gpt-4o-mini"}, RPM: 10},
		{Name: "pro", Models: []string{"*"}, RPM: 1000},
	})
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

// create makes a key on plan and returns it with its secret.
func (fx *fixture) create(plan string) (*Key, string) {
	fx.t.Helper()
	k, secret, err := fx.r.CreateKey(fx.ctx, KeySpec{Name: "test", Plan: plan})
	if err != nil {
		fx.t.Fatalf("CreateKey: %v", err)
	}
	return k, secret
}

// settle waits until ristretto has applied every buffered Set and Del.
func (fx *fixture) settle() {
	fx.r.keys.Wait()
	fx.r.unknown.Wait()
}

// reads returns how many KeyByHash and Plan calls reached the store so far.
func (fx *fixture) reads() (byHash, plan int64) {
	return fx.store.byHash.Load(), fx.store.plan.Load()
}

// auth asserts that Authenticate(secret) fails with want (nil: succeeds with
// planName) and returns the key, if any.
func (fx *fixture) auth(secret string, want error, planName string) *Key {
	fx.t.Helper()
	k, p, err := fx.r.Authenticate(fx.ctx, []byte(secret))
	if want != nil {
		if !errors.Is(err, want) {
			fx.t.Fatalf("Authenticate = %v, want %v", err, want)
		}
		return k
	}
	if err != nil {
		fx.t.Fatalf("Authenticate: %v", err)
	}
	if p == nil || p.Name != planName {
		fx.t.Fatalf("Authenticate returned plan %+v, want %s", p, planName)
	}
	return k
}

func TestAuthenticate(t *testing.T) {
	fx := newFixture(t)
	active, activeSecret := fx.create("free")
	_, revokedSecret := fx.create("pro")
	revoked, err := fx.r.RevokeKey(fx.ctx, fx.mustKeyBySecret(revokedSecret).ID)
	if err != nil {
		t.Fatal(err)
	}
	expiring, expiringSecret, err := fx.r.CreateKey(fx.ctx, KeySpec{Name: "exp", Plan: "pro", ExpiresAt: fx.clock.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// A key whose plan vanished behind the registry's back.
	orphanSecret, _ := NewSecret()
	orphan := &Key{ID: "key_orphan", Plan: "deleted", Hash: HashSecret(orphanSecret)}
	fx.store.Store.(*memStore).putStranded(orphan)
	unknownSecret, _ := NewSecret()

	f := func(secret string, want error, wantKey *Key, wantPlan string) {
		t.Helper()
		k := fx.auth(secret, want, wantPlan)
		if wantKey == nil {
			if k != nil {
				t.Fatalf("Authenticate returned key %s, want none", k.ID)
			}
			return
		}
		if k == nil || k.ID != wantKey.ID {
			t.Fatalf("Authenticate returned key %v, want %s", k, wantKey.ID)
		}
	}
	// Each case twice: once through the store, once through the cache.
	for range 2 {
		f(activeSecret, nil, active, "free")
		f(revokedSecret, ErrRevoked, revoked, "")
		f(expiringSecret, nil, expiring, "pro")
		f(orphanSecret, ErrPlanNotFound, orphan, "")
		f(unknownSecret, ErrUnknownKey, nil, "")
		f("", ErrMalformedKey, nil, "")
		f("Bearer "+activeSecret, ErrMalformedKey, nil, "")
		f(activeSecret[:51]+"x", ErrMalformedKey, nil, "")
		fx.settle()
	}
	fx.clock.Advance(time.Hour)
	f(expiringSecret, ErrExpired, expiring, "")
	f(activeSecret, nil, active, "free")
}

// mustKeyBySecret returns the stored key of secret.
func (fx *fixture) mustKeyBySecret(secret string) *Key {
	fx.t.Helper()
	k, err := fx.store.Store.KeyByHash(fx.ctx, HashSecret(secret))
	if err != nil {
		fx.t.Fatal(err)
	}
	return k
}

func TestAuthenticateHitReadsNoStore(t *testing.T) {
	fx := newFixture(t)
	k, secret := fx.create("free")
	byHash0, plan0 := fx.reads()
	first := fx.auth(secret, nil, "free")
	if byHash, plan := fx.reads(); byHash-byHash0 != 1 || plan-plan0 != 1 {
		t.Fatalf("first Authenticate made %d key and %d plan reads, want 1 and 1", byHash-byHash0, plan-plan0)
	}
	fx.settle()
	for range 100 {
		if got := fx.auth(secret, nil, "free"); got != first {
			t.Fatalf("cache hit returned a different *Key (%p, first %p) for %s", got, first, k.ID)
		}
	}
	if byHash, plan := fx.reads(); byHash-byHash0 != 1 || plan-plan0 != 1 {
		t.Fatalf("after 100 cache hits the store saw %d key and %d plan reads, want still 1 and 1", byHash-byHash0, plan-plan0)
	}
}

func TestMalformedSecretReachesNoStore(t *testing.T) {
	fx := newFixture(t)
	_, secret := fx.create("free")
	byHash0, plan0 := fx.reads()
	for _, s := range []string{"", "sk-", secret[:51], secret + "=", strings.ToUpper(secret)} {
		fx.auth(s, ErrMalformedKey, "")
	}
	if byHash, plan := fx.reads(); byHash != byHash0 || plan != plan0 {
		t.Fatalf("malformed secrets caused %d key and %d plan reads, want none", byHash-byHash0, plan-plan0)
	}
}

func TestUnknownKeyIsCachedNegatively(t *testing.T) {
	fx := newFixture(t)
	secret, _ := NewSecret()
	fx.auth(secret, ErrUnknownKey, "")
	fx.settle()
	for range 100 {
		fx.auth(secret, ErrUnknownKey, "")
	}
	if byHash, _ := fx.reads(); byHash != 1 {
		t.Fatalf("101 attempts with one unknown secret made %d store reads, want 1", byHash)
	}
	fx.clock.Advance(testNegativeTTL - time.Nanosecond)
	fx.auth(secret, ErrUnknownKey, "")
	if byHash, _ := fx.reads(); byHash != 1 {
		t.Fatalf("within NegativeTTL the store saw %d reads, want 1", byHash)
	}
	fx.clock.Advance(time.Nanosecond)
	fx.auth(secret, ErrUnknownKey, "")
	if byHash, _ := fx.reads(); byHash != 2 {
		t.Fatalf("after NegativeTTL the store saw %d reads, want 2", byHash)
	}

	// A key that appears behind the registry's back (another node created it)
	// works as soon as its hash is evicted, before NegativeTTL runs out.
	fx.settle()
	if err := fx.store.PutKey(fx.ctx, &Key{ID: "key_late", Plan: "free", Hash: HashSecret(secret)}); err != nil {
		t.Fatal(err)
	}
	fx.auth(secret, ErrUnknownKey, "")
	fx.r.EvictKeyHash(HashSecret(secret))
	if k := fx.auth(secret, nil, "free"); k.ID != "key_late" {
		t.Fatalf("Authenticate after EvictKeyHash returned %s, want key_late", k.ID)
	}
}

func TestCacheKeyCollision(t *testing.T) {
	fx := newFixture(t)
	// Two hashes that share the 8 bytes the cache is keyed by.
	var h1, h2 [32]byte
	h1[31], h2[31] = 1, 2
	for _, k := range []*Key{{ID: "key_1", Plan: "free", Hash: h1}, {ID: "key_2", Plan: "free", Hash: h2}} {
		if err := fx.store.PutKey(fx.ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	now := fx.clock.Now()
	f := func(h [32]byte, wantID string) {
		t.Helper()
		k, err := fx.r.keyByHash(fx.ctx, &h, now)
		if err != nil || k.ID != wantID {
			t.Fatalf("keyByHash(%x…) = %v, %v; want %s", h[31], k, err, wantID)
		}
		fx.settle()
	}
	f(h1, "key_1")
	f(h2, "key_2")
	f(h1, "key_1")
	var h3 [32]byte
	h3[31] = 3
	if _, err := fx.r.keyByHash(fx.ctx, &h3, now); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("keyByHash of a colliding unknown hash = %v, want ErrUnknownKey", err)
	}
}

func TestCreateKey(t *testing.T) {
	fx := newFixture(t)
	exp := fx.clock.Now().Add(24 * time.Hour)
	k, secret, err := fx.r.CreateKey(fx.ctx, KeySpec{Name: "ci", Plan: "pro", ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseSecret([]byte(secret)); err != nil {
		t.Fatalf("CreateKey returned a malformed secret: %v", err)
	}
	if !strings.HasPrefix(k.ID, "key_") || len(k.ID) != 28 || k.Name != "ci" || k.Plan != "pro" ||
		k.Hash != HashSecret(secret) || k.Last4 != secret[48:] ||
		!k.CreatedAt.Equal(fx.clock.Now()) || !k.ExpiresAt.Equal(exp) || !k.RevokedAt.IsZero() {
		t.Fatalf("CreateKey returned %+v", k)
	}
	got, err := fx.r.Key(fx.ctx, k.ID)
	if err != nil || got.Hash != k.Hash || got.Name != "ci" {
		t.Fatalf("Key(%s) = %+v, %v", k.ID, got, err)
	}
	fx.auth(secret, nil, "pro")

	f := func(name, plan string, want error) {
		t.Helper()
		if k, s, err := fx.r.CreateKey(fx.ctx, KeySpec{Name: name, Plan: plan}); !errors.Is(err, want) || k != nil || s != "" {
			t.Fatalf("CreateKey(%q, %q) = %v, %q, %v; want %v", name, plan, k, s, err, want)
		}
	}
	f("x", "nope", ErrPlanNotFound)
	f("x", "", ErrPlanNotFound)
	f("x", "bad name", ErrPlanNotFound)
	f(strings.Repeat("n", 257), "free", ErrInvalidKey)
	if all, err := fx.r.Keys(fx.ctx); err != nil || len(all) != 1 {
		t.Fatalf("Keys() = %d keys, %v; want only the one created", len(all), err)
	}
}

func TestKeysListsInCreationOrder(t *testing.T) {
	fx := newFixture(t)
	var want []string
	for range 3 {
		k, _ := fx.create("free")
		want = append(want, k.ID)
		fx.clock.Advance(time.Second)
	}
	all, err := fx.r.Keys(fx.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range all {
		if k.ID != want[i] {
			t.Fatalf("Keys()[%d] = %s, want %s", i, k.ID, want[i])
		}
	}
	if _, err := fx.r.Key(fx.ctx, "key_missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Key(missing) = %v, want ErrNotFound", err)
	}
}

func TestUpdateKey(t *testing.T) {
	fx := newFixture(t)
	k, secret := fx.create("free")
	fx.auth(secret, nil, "free")
	fx.settle()

	pro, renamed := "pro", "renamed"
	got, err := fx.r.UpdateKey(fx.ctx, k.ID, KeyChanges{Name: &renamed, Plan: &pro})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "renamed" || got.Plan != "pro" || got.Hash != k.Hash {
		t.Fatalf("UpdateKey returned %+v", got)
	}
	if k := fx.auth(secret, nil, "pro"); k.Name != "renamed" {
		t.Fatalf("Authenticate after UpdateKey returned name %q, want renamed", k.Name)
	}
	// nil fields stay as they are.
	if got, err = fx.r.UpdateKey(fx.ctx, k.ID, KeyChanges{}); err != nil || got.Name != "renamed" || got.Plan != "pro" {
		t.Fatalf("UpdateKey(nil, nil) = %+v, %v", got, err)
	}

	f := func(id string, name, plan *string, want error) {
		t.Helper()
		if _, err := fx.r.UpdateKey(fx.ctx, id, KeyChanges{Name: name, Plan: plan}); !errors.Is(err, want) {
			t.Fatalf("UpdateKey(%s) = %v, want %v", id, err, want)
		}
	}
	missing, long := "missing", strings.Repeat("n", 300)
	f(k.ID, nil, &missing, ErrPlanNotFound)
	f(k.ID, &long, nil, ErrInvalidKey)
	f("key_missing", &renamed, nil, ErrNotFound)
	fx.auth(secret, nil, "pro")
}

func TestRevokeKey(t *testing.T) {
	fx := newFixture(t)
	k, secret := fx.create("free")
	_, otherSecret := fx.create("free")
	fx.auth(secret, nil, "free")
	fx.auth(otherSecret, nil, "free")
	fx.settle()

	revoked, err := fx.r.RevokeKey(fx.ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	first := fx.clock.Now()
	if !revoked.RevokedAt.Equal(first) {
		t.Fatalf("RevokedAt = %v, want %v", revoked.RevokedAt, first)
	}
	// No settle: the very next Authenticate must refuse it.
	fx.auth(secret, ErrRevoked, "")
	fx.auth(otherSecret, nil, "free")

	fx.clock.Advance(time.Hour)
	again, err := fx.r.RevokeKey(fx.ctx, k.ID)
	if err != nil || !again.RevokedAt.Equal(first) {
		t.Fatalf("second RevokeKey = %v, %v; want RevokedAt kept at %v", again.RevokedAt, err, first)
	}
	if stored, _ := fx.r.Key(fx.ctx, k.ID); !stored.RevokedAt.Equal(first) {
		t.Fatalf("stored RevokedAt = %v, want %v", stored.RevokedAt, first)
	}
	if _, err := fx.r.RevokeKey(fx.ctx, "key_missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RevokeKey(missing) = %v, want ErrNotFound", err)
	}
}

func TestRotateKey(t *testing.T) {
	fx := newFixture(t)
	k, oldSecret := fx.create("free")
	fx.auth(oldSecret, nil, "free")
	fx.settle()

	rotated, newSecret, err := fx.r.RotateKey(fx.ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if newSecret == oldSecret || rotated.ID != k.ID || rotated.Hash != HashSecret(newSecret) ||
		rotated.Last4 != newSecret[48:] || !rotated.CreatedAt.Equal(k.CreatedAt) {
		t.Fatalf("RotateKey returned %+v", rotated)
	}
	fx.auth(oldSecret, ErrUnknownKey, "")
	if got := fx.auth(newSecret, nil, "free"); got.ID != k.ID {
		t.Fatalf("new secret authenticated as %s, want %s", got.ID, k.ID)
	}
	fx.settle()
	fx.auth(oldSecret, ErrUnknownKey, "")

	if _, err := fx.r.RevokeKey(fx.ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if got, s, err := fx.r.RotateKey(fx.ctx, k.ID); !errors.Is(err, ErrRevoked) || got != nil || s != "" {
		t.Fatalf("RotateKey(revoked) = %v, %q, %v; want ErrRevoked", got, s, err)
	}
	fx.auth(newSecret, ErrRevoked, "")
	if _, _, err := fx.r.RotateKey(fx.ctx, "key_missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RotateKey(missing) = %v, want ErrNotFound", err)
	}
}

func TestPutPlanTakesEffectAtOnce(t *testing.T) {
	fx := newFixture(t)
	_, secret := fx.create("free")
	fx.auth(secret, nil, "free")
	fx.settle()

	update := &Plan{Name: "free", Models: []string{"gpt-4o-mini", "gpt-4o"}, RPM: 20}
	if err := fx.r.PutPlan(fx.ctx, update); err != nil {
		t.Fatal(err)
	}
	if update.Allows([]byte("gpt-4o")) {
		t.Fatal("PutPlan compiled the caller's plan; it must leave it untouched")
	}
	_, p, err := fx.r.Authenticate(fx.ctx, []byte(secret))
	if err != nil || p.RPM != 20 || !p.Allows([]byte("gpt-4o")) {
		t.Fatalf("Authenticate after PutPlan returned plan %+v, %v; want the new one", p, err)
	}
	if err := fx.r.PutPlan(fx.ctx, &Plan{Name: "free", RPM: -1}); !errors.Is(err, ErrInvalidPlan) {
		t.Fatalf("PutPlan(invalid) = %v, want ErrInvalidPlan", err)
	}
	if got, err := fx.r.Plan(fx.ctx, "free"); err != nil || got.RPM != 20 {
		t.Fatalf("Plan(free) after a refused PutPlan = %+v, %v; want RPM 20", got, err)
	}
	all, err := fx.r.Plans(fx.ctx)
	if err != nil || len(all) != 2 || all[0].Name != "free" || all[1].Name != "pro" {
		t.Fatalf("Plans() = %v, %v", all, err)
	}
}

func TestDeletePlan(t *testing.T) {
	fx := newFixture(t)
	k, secret := fx.create("free")
	fx.auth(secret, nil, "free")

	f := func(name string, want error) {
		t.Helper()
		if err := fx.r.DeletePlan(fx.ctx, name); !errors.Is(err, want) {
			t.Fatalf("DeletePlan(%s) = %v, want %v", name, err, want)
		}
	}
	f("free", ErrPlanInUse)
	f("missing", ErrNotFound)
	if _, err := fx.r.RevokeKey(fx.ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	f("free", nil)
	f("free", ErrNotFound)
	if _, err := fx.r.Plan(fx.ctx, "free"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Plan(deleted) = %v, want ErrNotFound", err)
	}
	// The revoked key still reports revoked, not a missing plan.
	fx.auth(secret, ErrRevoked, "")
}

func TestDeletedPlanIsEvicted(t *testing.T) {
	fx := newFixture(t)
	// A key on "pro" keeps the plan cached; a revoked key makes deletion legal.
	k, secret := fx.create("pro")
	fx.auth(secret, nil, "pro")
	if _, err := fx.r.RevokeKey(fx.ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := fx.r.DeletePlan(fx.ctx, "pro"); err != nil {
		t.Fatal(err)
	}
	if _, ok := (*fx.r.plans.Load())["pro"]; ok {
		t.Fatal("DeletePlan left the plan in this node's cache")
	}
}

func TestMissingPlanIsCachedNegatively(t *testing.T) {
	fx := newFixture(t)
	secret, _ := NewSecret()
	fx.store.Store.(*memStore).putStranded(&Key{ID: "key_orphan", Plan: "ghost", Hash: HashSecret(secret)})
	for range 10 {
		fx.auth(secret, ErrPlanNotFound, "")
	}
	if _, plan := fx.reads(); plan != 1 {
		t.Fatalf("10 attempts on a key with a missing plan made %d plan reads, want 1", plan)
	}
	fx.clock.Advance(testNegativeTTL)
	fx.auth(secret, ErrPlanNotFound, "")
	if _, plan := fx.reads(); plan != 2 {
		t.Fatalf("after NegativeTTL: %d plan reads, want 2", plan)
	}
	// Creating the plan through the registry makes it usable at once.
	if err := fx.r.PutPlan(fx.ctx, &Plan{Name: "ghost", Models: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	fx.auth(secret, nil, "ghost")
}

func TestSeedPlans(t *testing.T) {
	fx := newFixture(t)
	err := fx.r.SeedPlans(fx.ctx, []*Plan{
		{Name: "free", RPM: 99},
		{Name: "team", Models: []string{"*"}},
		{Name: "bad plan"},
	})
	if !errors.Is(err, ErrInvalidPlan) {
		t.Fatalf("SeedPlans with an invalid plan = %v, want ErrInvalidPlan", err)
	}
	if p, _ := fx.r.Plan(fx.ctx, "free"); p.RPM != 10 {
		t.Fatalf("a refused SeedPlans changed plan free: RPM %d, want 10", p.RPM)
	}
	if _, err := fx.r.Plan(fx.ctx, "team"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused SeedPlans created plan team: %v", err)
	}

	if err := fx.r.SeedPlans(fx.ctx, []*Plan{{Name: "free", RPM: 99}, {Name: "team", Models: []string{"*"}}}); err != nil {
		t.Fatal(err)
	}
	all, err := fx.r.Plans(fx.ctx)
	if err != nil || len(all) != 3 || all[0].Name != "free" || all[0].RPM != 99 || all[2].Name != "team" {
		t.Fatalf("Plans() after SeedPlans = %v, %v", all, err)
	}
}

func TestEvictAllForgetsEverything(t *testing.T) {
	fx := newFixture(t)
	k, secret := fx.create("free")
	_, other := fx.create("free")
	fx.auth(secret, nil, "free")
	fx.auth(other, nil, "free")
	fx.settle()
	// Changes made behind the registry's back (as by another node) stay
	// invisible until an eviction.
	revoked := *k
	revoked.RevokedAt = fx.clock.Now()
	if err := fx.store.PutKey(fx.ctx, &revoked); err != nil {
		t.Fatal(err)
	}
	if err := fx.store.PutPlan(fx.ctx, &Plan{Name: "free", RPM: 1}); err != nil {
		t.Fatal(err)
	}
	fx.auth(secret, nil, "free")
	byHash, plan := fx.reads()

	fx.r.EvictAll()
	fx.auth(secret, ErrRevoked, "")
	if b, _ := fx.reads(); b != byHash+1 {
		t.Fatalf("EvictAll: %d key reads after, %d before; want one more", b, byHash)
	}
	// The plan changed behind its back too: the other key, cached with the
	// old plan, sees the new one through EvictAll. (Un-revoking k to see it
	// is no longer possible: the store refuses to clear a revocation.)
	fx.r.EvictAll()
	_, p, err := fx.r.Authenticate(fx.ctx, []byte(other))
	if err != nil || p.RPM != 1 {
		t.Fatalf("Authenticate after EvictAll = plan %+v, %v; want the store's plan with RPM 1", p, err)
	}
	if _, pl := fx.reads(); pl != plan+1 {
		t.Fatalf("EvictAll: %d plan reads after, %d before; want one more", pl, plan)
	}
}

func TestEvictPlan(t *testing.T) {
	fx := newFixture(t)
	_, secret := fx.create("free")
	fx.auth(secret, nil, "free")
	if err := fx.store.PutPlan(fx.ctx, &Plan{Name: "free", RPM: 7}); err != nil {
		t.Fatal(err)
	}
	if _, p, _ := fx.r.Authenticate(fx.ctx, []byte(secret)); p.RPM != 10 {
		t.Fatalf("plan changed without an eviction: RPM %d", p.RPM)
	}
	fx.r.EvictPlan("free")
	if _, p, _ := fx.r.Authenticate(fx.ctx, []byte(secret)); p.RPM != 7 {
		t.Fatalf("after EvictPlan: RPM %d, want 7", p.RPM)
	}
}

// TestFillDoesNotUndoRevoke stages the race the eviction sequence exists for:
// a cache miss reads the key from the store, RevokeKey writes and evicts, and
// only then does the miss try to fill the cache with what it read.
func TestFillDoesNotUndoRevoke(t *testing.T) {
	fx := newFixture(t)
	k, secret := fx.create("free")

	read, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func() {
		once.Do(func() {
			close(read)
			<-resume
		})
	}
	fx.store.afterKeyByHash.Store(&hook)

	done := make(chan error)
	go func() {
		_, _, err := fx.r.Authenticate(fx.ctx, []byte(secret))
		done <- err
	}()
	<-read // the miss holds the unrevoked record
	if _, err := fx.r.RevokeKey(fx.ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	close(resume)
	if err := <-done; err != nil {
		t.Fatalf("the racing Authenticate, which read before the revoke, = %v, want success", err)
	}
	fx.settle()
	fx.auth(secret, ErrRevoked, "")
}

// TestRevokeRacesMisses hammers Authenticate, with evictions forcing constant
// misses and fills, while keys are revoked; no Authenticate that starts after
// RevokeKey returned may accept the key.
func TestRevokeRacesMisses(t *testing.T) {
	fx := newFixture(t)
	rounds := 50
	if testing.Short() {
		rounds = 10
	}
	for range rounds {
		k, secret := fx.create("free")
		var revoked atomic.Bool
		stop := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					after := revoked.Load()
					_, _, err := fx.r.Authenticate(fx.ctx, []byte(secret))
					if after && err == nil {
						errs <- errors.New("a revoked key was accepted after RevokeKey returned")
						return
					}
					if err != nil && !errors.Is(err, ErrRevoked) {
						errs <- err
						return
					}
				}
			})
		}
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					fx.r.EvictKeyHash(k.Hash)
				}
			}
		})
		time.Sleep(time.Millisecond)
		if _, err := fx.r.RevokeKey(fx.ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		revoked.Store(true)
		time.Sleep(2 * time.Millisecond)
		close(stop)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		fx.auth(secret, ErrRevoked, "")
	}
}

func TestRegistryClose(t *testing.T) {
	fx := newFixture(t)
	_, secret := fx.create("free")
	fx.r.Close()
	fx.r.Close()
	// After Close the registry still answers, straight from the store.
	fx.auth(secret, nil, "free")
	fx.r.EvictAll()
	fx.r.EvictKeyHash([32]byte{})
	if _, err := fx.store.Store.Plans(fx.ctx); err != nil {
		t.Fatalf("Registry.Close closed the store: %v", err)
	}
}

func TestNewRegistryNilStore(t *testing.T) {
	if r, err := NewRegistry(nil, RegistryOptions{MaxKeys: 1000, NegativeTTL: testNegativeTTL, StaleIfError: testStaleIfError}); err == nil {
		r.Close()
		t.Fatal("NewRegistry(nil) succeeded")
	}
}

// TestNewRegistryRequiresCacheSettings: the cache's defaults live in the
// config alone, so a caller that leaves a setting out gets an error naming
// it, not a second, silently different default.
func TestNewRegistryRequiresCacheSettings(t *testing.T) {
	f := func(o RegistryOptions, want string) {
		t.Helper()
		r, err := NewRegistry(newMemStore(), o)
		if err == nil {
			r.Close()
			t.Fatalf("NewRegistry(%+v) succeeded, want an error mentioning %q", o, want)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("NewRegistry(%+v) = %q, want it to mention %q", o, err, want)
		}
	}
	f(RegistryOptions{NegativeTTL: testNegativeTTL, StaleIfError: testStaleIfError}, "max keys 0")
	f(RegistryOptions{MaxKeys: -1, NegativeTTL: testNegativeTTL, StaleIfError: testStaleIfError}, "max keys -1")
	f(RegistryOptions{MaxKeys: 1000, StaleIfError: testStaleIfError}, "negative TTL 0s")
	f(RegistryOptions{MaxKeys: 1000, NegativeTTL: testNegativeTTL}, "stale-if-error 0s")
}

// newBenchRegistry returns a registry with one key, warmed into the cache.
func newBenchRegistry(b *testing.B) (*Registry, []byte) {
	r, err := NewRegistry(newMemStore(), RegistryOptions{MaxKeys: 10_000, NegativeTTL: testNegativeTTL, StaleIfError: testStaleIfError})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.Close)
	ctx := context.Background()
	if err := r.PutPlan(ctx, &Plan{Name: "free", Models: []string{"*"}}); err != nil {
		b.Fatal(err)
	}
	_, s, err := r.CreateKey(ctx, KeySpec{Name: "bench", Plan: "free"})
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := r.Authenticate(ctx, []byte(s)); err != nil {
		b.Fatal(err)
	}
	r.keys.Wait()
	return r, []byte(s)
}

func BenchmarkAuthenticateHit(b *testing.B) {
	r, secret := newBenchRegistry(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.Authenticate(ctx, secret); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthenticateHitParallel(b *testing.B) {
	r, secret := newBenchRegistry(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := r.Authenticate(ctx, secret); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
