package limits

import (
	"context"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

// TestSpendCountedOnceWhenACapAppears: 30 requests on an uncapped plan
// ($0.0048), some flushed and some not, then the key gains a $0.008 cap: a
// request whose worst case ($0.003) fits in what is left is admitted, one
// that does not fit is refused, on one node (the bolt ledger) and on the
// shared Valkey gate. Before the fix the embedded gate added the ledger's
// spend on top of the spend it already counted, and refused the first.
func TestSpendCountedOnceWhenACapAppears(t *testing.T) {
	perRequest := price.Cost(60, 50) // $0.00016
	capped := Limits{Monthly: 8_000} // $0.008
	fits := price.Cost(1000, 1000)   // $0.003: 0.0048 + 0.003 <= 0.008
	tooBig := price.Cost(1000, 1200) // $0.0034: 0.0048 + 0.0034 > 0.008
	gates := map[string]func(t *testing.T) *Gate{
		"embedded": func(t *testing.T) *Gate { g, _, _ := newGate(t); return g },
		"valkey": func(t *testing.T) *Gate {
			return sharedGate(t, valkeyClient(t, valkeytest.Start(t)), "cap", "a", nil, ValkeyOptions{})
		},
	}
	for name, open := range gates {
		for _, flushedAfter := range []int{0, 10, 30} {
			t.Run(name+"/flushed "+string(rune('0'+flushedAfter/10))+"0", func(t *testing.T) {
				g := open(t)
				ctx := context.Background()
				a := Admission{KeyID: "key_a", Model: "m", Worst: perRequest}
				for i := range 30 {
					if i == flushedAfter {
						if err := g.Flush(ctx); err != nil {
							t.Fatal(err)
						}
					}
					var tk Ticket
					if g.Admit(ctx, &a, nov, &tk); tk.Refusal != Admitted {
						t.Fatalf("uncapped request %d refused: %d", i, tk.Refusal)
					}
					g.Settle(&tk, usd.Tokens{Prompt: 60, Completion: 50}, price, nov)
				}
				if flushedAfter == 30 {
					if err := g.Flush(ctx); err != nil {
						t.Fatal(err)
					}
				}
				big := Admission{KeyID: "key_a", Model: "m", Limits: capped, Worst: tooBig}
				var tk Ticket
				if g.Admit(ctx, &big, nov, &tk); tk.Refusal != RefusedMonthlyCap {
					t.Fatalf("a $0.0034 worst case over $0.0048 spent of $0.008: refusal %d, want the monthly cap", tk.Refusal)
				}
				// A shared gate's refusal reports what Valkey holds (spent and
				// leased), which lags this node's unflushed spend.
				if name == "embedded" && tk.Spent != 30*perRequest {
					t.Fatalf("refusal says %s spent, want %s", tk.Spent, 30*perRequest)
				}
				ok := Admission{KeyID: "key_a", Model: "m", Limits: capped, Worst: fits}
				if g.Admit(ctx, &ok, nov, &tk); tk.Refusal != Admitted {
					t.Fatalf("a $0.003 worst case over $0.0048 spent of $0.008: refusal %d (spent %s), want admitted", tk.Refusal, tk.Spent)
				}
				g.Settle(&tk, usd.Tokens{Prompt: 1000, Completion: 1000}, price, nov)
				if err := g.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				r, err := g.Usage(ctx, "key_a", nov)
				if err != nil {
					t.Fatal(err)
				}
				if want := 30*perRequest + fits; r.Usage.Spent != want || r.Usage.Requests != 31 {
					t.Fatalf("recorded %s over %d requests, want %s over 31", r.Usage.Spent, r.Usage.Requests, want)
				}
			})
		}
	}
}

// heldLedger is the real bolt ledger whose Add, once armed, waits until
// released, so a test can act while a flush is between taking the pending
// usage and the ledger having it.
type heldLedger struct {
	*BoltLedger
	adding  chan struct{}
	release chan struct{}
}

func (l *heldLedger) Add(ctx context.Context, deltas []*MonthUsage) error {
	if l.adding != nil {
		close(l.adding)
		<-l.release
	}
	return l.BoltLedger.Add(ctx, deltas)
}

// TestSpendLoadRacesAFlush: the first capped request loads the ledger while
// a flush is moving the same key's unflushed spend into it; the load sees
// the spend exactly once, so a worst case over what is left is refused and
// one that fits is admitted.
func TestSpendLoadRacesAFlush(t *testing.T) {
	perRequest := price.Cost(60, 50) // $0.00016; 30 of them $0.0048 of a $0.008 cap
	for _, tc := range []struct {
		worst usd.Pico
		want  Refusal
	}{
		{price.Cost(1000, 1200), RefusedMonthlyCap}, // $0.0034 does not fit
		{price.Cost(1000, 1000), Admitted},          // $0.003 fits
	} {
		bolt, err := OpenBoltLedger(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		l := &heldLedger{BoltLedger: bolt}
		g := NewGate(l, quiet)
		ctx := context.Background()
		a := Admission{KeyID: "key_a", Model: "m", Worst: perRequest}
		for range 30 {
			var tk Ticket
			g.Admit(ctx, &a, nov, &tk)
			g.Settle(&tk, usd.Tokens{Prompt: 60, Completion: 50}, price, nov)
		}
		l.adding, l.release = make(chan struct{}), make(chan struct{})
		flushed := make(chan error, 1)
		go func() { flushed <- g.Flush(ctx) }()
		<-l.adding
		capped := Admission{KeyID: "key_a", Model: "m", Limits: Limits{Monthly: 8_000}, Worst: tc.worst}
		var tk Ticket
		admitted := make(chan struct{})
		go func() { g.Admit(ctx, &capped, nov, &tk); close(admitted) }()
		// The admission may wait for the flush (it should) or not: give it
		// the chance to load mid-flush before letting the flush finish.
		// Correct code passes either way.
		select {
		case <-admitted:
		case <-time.After(100 * time.Millisecond):
		}
		close(l.release)
		<-admitted
		if err := <-flushed; err != nil {
			t.Fatal(err)
		}
		if tk.Refusal != tc.want {
			t.Fatalf("worst case %s over $0.0048 spent of $0.008: refusal %d, want %d", tc.worst, tk.Refusal, tc.want)
		}
		bolt.Close()
	}
}
