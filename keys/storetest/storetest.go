// Package storetest is the conformance suite for keys.Store implementations.
// Every implementation runs it from its own test file, so the embedded and the
// Valkey store are held to the same contract.
package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/keys"
)

// Factory opens stores for the suite.
type Factory struct {
	// Open returns a new, empty store. The suite closes it.
	Open func(t *testing.T) keys.Store
	// Reopen closes old and opens the same data again, as a restart would.
	// The suite closes the returned store.
	Reopen func(t *testing.T, old keys.Store) keys.Store
}

// Run runs the conformance suite against the stores f opens.
func Run(t *testing.T, f Factory) {
	t.Run("KeyByIDAndHash", func(t *testing.T) { testKeyByIDAndHash(t, f) })
	t.Run("Rotate", func(t *testing.T) { testRotate(t, f) })
	t.Run("HashOwnedByAnotherKey", func(t *testing.T) { testHashOwnedByAnotherKey(t, f) })
	t.Run("KeysOrder", func(t *testing.T) { testKeysOrder(t, f) })
	t.Run("Plans", func(t *testing.T) { testPlans(t, f) })
	t.Run("InvalidPlan", func(t *testing.T) { testInvalidPlan(t, f) })
	t.Run("Copies", func(t *testing.T) { testCopies(t, f) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, f) })
	t.Run("CompareAndSet", func(t *testing.T) { testCompareAndSet(t, f) })
	t.Run("ConcurrentReadModifyWrite", func(t *testing.T) { testConcurrentReadModifyWrite(t, f) })
	t.Run("RevocationIsTerminal", func(t *testing.T) { testRevocationIsTerminal(t, f) })
	t.Run("Reopen", func(t *testing.T) { testReopen(t, f) })
	t.Run("KeysNeedTheirPlan", func(t *testing.T) { testKeysNeedTheirPlan(t, f) })
	t.Run("PlanInUse", func(t *testing.T) { testPlanInUse(t, f) })
	t.Run("PlanInUseAfterReopen", func(t *testing.T) { testPlanInUseAfterReopen(t, f) })
}

// open returns a store from f that is closed when t ends.
func open(t *testing.T, f Factory) keys.Store {
	t.Helper()
	s := f.Open(t)
	t.Cleanup(func() { s.Close() }) //nolint:errcheck // a test's store, torn down
	return s
}

// openWithPlans returns a store from f holding an empty plan of each name,
// for keys to be written onto.
func openWithPlans(t *testing.T, f Factory, names ...string) keys.Store {
	t.Helper()
	s := open(t, f)
	for _, name := range names {
		mustPutPlan(t, s, &keys.Plan{Name: name, Models: []string{"*"}})
	}
	return s
}

// base returns the time test keys are created around, with nanoseconds to
// prove they are kept.
func base() time.Time { return time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC) }

// newKey returns a key whose hash derives from seed, so tests can name keys
// by number.
func newKey(seed int, plan string) *keys.Key {
	return &keys.Key{
		ID:        fmt.Sprintf("key_%024x", seed),
		Name:      fmt.Sprintf("key %d", seed),
		Plan:      plan,
		Hash:      hashOf(seed),
		Last4:     fmt.Sprintf("%04d", seed%10000),
		CreatedAt: base().Add(time.Duration(seed) * time.Second),
	}
}

func hashOf(seed int) [32]byte {
	return sha256.Sum256(fmt.Appendf(nil, "secret %d", seed))
}

