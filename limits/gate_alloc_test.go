//go:build !race

package limits

import (
	"context"
	"testing"

	"github.com/tokenhub/tokenhub/internal/usd"
)

func TestAllocsAdmitSettle(t *testing.T) {
	t.Run("no journal", func(t *testing.T) {
		g, _, _ := newGate(t)
		allocsAdmitSettle(t, g)
	})
	t.Run("journal", func(t *testing.T) {
		g, _, _ := newGate(t)
		g.UseJournal(openJournal(t, t.TempDir()))
		allocsAdmitSettle(t, g)
	})
}

// allocsAdmitSettle fails t unless an admitted request's Admit, a stream's
// Progress and RenewProgress, and Settle on g allocate nothing.
func allocsAdmitSettle(t *testing.T, g *Gate) {
	a := Admission{KeyID: "key_alloc", Model: "m", Limits: Limits{RPM: 1_000_000_000, TPM: 1_000_000_000, MaxRequest: 1_000_000_000, Monthly: 1_000_000_000}, Tokens: 300, Worst: 1000}
	run := func() {
		var tk Ticket
		g.Admit(context.Background(), &a, nov, &tk)
		if tk.Refusal != Admitted {
			t.Fatalf("refused %d", tk.Refusal)
		}
		g.Progress(&tk, usd.Tokens{Prompt: 100, Cached: 40, CacheWrite: 20, Completion: 150}, price, nov)
		g.RenewProgress(&tk)
		g.Settle(&tk, usd.Tokens{Prompt: 100, Cached: 40, CacheWrite: 20, Completion: 200}, price, nov)
	}
	run() // creates the key's state and loads its month
	if n := testing.AllocsPerRun(1000, run); n != 0 {
		t.Fatalf("Admit+Progress+RenewProgress+Settle allocate %v times, want 0", n)
	}
}
