package keys

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// cutStore fails every read while cut is set: a node partitioned from its
// store.
type cutStore struct {
	Store
	cut atomic.Bool
}

var errCut = errors.New("store unreachable (test partition)")

func (s *cutStore) KeyByHash(ctx context.Context, hash [32]byte) (*Key, error) {
	if s.cut.Load() {
		return nil, errCut
	}
	return s.Store.KeyByHash(ctx, hash)
}

func (s *cutStore) Plan(ctx context.Context, name string) (*Plan, error) {
	if s.cut.Load() {
		return nil, errCut
	}
	return s.Store.Plan(ctx, name)
}

// refused reports whether err is the refusal of a key the store could not
// vouch for: ErrUnavailable, or the store's own error when the failing read
// was this call's (the proxy answers 503 store_unavailable to both).
func refused(err error) bool { return errors.Is(err, ErrUnavailable) || errors.Is(err, errCut) }

// partitionFixture is a Registry with default StaleIfError over a cutStore,
// with the staleness bound an Invalidator sets while invalidations lapse.
func partitionFixture(t *testing.T) (*Registry, *cutStore, *fakeClock, string) {
	t.Helper()
	ctx := context.Background()
	store := &cutStore{Store: newMemStore()}
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	r, err := NewRegistry(store, RegistryOptions{MaxKeys: 1000, NegativeTTL: testNegativeTTL, StaleIfError: testStaleIfError, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	if err := r.PutPlan(ctx, &Plan{Name: "free", Models: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	_, secret, err := r.CreateKey(ctx, KeySpec{Name: "k", Plan: "free"})
	if err != nil {
		t.Fatal(err)
	}
	r.MarkAllStale() // the subscription is in place
	if _, _, err := r.Authenticate(ctx, []byte(secret)); err != nil {
		t.Fatal(err)
	}
	r.keys.Wait()
	return r, store, clock, secret
}

// TestPartitionedNodeHonoursRevocationBound: a node cut off from the store
// serves its cached key only while a revocation made elsewhere could have
// reached it within the 5-second promise: StaleIfError (4s) past the last
// invalidation message it received, then ErrUnavailable. Before, the bound
// was 10 minutes past the last read (cache.stale_if_error's old default).
func TestPartitionedNodeHonoursRevocationBound(t *testing.T) {
	r, store, clock, secret := partitionFixture(t)
	ctx := context.Background()
	// Heartbeats arrive for a minute after the key was read: the cached entry
	// is known current as of the last one, not only as of its read.
	for range 120 {
		clock.Advance(500 * time.Millisecond)
		r.MarkCoherent()
	}
	// The partition: invalidations stop, the Invalidator bounds cache age,
	// and the store cannot be read.
	store.cut.Store(true)
	r.SetMaxAge(testStaleAfter)
	f := func(after time.Duration, want error) {
		t.Helper()
		_, _, err := r.Authenticate(ctx, []byte(secret))
		if (want == nil) != (err == nil) || (want != nil && !refused(err)) {
			t.Fatalf("Authenticate %v into the partition = %v, want %v", after, err, want)
		}
	}
	var elapsed time.Duration
	for _, step := range []struct {
		advance time.Duration
		want    error
	}{
		{0, nil},
		{2 * time.Second, nil},
		{testStaleIfError - 2*time.Second - 1, nil},
		{1, ErrUnavailable}, // exactly StaleIfError after the last message
		{time.Minute, ErrUnavailable},
	} {
		clock.Advance(step.advance)
		elapsed += step.advance
		r.downUntil.Store(0) // let every call try the store, and fail
		f(elapsed, step.want)
	}
}

// TestResubscribeMarksStaleNotDropped: when the subscription comes back the
// cache is re-read before use but not dropped, so a valid key is still served
// if the store read fails in that moment (EvictAll answered ErrUnavailable),
// and read fresh once the store answers.
func TestResubscribeMarksStaleNotDropped(t *testing.T) {
	r, store, clock, secret := partitionFixture(t)
	ctx := context.Background()
	clock.Advance(time.Second)
	r.MarkAllStale() // resubscribed: messages may have been missed
	store.cut.Store(true)
	if _, _, err := r.Authenticate(ctx, []byte(secret)); err != nil {
		t.Fatalf("Authenticate right after resubscribing, store failing = %v; want the cached key", err)
	}
	// Known current only as of its read (before the new subscription), not as
	// of the new subscription's messages.
	r.MarkCoherent()
	clock.Advance(testStaleIfError)
	r.downUntil.Store(0)
	if _, _, err := r.Authenticate(ctx, []byte(secret)); !refused(err) {
		t.Fatalf("Authenticate StaleIfError after the read = %v, want a store failure", err)
	}
	// The store answers again: the entry filled before the subscription is
	// re-read, not trusted.
	store.cut.Store(false)
	r.downUntil.Store(0)
	rev, err := r.RevokeKey(ctx, r.mustKeyID(t, secret))
	if err != nil || rev.RevokedAt.IsZero() {
		t.Fatal(err)
	}
	if _, _, err := r.Authenticate(ctx, []byte(secret)); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Authenticate after the store came back = %v, want ErrRevoked", err)
	}
}

func (r *Registry) mustKeyID(t *testing.T, secret string) string {
	t.Helper()
	hash, err := ParseSecret([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	k, err := r.store.KeyByHash(context.Background(), hash)
	if err != nil {
		t.Fatal(err)
	}
	return k.ID
}