// equalKey reports how got differs from want, or "" if it does not.
func equalKey(got, want *keys.Key) string {
	switch {
	case got == nil:
		return "got nil key"
	case got.ID != want.ID || got.Name != want.Name || got.Plan != want.Plan || got.Last4 != want.Last4:
		return fmt.Sprintf("got %s/%q/%s/%s, want %s/%q/%s/%s",
			got.ID, got.Name, got.Plan, got.Last4, want.ID, want.Name, want.Plan, want.Last4)
	case got.Hash != want.Hash:
		return fmt.Sprintf("key %s: hash %x, want %x", got.ID, got.Hash[:4], want.Hash[:4])
	case !got.CreatedAt.Equal(want.CreatedAt):
		return fmt.Sprintf("key %s: CreatedAt %v, want %v", got.ID, got.CreatedAt, want.CreatedAt)
	case !got.ExpiresAt.Equal(want.ExpiresAt) || got.ExpiresAt.IsZero() != want.ExpiresAt.IsZero():
		return fmt.Sprintf("key %s: ExpiresAt %v, want %v", got.ID, got.ExpiresAt, want.ExpiresAt)
	case !got.RevokedAt.Equal(want.RevokedAt) || got.RevokedAt.IsZero() != want.RevokedAt.IsZero():
		return fmt.Sprintf("key %s: RevokedAt %v, want %v", got.ID, got.RevokedAt, want.RevokedAt)
	}
	return ""
}

// mustPutKey stores k or fails the test.
func mustPutKey(t *testing.T, s keys.Store, k *keys.Key) {
	t.Helper()
	if err := s.PutKey(context.Background(), k); err != nil {
		t.Fatalf("PutKey(%s): %v", k.ID, err)
	}
}

// mustPutPlan stores p or fails the test.
func mustPutPlan(t *testing.T, s keys.Store, p *keys.Plan) {
	t.Helper()
	if err := s.PutPlan(context.Background(), p); err != nil {
		t.Fatalf("PutPlan(%s): %v", p.Name, err)
	}
}

// checkKey asserts that s returns want by id and by hash.
func checkKey(t *testing.T, s keys.Store, want *keys.Key) {
	t.Helper()
	ctx := context.Background()
	got, err := s.KeyByID(ctx, want.ID)
	if err != nil {
		t.Fatalf("KeyByID(%s): %v", want.ID, err)
	}
	if d := equalKey(got, want); d != "" {
		t.Fatalf("KeyByID: %s", d)
	}
	got, err = s.KeyByHash(ctx, want.Hash)
	if err != nil {
		t.Fatalf("KeyByHash(%s): %v", want.ID, err)
	}
	if d := equalKey(got, want); d != "" {
		t.Fatalf("KeyByHash: %s", d)
	}
}

// checkHashNotFound asserts that no key has hash.
func checkHashNotFound(t *testing.T, s keys.Store, hash [32]byte) {
	t.Helper()
	k, err := s.KeyByHash(context.Background(), hash)
	if !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("KeyByHash(%x…) = %v, %v; want ErrNotFound", hash[:4], k, err)
	}
}

func testKeyByIDAndHash(t *testing.T, f Factory) {
	s := openWithPlans(t, f, "free", "pro")
	ctx := context.Background()

	active := newKey(1, "free")
	expiring := newKey(2, "pro")
	expiring.ExpiresAt = base().Add(30 * 24 * time.Hour)
	revoked := newKey(3, "free")
	revoked.RevokedAt = base().Add(time.Hour + 42*time.Nanosecond)
	// A time in another zone must come back as the same instant.
	revoked.CreatedAt = revoked.CreatedAt.In(time.FixedZone("UTC+5", 5*3600))
	for _, k := range []*keys.Key{active, expiring, revoked} {
		mustPutKey(t, s, k)
	}
	for _, k := range []*keys.Key{active, expiring, revoked} {
		checkKey(t, s, k)
	}

	if k, err := s.KeyByID(ctx, "key_000000000000000000000099"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("KeyByID(missing) = %v, %v; want ErrNotFound", k, err)
	}
	if k, err := s.KeyByID(ctx, ""); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("KeyByID(\"\") = %v, %v; want ErrNotFound", k, err)
	}
	checkHashNotFound(t, s, hashOf(99))

	// Replacing a key without changing its hash keeps it resolvable.
	active.Name = "renamed"
	active.Plan = "pro"
	mustPutKey(t, s, active)
	checkKey(t, s, active)
}

