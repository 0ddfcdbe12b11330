//go:build !race

package keys

import "testing"

// TestAllocsAuthenticateHit fails on any allocation made per call.
// The one ristretto makes per 64 Gets (its access-log batch) averages below 1
// and AllocsPerRun rounds it away, as allocs/op does in the benchmark.
func TestAllocsAuthenticateHit(t *testing.T) {
	fx := newFixture(t)
	_, s := fx.create("free")
	secret := []byte(s)
	fx.auth(s, nil, "free")
	fx.settle()
	byHash, plan := fx.reads()
	n := testing.AllocsPerRun(10_000, func() {
		if _, _, err := fx.r.Authenticate(fx.ctx, secret); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("a cache hit allocates %v times per Authenticate, want 0", n)
	}
	if b, p := fx.reads(); b != byHash || p != plan {
		t.Fatalf("cache hits read the store: %d→%d key and %d→%d plan reads", byHash, b, plan, p)
	}
}
