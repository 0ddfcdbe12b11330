package limits

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

// TestExtendStopsStreamsAtTheCap: streams start from a small reservation and
// extend it a step per 100 tokens, each until its 1000 tokens are out or the
// cap leaves no room. However they interleave, on one node or two sharing
// Valkey, spend ends at or under the cap and within a step per stream of it.
func TestExtendStopsStreamsAtTheCap(t *testing.T) {
	for _, tc := range []struct {
		name  string
		gates func(t *testing.T) []*Gate
	}{
		{"local", func(t *testing.T) []*Gate { g, _, _ := newGate(t); return []*Gate{g} }},
		{"shared", func(t *testing.T) []*Gate {
			c := valkeyClient(t, valkeytest.Start(t))
			return []*Gate{
				sharedGate(t, c, "extend", "a", nil, ValkeyOptions{}),
				sharedGate(t, c, "extend", "b", nil, ValkeyOptions{}),
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gates := tc.gates(t)
			step := price.Cost(0, 100)  // $0.0002
			capUSD := usd.Micro(10_000) // $0.01: 50 steps
			a := Admission{KeyID: "key_s", Model: "m", Limits: Limits{Monthly: capUSD, RPM: 1000},
				Worst: price.Cost(0, 1000), Reserve: step}
			const streams = 20 // 20 × 10 steps wanted, 50 fit
			var wg sync.WaitGroup
			var mu sync.Mutex
			var produced, cut int64
			for i := range streams {
				g := gates[i%len(gates)]
				wg.Go(func() {
					var tk Ticket
					g.Admit(context.Background(), &a, nov, &tk)
					if tk.Refusal != Admitted {
						if tk.Refusal != RefusedMonthlyCap {
							t.Errorf("refusal %d", tk.Refusal)
						}
						return
					}
					tokens := int64(100)
					for tokens < 1000 {
						if !g.Extend(context.Background(), &tk, step, nov) {
							mu.Lock()
							cut++
							mu.Unlock()
							break
						}
						tokens += 100
						if tk.Reserved() != price.Cost(0, tokens) {
							t.Errorf("reserved %s after %d tokens", tk.Reserved(), tokens)
						}
						time.Sleep(100 * time.Microsecond)
					}
					g.Settle(&tk, usd.Tokens{Completion: tokens}, price, nov)
					mu.Lock()
					produced += tokens
					mu.Unlock()
				})
			}
			wg.Wait()
			for _, g := range gates {
				if err := g.Flush(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			r, err := gates[0].Usage(context.Background(), "key_s", nov)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("produced %d tokens, %d streams cut, spent %s of %s", produced, cut, r.Usage.Spent, capUSD.Pico())
			if r.Usage.Spent > capUSD.Pico() || r.Usage.Spent != price.Cost(0, produced) || cut == 0 {
				t.Fatalf("spent %s for %d tokens, %d cut; want at most the cap, all billed, some cut", r.Usage.Spent, produced, cut)
			}
			// On a shared gate a node's lease may strand up to a step (and
			// Valkey's extra) per node; one node strands nothing.
			if slack := capUSD.Pico() - r.Usage.Spent; tc.name == "local" && slack >= step {
				t.Fatalf("stopped %s short of the cap with room for another step", slack)
			}
			if r.Reserved != 0 {
				t.Fatalf("%s still reserved after every stream settled", r.Reserved)
			}
		})
	}
}

// TestExtendWithoutCapOrTicket: with no monthly cap Extend always succeeds
// and charges no rate; a refused or settled ticket cannot extend.
func TestExtendWithoutCapOrTicket(t *testing.T) {
	g, _, _ := newGate(t)
	a := Admission{KeyID: "k", Model: "m", Limits: Limits{RPM: 2}, Worst: price.Cost(0, 10)}
	var tk Ticket
	g.Admit(context.Background(), &a, nov, &tk)
	for range 100 {
		if !g.Extend(context.Background(), &tk, price.Cost(0, 1000), nov) {
			t.Fatal("Extend refused without a cap")
		}
	}
	var second Ticket
	if g.Admit(context.Background(), &a, nov, &second); second.Refusal != Admitted || second.Requests.Remaining != 0 {
		t.Fatalf("second of 2 rpm: refusal %d %+v; Extend must not spend the rate", second.Refusal, second.Requests)
	}
	g.Settle(&tk, usd.Tokens{Completion: 10}, price, nov)
	if g.Extend(context.Background(), &tk, 1, nov) {
		t.Fatal("a settled ticket extended")
	}
}