func testRotate(t *testing.T, f Factory) {
	s := openWithPlans(t, f, "free")
	k := newKey(1, "free")
	mustPutKey(t, s, k)
	other := newKey(2, "free")
	mustPutKey(t, s, other)

	old := k.Hash
	k.Hash = hashOf(100)
	k.Last4 = "rot1"
	mustPutKey(t, s, k)
	checkKey(t, s, k)
	checkHashNotFound(t, s, old)

	// A second rotation retires the first replacement too.
	k.Hash = hashOf(101)
	mustPutKey(t, s, k)
	checkKey(t, s, k)
	checkHashNotFound(t, s, old)
	checkHashNotFound(t, s, hashOf(100))
	// Other keys are untouched.
	checkKey(t, s, other)
}

func testHashOwnedByAnotherKey(t *testing.T, f Factory) {
	s := openWithPlans(t, f, "free")
	a := newKey(1, "free")
	mustPutKey(t, s, a)
	b := newKey(2, "free")
	b.Hash = a.Hash
	if err := s.PutKey(context.Background(), b); err == nil {
		t.Fatal("PutKey with another key's hash succeeded, want an error")
	}
	// The refused write changed nothing.
	checkKey(t, s, a)
	if _, err := s.KeyByID(context.Background(), b.ID); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("KeyByID(refused key) err = %v, want ErrNotFound", err)
	}
}

func testKeysOrder(t *testing.T, f Factory) {
	s := openWithPlans(t, f, "p")
	ctx := context.Background()

	if all, err := s.Keys(ctx); err != nil || len(all) != 0 {
		t.Fatalf("Keys() on an empty store = %d keys, %v; want none", len(all), err)
	}
	// Insert out of order; 4 and 5 share a CreatedAt, so ID breaks the tie.
	k3, k1, k5, k4, k2 := newKey(3, "p"), newKey(1, "p"), newKey(5, "p"), newKey(4, "p"), newKey(2, "p")
	k5.CreatedAt = k4.CreatedAt
	for _, k := range []*keys.Key{k3, k1, k5, k4, k2} {
		mustPutKey(t, s, k)
	}
	all, err := s.Keys(ctx)
	if err != nil {
		t.Fatalf("Keys: %v", err)
	}
	want := []*keys.Key{k1, k2, k3, k4, k5}
	if len(all) != len(want) {
		t.Fatalf("Keys() returned %d keys, want %d", len(all), len(want))
	}
	for i := range want {
		if d := equalKey(all[i], want[i]); d != "" {
			t.Fatalf("Keys()[%d]: %s", i, d)
		}
	}
}

