//go:build !race

package limits

import (
	"context"
	"testing"
)

func TestAllocsAdmitSettle(t *testing.T) {
	g, _, _ := newGate(t)
	a := Admission{KeyID: "key_alloc", Model: "m", Limits: Limits{RPM: 1_000_000_000, TPM: 1_000_000_000, MaxRequest: 1_000_000_000, Monthly: 1_000_000_000}, Tokens: 300, Worst: 1000}
	run := func() {
		var tk Ticket
		g.Admit(context.Background(), &a, nov, &tk)
		if tk.Refusal != Admitted {
			t.Fatalf("refused %d", tk.Refusal)
		}
		g.Settle(&tk, 100, 200, price, nov)
	}
	run() // creates the key's state and loads its month
	if n := testing.AllocsPerRun(1000, run); n != 0 {
		t.Fatalf("Admit+Settle allocate %v times, want 0", n)
	}
}
