//go:build !race

package limits

import (
	"context"
	"testing"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

// TestAllocsAdmitSettleShared: with slices and a lease in hand, a shared
// Gate admits and settles without a Valkey call and without allocating.
func TestAllocsAdmitSettleShared(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	g := sharedGate(t, c, "alloc", "a", nil, ValkeyOptions{})
	a := Admission{KeyID: "key_alloc", Model: "m", Limits: Limits{RPM: 1_000_000_000, TPM: 1_000_000_000, MaxRequest: 1_000_000_000, Monthly: 1_000_000_000}, Tokens: 300, Worst: price.Cost(100, 200)}
	run := func() {
		var tk Ticket
		g.Admit(context.Background(), &a, nov, &tk)
		if tk.Refusal != Admitted {
			t.Fatalf("refused %d", tk.Refusal)
		}
		g.Settle(&tk, usd.Tokens{Prompt: 100, Cached: 40, CacheWrite: 20, Completion: 200}, price, nov)
	}
	run() // creates the key's state and leases
	before := scriptCalls(t, c)
	if n := testing.AllocsPerRun(1000, run); n != 0 {
		t.Fatalf("Admit+Settle allocate %v times, want 0", n)
	}
	if calls := scriptCalls(t, c) - before; calls != 0 {
		t.Fatalf("%d Valkey calls with a lease in hand", calls)
	}
}