func testPlans(t *testing.T, f Factory) {
	s := open(t, f)
	ctx := context.Background()

	if all, err := s.Plans(ctx); err != nil || len(all) != 0 {
		t.Fatalf("Plans() on an empty store = %d plans, %v; want none", len(all), err)
	}
	pro := &keys.Plan{Name: "pro", Models: []string{"gpt-4o", "o1-*"}, RPM: 600, TPM: 1_000_000,
		MaxRequestUSD: 2_500_000, MonthlyUSD: 100_000_000}
	free := &keys.Plan{Name: "free", Models: []string{"gpt-4o-mini"}, RPM: 10}
	empty := &keys.Plan{Name: "empty"}
	for _, p := range []*keys.Plan{pro, free, empty} {
		mustPutPlan(t, s, p)
	}

	got, err := s.Plan(ctx, "pro")
	if err != nil {
		t.Fatalf("Plan(pro): %v", err)
	}
	if got.Name != "pro" || got.RPM != 600 || got.TPM != 1_000_000 ||
		got.MaxRequestUSD != usd.Micro(2_500_000) || got.MonthlyUSD != usd.Micro(100_000_000) ||
		!slices.Equal(got.Models, pro.Models) {
		t.Fatalf("Plan(pro) = %+v, want %+v", got, pro)
	}
	allows := func(p *keys.Plan, model string, want bool) {
		t.Helper()
		if p.Allows([]byte(model)) != want {
			t.Fatalf("plan %s: Allows(%q) = %v, want %v (is it compiled?)", p.Name, model, !want, want)
		}
	}
	allows(got, "gpt-4o", true)
	allows(got, "o1-mini", true)
	allows(got, "gpt-4o-mini", false)

	all, err := s.Plans(ctx)
	if err != nil {
		t.Fatalf("Plans: %v", err)
	}
	var names []string
	for _, p := range all {
		names = append(names, p.Name)
	}
	if want := []string{"empty", "free", "pro"}; !slices.Equal(names, want) {
		t.Fatalf("Plans() names = %q, want %q", names, want)
	}
	allows(all[1], "gpt-4o-mini", true)
	allows(all[0], "gpt-4o-mini", false)

	// Replace.
	free.Models = []string{"*"}
	free.RPM = 20
	mustPutPlan(t, s, free)
	if got, err = s.Plan(ctx, "free"); err != nil || got.RPM != 20 {
		t.Fatalf("Plan(free) after replace = %+v, %v; want RPM 20", got, err)
	}
	allows(got, "anything", true)

	// Delete.
	if err := s.DeletePlan(ctx, "free"); err != nil {
		t.Fatalf("DeletePlan(free): %v", err)
	}
	if p, err := s.Plan(ctx, "free"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("Plan(deleted) = %v, %v; want ErrNotFound", p, err)
	}
	if err := s.DeletePlan(ctx, "free"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("DeletePlan(deleted) = %v, want ErrNotFound", err)
	}
	if err := s.DeletePlan(ctx, "never-existed"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("DeletePlan(missing) = %v, want ErrNotFound", err)
	}
	if p, err := s.Plan(ctx, ""); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("Plan(\"\") = %v, %v; want ErrNotFound", p, err)
	}
	if all, err = s.Plans(ctx); err != nil || len(all) != 2 {
		t.Fatalf("Plans() after delete = %d plans, %v; want 2", len(all), err)
	}
}

func testInvalidPlan(t *testing.T, f Factory) {
	s := open(t, f)
	ctx := context.Background()
	bad := func(p *keys.Plan) {
		t.Helper()
		if err := s.PutPlan(ctx, p); !errors.Is(err, keys.ErrInvalidPlan) {
			t.Fatalf("PutPlan(%+v) = %v, want ErrInvalidPlan", p, err)
		}
	}
	bad(&keys.Plan{Name: ""})
	bad(&keys.Plan{Name: "a/b"})
	bad(&keys.Plan{Name: "neg", TPM: -1})
	bad(&keys.Plan{Name: "blank-model", Models: []string{""}})
	if all, err := s.Plans(ctx); err != nil || len(all) != 0 {
		t.Fatalf("Plans() after refused puts = %d plans, %v; want none", len(all), err)
	}
}

