package keys_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/valkeytest"
	"github.com/tokenhub/tokenhub/keys"
)

// sameKey reports how got differs from want, or "" if it does not. Times
// are compared as instants, and zero must stay zero.
func sameKey(got, want *keys.Key) string {
	sameTime := func(a, b time.Time) bool { return a.Equal(b) && a.IsZero() == b.IsZero() }
	if got.ID != want.ID || got.Name != want.Name || got.Plan != want.Plan || got.Last4 != want.Last4 ||
		got.Hash != want.Hash || !sameTime(got.CreatedAt, want.CreatedAt) ||
		!sameTime(got.ExpiresAt, want.ExpiresAt) || !sameTime(got.RevokedAt, want.RevokedAt) {
		return "got " + keyString(got) + "\nwant " + keyString(want)
	}
	return ""
}

func keyString(k *keys.Key) string {
	return k.ID + " " + k.Name + " " + k.Plan + " " + k.Last4 + " " + k.CreatedAt.String() +
		" expires " + k.ExpiresAt.String() + " revoked " + k.RevokedAt.String()
}

// checkSameRecords asserts that got holds exactly the keys and plans of want.
func checkSameRecords(t *testing.T, got, want keys.Store) {
	t.Helper()
	ctx := context.Background()
	gk, err := got.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wk, err := want.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(gk) != len(wk) {
		t.Fatalf("%d keys, want %d", len(gk), len(wk))
	}
	for i := range wk {
		if d := sameKey(gk[i], wk[i]); d != "" {
			t.Fatalf("key %d: %s", i, d)
		}
	}
	gp, err := got.Plans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wp, err := want.Plans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(gp) != len(wp) {
		t.Fatalf("%d plans, want %d", len(gp), len(wp))
	}
	for i, w := range wp {
		g := gp[i]
		if g.Name != w.Name || !slices.Equal(g.Models, w.Models) || g.RPM != w.RPM || g.TPM != w.TPM ||
			g.MaxRequestUSD != w.MaxRequestUSD || g.MonthlyUSD != w.MonthlyUSD {
			t.Fatalf("plan %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestCopyStoreBoltValkeyBolt(t *testing.T) {
	ctx := context.Background()
	src, err := keys.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	plans := []*keys.Plan{
		{Name: "free", Models: []string{"gpt-4o-mini"}, RPM: 10, MonthlyUSD: 5_000_000},
		{Name: "pro", Models: []string{"gpt-4o", "o1-*"}, RPM: 600, TPM: 1_000_000, MaxRequestUSD: 2_500_000},
	}
	for _, p := range plans {
		if err := src.PutPlan(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	created := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
	secrets := map[string]string{} // key id → its current secret
	var retired []string           // secrets that must not resolve anywhere
	put := func(id, plan string, edit func(*keys.Key)) *keys.Key {
		t.Helper()
		secret, err := keys.NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		hash, err := keys.ParseSecret([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		k := &keys.Key{ID: id, Name: "key " + id, Plan: plan, Hash: hash, Last4: secret[len(secret)-4:],
			CreatedAt: created.Add(time.Duration(len(secrets)) * time.Minute)}
		if edit != nil {
			edit(k)
		}
		if cur, err := src.KeyByID(ctx, id); err == nil {
			k.Revision = cur.Revision // replacing (rotating) a stored key
		}
		if err := src.PutKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		if old, ok := secrets[id]; ok {
			retired = append(retired, old)
		}
		secrets[id] = secret
		return k
	}
	put("key_000000000000000000000001", "free", nil)
	put("key_000000000000000000000002", "pro", func(k *keys.Key) { k.ExpiresAt = created.Add(30 * 24 * time.Hour) })
	put("key_000000000000000000000003", "free", func(k *keys.Key) { k.RevokedAt = created.Add(time.Hour + time.Nanosecond) })
	rotated := put("key_000000000000000000000004", "pro", nil)
	put(rotated.ID, "pro", func(k *keys.Key) { k.CreatedAt = rotated.CreatedAt })

	srv := valkeytest.Start(t)
	vs := openValkey(t, srv, "migrate", 0)
	defer vs.Close()
	back, err := keys.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()

	copyStore := func(dst, src keys.Store) {
		t.Helper()
		nk, np, err := keys.CopyStore(ctx, dst, src)
		if err != nil {
			t.Fatal(err)
		}
		if nk != len(secrets) || np != len(plans) {
			t.Fatalf("CopyStore copied %d keys and %d plans, want %d and %d", nk, np, len(secrets), len(plans))
		}
		checkSameRecords(t, dst, src)
	}
	copyStore(vs, src)
	copyStore(vs, src) // idempotent
	copyStore(back, vs)

	for _, s := range []keys.Store{vs, back} {
		for id, secret := range secrets {
			k, err := s.KeyByHash(ctx, keys.HashSecret(secret))
			if err != nil || k.ID != id {
				t.Fatalf("%T: the secret of %s resolves to %v, %v", s, id, k, err)
			}
		}
		for _, secret := range retired {
			if _, err := s.KeyByHash(ctx, keys.HashSecret(secret)); !errors.Is(err, keys.ErrNotFound) {
				t.Fatalf("%T: a retired secret resolves: %v", s, err)
			}
		}
	}
}

func TestCopyStoreStopsAtFirstError(t *testing.T) {
	ctx := context.Background()
	src, err := keys.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := keys.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	created := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	free := &keys.Plan{Name: "free"}
	for _, s := range []keys.Store{src, dst} {
		if err := s.PutPlan(ctx, free); err != nil {
			t.Fatal(err)
		}
	}
	a := &keys.Key{ID: "key_00000000000000000000000a", Plan: "free", Hash: hashOf("a"), CreatedAt: created}
	b := &keys.Key{ID: "key_00000000000000000000000b", Plan: "free", Hash: hashOf("b"), CreatedAt: created.Add(time.Second)}
	for _, k := range []*keys.Key{a, b} {
		if err := src.PutKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	// dst already gave b's hash to another key: copying b must fail, not
	// steal the hash.
	squatter := &keys.Key{ID: "key_00000000000000000000000c", Plan: "free", Hash: b.Hash, CreatedAt: created}
	if err := dst.PutKey(ctx, squatter); err != nil {
		t.Fatal(err)
	}
	nk, np, err := keys.CopyStore(ctx, dst, src)
	if !errors.Is(err, keys.ErrInvalidKey) || nk != 1 || np != 1 {
		t.Fatalf("CopyStore = %d keys, %d plans, %v; want 1, 1 and ErrInvalidKey", nk, np, err)
	}
	if k, err := dst.KeyByHash(ctx, b.Hash); err != nil || k.ID != squatter.ID {
		t.Fatalf("b's hash in dst resolves to %v, %v; want the key that had it", k, err)
	}
}