func testCopies(t *testing.T, f Factory) {
	s := openWithPlans(t, f, "free")
	ctx := context.Background()
	k := newKey(1, "free")
	want := *k
	mustPutKey(t, s, k)
	// The store must not keep the caller's value.
	k.Name = "changed after put"
	k.Hash[0] ^= 0xff
	checkKey(t, s, &want)

	// Nor share what it returns.
	got, err := s.KeyByHash(ctx, want.Hash)
	if err != nil {
		t.Fatal(err)
	}
	got.Name = "changed after get"
	got.Plan = "other"
	got.RevokedAt = base()
	byID, err := s.KeyByID(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	byID.Name = "changed after get by id"
	all, err := s.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all[0].Name = "changed after list"
	checkKey(t, s, &want)

	p := &keys.Plan{Name: "free", Models: []string{"gpt-4o-mini", "o1-*"}, RPM: 5}
	mustPutPlan(t, s, p)
	p.Models[0] = "changed-after-put"
	p.RPM = 99
	gp, err := s.Plan(ctx, "free")
	if err != nil {
		t.Fatal(err)
	}
	gp.Models[0] = "changed-after-get"
	gp.RPM = 98
	ps, err := s.Plans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ps[0].Models[1] = "changed-after-list"
	gp, err = s.Plan(ctx, "free")
	if err != nil {
		t.Fatal(err)
	}
	if gp.RPM != 5 || !slices.Equal(gp.Models, []string{"gpt-4o-mini", "o1-*"}) ||
		!gp.Allows([]byte("gpt-4o-mini")) || !gp.Allows([]byte("o1-x")) {
		t.Fatalf("Plan(free) = %+v after callers mutated copies; want the stored plan", gp)
	}
}

func testConcurrent(t *testing.T, f Factory) {
	s := open(t, f)
	ctx := context.Background()
	mustPutPlan(t, s, &keys.Plan{Name: "free", Models: []string{"*"}})
	const writers, perWriter = 4, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*perWriter*4)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				k := newKey(w*perWriter+i, "free")
				if err := s.PutKey(ctx, k); err != nil {
					errs <- err
					return
				}
				got, err := s.KeyByHash(ctx, k.Hash)
				if err != nil {
					errs <- err
					return
				}
				if d := equalKey(got, k); d != "" {
					errs <- errors.New(d)
				}
				// Rotate it, racing the readers below.
				k.Hash = hashOf(1000 + w*perWriter + i)
				if err := s.PutKey(ctx, k); err != nil {
					errs <- err
				}
			}
		})
		wg.Go(func() {
			for range perWriter {
				if _, err := s.Keys(ctx); err != nil {
					errs <- err
				}
				if _, err := s.Plan(ctx, "free"); err != nil {
					errs <- err
				}
				if _, err := s.Plans(ctx); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	all, err := s.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != writers*perWriter {
		t.Fatalf("Keys() returned %d keys after concurrent puts, want %d", len(all), writers*perWriter)
	}
	for i := range writers * perWriter {
		checkHashNotFound(t, s, hashOf(i))
		want := newKey(i, "free")
		want.Hash = hashOf(1000 + i)
		checkKey(t, s, want)
	}
}

func testReopen(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx := context.Background()
	mustPutPlan(t, s, &keys.Plan{Name: "free", Models: []string{"gpt-4o-mini"}, RPM: 10, MonthlyUSD: 5_000_000})
	mustPutPlan(t, s, &keys.Plan{Name: "gone", Models: []string{"*"}})
	if err := s.DeletePlan(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	a, b := newKey(1, "free"), newKey(2, "free")
	b.ExpiresAt = base().Add(time.Hour)
	b.RevokedAt = base().Add(time.Minute)
	mustPutKey(t, s, a)
	mustPutKey(t, s, b)
	oldA := a.Hash
	a.Hash = hashOf(50)
	mustPutKey(t, s, a)

	s = f.Reopen(t, s)
	t.Cleanup(func() { s.Close() }) //nolint:errcheck // a test's store, torn down

	checkKey(t, s, a)
	checkKey(t, s, b)
	checkHashNotFound(t, s, oldA)
	if all, err := s.Keys(ctx); err != nil || len(all) != 2 {
		t.Fatalf("Keys() after reopen = %d keys, %v; want 2", len(all), err)
	}
	p, err := s.Plan(ctx, "free")
	if err != nil {
		t.Fatalf("Plan(free) after reopen: %v", err)
	}
	if p.RPM != 10 || p.MonthlyUSD != 5_000_000 || !p.Allows([]byte("gpt-4o-mini")) || p.Allows([]byte("gpt-4o")) {
		t.Fatalf("Plan(free) after reopen = %+v", p)
	}
	if _, err := s.Plan(ctx, "gone"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("Plan(gone) after reopen: %v, want ErrNotFound", err)
	}
}

// putErr asserts that PutKey(k) fails wrapping want and leaves k.Revision
// as it was.
func putErr(t *testing.T, s keys.Store, k *keys.Key, want error) {
	t.Helper()
	rev := k.Revision
	err := s.PutKey(context.Background(), k)
	if !errors.Is(err, want) {
		t.Fatalf("PutKey(%s, revision %d) = %v, want %v", k.ID, rev, err, want)
	}
	if k.Revision != rev {
		t.Fatalf("a refused PutKey changed k.Revision from %d to %d", rev, k.Revision)
	}
}

func testCompareAndSet(t *testing.T, f Factory) {
	s := openWithPlans(t, f, "free")
	ctx := context.Background()
	k := newKey(1, "free")
	mustPutKey(t, s, k)
	if k.Revision != 1 {
		t.Fatalf("after the first PutKey k.Revision = %d, want 1", k.Revision)
	}
	got, err := s.KeyByID(ctx, k.ID)
	if err != nil || got.Revision != 1 {
		t.Fatalf("KeyByID after the first put = revision %v, %v; want 1", got, err)
	}

	// Two writers read revision 1; the first write wins, the second is refused
	// and must not overwrite it.
	first, second := got.Clone(), got.Clone()
	first.Name = "first"
	second.Name = "second"
	mustPutKey(t, s, first)
	putErr(t, s, second, keys.ErrConflict)
	want := *k
	want.Name = "first"
	checkKey(t, s, &want)
	if got, _ := s.KeyByHash(ctx, k.Hash); got.Revision != 2 {
		t.Fatalf("KeyByHash revision = %d, want 2", got.Revision)
	}

	// A stale rotation must not retire the current hash.
	stale := got.Clone()
	stale.Revision = 1
	stale.Hash = hashOf(2)
	putErr(t, s, stale, keys.ErrConflict)
	checkHashNotFound(t, s, hashOf(2))
	checkKey(t, s, &want)

	// A revision from the future, and a "create" over an existing id.
	future := got.Clone()
	future.Revision = 7
	putErr(t, s, future, keys.ErrConflict)
	create := newKey(1, "free")
	create.Name = "create over an existing id"
	putErr(t, s, create, keys.ErrConflict)
	// A record that does not exist has revision 0.
	ghost := newKey(3, "free")
	ghost.Revision = 1
	putErr(t, s, ghost, keys.ErrConflict)
	checkHashNotFound(t, s, ghost.Hash)
	checkKey(t, s, &want)
}

// testConcurrentReadModifyWrite runs increments as read, modify, compare-
// and-set, retry from many goroutines: none may be lost.
func testConcurrentReadModifyWrite(t *testing.T, f Factory) {
	s := openWithPlans(t, f, "free")
	ctx := context.Background()
	k := newKey(1, "free")
	mustPutKey(t, s, k)
	const writers, perWriter = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for range perWriter {
				for {
					cur, err := s.KeyByID(ctx, k.ID)
					if err != nil {
						errs <- err
						return
					}
					cur.RPM++
					err = s.PutKey(ctx, cur)
					if err == nil {
						break
					}
					if !errors.Is(err, keys.ErrConflict) {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := s.KeyByID(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.RPM != writers*perWriter || got.Revision != writers*perWriter+1 {
		t.Fatalf("after %d increments: RPM %d, revision %d; want %d and %d",
			writers*perWriter, got.RPM, got.Revision, writers*perWriter, writers*perWriter+1)
	}
}

func testRevocationIsTerminal(t *testing.T, f Factory) {
	s := openWithPlans(t, f, "free")
	k := newKey(1, "free")
	mustPutKey(t, s, k)
	revoked := k.Clone()
	revoked.RevokedAt = base().Add(time.Minute)
	mustPutKey(t, s, revoked)

	// Even a writer holding the current revision cannot clear it.
	restore := revoked.Clone()
	restore.RevokedAt = time.Time{}
	putErr(t, s, restore, keys.ErrRevoked)
	restore.Hash = hashOf(2) // nor by rotating
	putErr(t, s, restore, keys.ErrRevoked)
	checkHashNotFound(t, s, hashOf(2))
	checkKey(t, s, revoked)

	// Other edits of a revoked key, keeping the revocation, are allowed (the
	// record stays for audit and can be renamed).
	renamed := revoked.Clone()
	renamed.Name = "renamed after revocation"
	mustPutKey(t, s, renamed)
	checkKey(t, s, renamed)
}

// deleteErr asserts that DeletePlan(name) fails with want, or succeeds when
// want is nil.
func deleteErr(t *testing.T, s keys.Store, name string, want error) {
	t.Helper()
	err := s.DeletePlan(context.Background(), name)
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		t.Fatalf("DeletePlan(%s) = %v, want %v", name, err, want)
	}
}

// testKeysNeedTheirPlan: an unrevoked key is written only onto a plan that
// exists, in the same atomic step as the write, and a refused write changes
// nothing.
func testKeysNeedTheirPlan(t *testing.T, f Factory) {
	s := openWithPlans(t, f, "free")
	ctx := context.Background()
	putErr(t, s, newKey(1, "missing"), keys.ErrPlanNotFound)
	if k, err := s.KeyByID(ctx, newKey(1, "").ID); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("KeyByID after a refused create = %v, %v; want ErrNotFound", k, err)
	}
	checkHashNotFound(t, s, hashOf(1))
	putErr(t, s, newKey(1, ""), keys.ErrPlanNotFound)

	k := newKey(2, "free")
	mustPutKey(t, s, k)
	moved := k.Clone()
	moved.Plan = "missing"
	putErr(t, s, moved, keys.ErrPlanNotFound)
	checkKey(t, s, k)
	deleteErr(t, s, "free", keys.ErrPlanInUse)

	// A revoked key uses no plan, so revoking or renaming it needs none:
	// that is how a key stranded on a missing plan by older data is retired.
	revoked := newKey(3, "missing")
	revoked.RevokedAt = base()
	mustPutKey(t, s, revoked)
	revoked.Name = "renamed"
	mustPutKey(t, s, revoked)
	checkKey(t, s, revoked)
}

// testPlanInUse: DeletePlan refuses while an unrevoked key (expired ones
// included) names the plan, follows keys as they move between plans and are
// revoked, and is not fooled by rotations, rewrites or plan replacement.
func testPlanInUse(t *testing.T, f Factory) {
	s := openWithPlans(t, f, "a", "b", "unused")
	deleteErr(t, s, "unused", nil)
	deleteErr(t, s, "unused", keys.ErrNotFound)

	one, two := newKey(1, "a"), newKey(2, "a")
	two.ExpiresAt = base().Add(-time.Hour) // expired long ago: still a user
	mustPutKey(t, s, one)
	mustPutKey(t, s, two)
	deleteErr(t, s, "a", keys.ErrPlanInUse)
	deleteErr(t, s, "b", nil)
	mustPutPlan(t, s, &keys.Plan{Name: "b", Models: []string{"*"}})

	// Rewrites and rotations of a key keep one use, not two.
	one.Name = "renamed"
	mustPutKey(t, s, one)
	one.Hash = hashOf(11)
	mustPutKey(t, s, one)
	// Replacing the plan is not deleting it: its users stay.
	mustPutPlan(t, s, &keys.Plan{Name: "a", Models: []string{"gpt-4o"}})

	one.Plan = "b"
	mustPutKey(t, s, one)
	deleteErr(t, s, "a", keys.ErrPlanInUse) // two still uses it
	deleteErr(t, s, "b", keys.ErrPlanInUse)

	two.RevokedAt = base()
	mustPutKey(t, s, two)
	two.Name = "revoked and renamed"
	mustPutKey(t, s, two)
	deleteErr(t, s, "a", nil)

	// A refused move leaves the counts as they were.
	one.Plan = "a"
	putErr(t, s, one, keys.ErrPlanNotFound)
	one.Plan = "b"
	deleteErr(t, s, "b", keys.ErrPlanInUse)
	one.RevokedAt = base()
	mustPutKey(t, s, one)
	deleteErr(t, s, "b", nil)
}

// testPlanInUseAfterReopen: what DeletePlan knows of a plan's users survives
// a restart.
func testPlanInUseAfterReopen(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx := context.Background()
	mustPutPlan(t, s, &keys.Plan{Name: "kept", Models: []string{"*"}})
	k := newKey(1, "kept")
	mustPutKey(t, s, k)
	s = f.Reopen(t, s)
	defer s.Close() //nolint:errcheck // a test's store, torn down
	deleteErr(t, s, "kept", keys.ErrPlanInUse)
	got, err := s.KeyByID(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	got.RevokedAt = base()
	mustPutKey(t, s, got)
	deleteErr(t, s, "kept", nil)
}
