package limits

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

// TestSharedOutageRates: with Valkey stopped, a node of two admits from what
// is left of the slices it leased, then from its half of each limit; a
// request the tokens refuse gives its request back to where it took it.
// Every count is exact: the clock does not move, so nothing refills.
func TestSharedOutageRates(t *testing.T) {
	for _, c := range []struct {
		name     string
		limits   Limits
		tokens   int64
		admitted int     // while down, of 400
		refusal  Refusal // the last
		// What the last refusal's headers say is left of the half, and
		// what is left of the request slice after it.
		requestsLeft, reqSlice int64
	}{
		// The first lease is the request and a slice of 600/50 = 12:
		// those 12, then the half's 300.
		{"requests: the slice, then half", Limits{RPM: 600}, 0, 12 + 300, RefusedRequests, 0, 0},
		// The first lease is the request's 100 and a slice of 6000/50 =
		// 120: one more, then 30 of the half's 3000.
		{"tokens: the slice, then half", Limits{TPM: 6000}, 100, 1 + 30, RefusedTokens, 0, 0},
		// The 12 requests in the slice go first, then 19 of the half's
		// 300; the refused 32nd gives its request back to the half.
		{"a token refusal returns the request to the half", Limits{RPM: 600, TPM: 6000}, 100, 1 + 30, RefusedTokens, 300 - 19, 0},
		// A tokens slice of 12 (< 100): each admission takes its request
		// from the slice of 12 and 100 tokens of the half's 300; the 4th
		// gives its request back to the slice.
		{"a token refusal returns the request to the slice", Limits{RPM: 600, TPM: 600}, 100, 3, RefusedTokens, 300, 12 - 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := valkeytest.Start(t)
			clock := newSimClock(nov)
			g := sharedGate(t, valkeyClient(t, srv), "outrate", "a", clock, ValkeyOptions{Nodes: 2, Timeout: time.Second})
			ctx := context.Background()
			a := Admission{KeyID: "k", Model: "m", Limits: c.limits, Tokens: c.tokens}
			var tk Ticket
			if g.Admit(ctx, &a, clock.Now(), &tk); tk.Refusal != Admitted {
				t.Fatalf("refused %d with Valkey up", tk.Refusal)
			}
			g.Settle(&tk, usd.Tokens{Prompt: c.tokens, Completion: 0}, price, clock.Now())
			srv.Stop()
			admitted := 0
			for range 400 {
				if g.Admit(ctx, &a, clock.Now(), &tk); tk.Refusal == Admitted {
					admitted++
					g.Settle(&tk, usd.Tokens{Prompt: c.tokens, Completion: 0}, price, clock.Now())
				}
			}
			if admitted != c.admitted || tk.Refusal != c.refusal {
				t.Fatalf("admitted %d while down, last refusal %d; want %d, %d", admitted, tk.Refusal, c.admitted, c.refusal)
			}
			if c.limits.RPM > 0 && (tk.Requests.Limit != c.limits.RPM/2 || tk.Requests.Remaining != c.requestsLeft) {
				t.Fatalf("requests %+v, want %d left of %d", tk.Requests, c.requestsLeft, c.limits.RPM/2)
			}
			if c.limits.TPM > 0 && tk.Tokens.Limit != c.limits.TPM/2 {
				t.Fatalf("tokens %+v, want a limit of %d", tk.Tokens, c.limits.TPM/2)
			}
			s := g.state("k")
			s.mu.Lock()
			left := s.sh.req.n
			s.mu.Unlock()
			if left != c.reqSlice {
				t.Fatalf("request slice holds %d, want %d", left, c.reqSlice)
			}
		})
	}
}

// TestSharedOutageBudget: with Valkey stopped, a node spends only the budget
// lease it holds, and only while the lease is fresh (LeaseTTL/2 after Valkey
// last confirmed it); Extend holds to the same lease.
func TestSharedOutageBudget(t *testing.T) {
	const ttl = 10 * time.Second
	worst := price.Cost(1000, 1000) // $0.003
	// A cap of 50 worst cases: a lease is the request and a fiftieth more,
	// two worst cases.
	limits := Limits{Monthly: usd.Micro(50 * worst / 1_000_000)}
	for _, c := range []struct {
		name  string
		after time.Duration // how long after the lease the outage requests come
		// What Admit says while down, in order, after the one before.
		want []Refusal
	}{
		{"a fresh lease covers what it has left", 0, []Refusal{Admitted, RefusedUnavailable, RefusedUnavailable}},
		{"just before half the TTL", ttl/2 - time.Millisecond, []Refusal{Admitted, RefusedUnavailable}},
		{"a lease half a TTL old covers nothing", ttl / 2, []Refusal{RefusedUnavailable, RefusedUnavailable}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := valkeytest.Start(t)
			clock := newSimClock(nov)
			g := sharedGate(t, valkeyClient(t, srv), "outbudget", "a", clock, ValkeyOptions{LeaseTTL: ttl, Timeout: time.Second})
			ctx := context.Background()
			a := Admission{KeyID: "k", Model: "m", Limits: limits, Worst: worst}
			var tk Ticket
			if g.Admit(ctx, &a, clock.Now(), &tk); tk.Refusal != Admitted {
				t.Fatalf("refused %d with Valkey up", tk.Refusal)
			}
			g.Settle(&tk, usd.Tokens{Prompt: 1000, Completion: 1000}, price, clock.Now())
			srv.Stop()
			clock.Add(c.after)
			var got []Refusal
			for range c.want {
				g.Admit(ctx, &a, clock.Now(), &tk)
				got = append(got, tk.Refusal)
				if tk.Refusal == Admitted {
					g.Settle(&tk, usd.Tokens{Prompt: 1000, Completion: 1000}, price, clock.Now())
				}
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("while down: %v, want %v", got, c.want)
			}
		})
	}
	t.Run("Extend", func(t *testing.T) {
		srv := valkeytest.Start(t)
		clock := newSimClock(nov)
		g := sharedGate(t, valkeyClient(t, srv), "outextend", "a", clock, ValkeyOptions{LeaseTTL: ttl, Timeout: time.Second})
		ctx := context.Background()
		// Reserve a tenth of the worst case: the lease is that and a
		// fiftieth of the cap.
		a := Admission{KeyID: "k", Model: "m", Limits: limits, Worst: worst, Reserve: worst / 10}
		var tk Ticket
		if g.Admit(ctx, &a, clock.Now(), &tk); tk.Refusal != Admitted {
			t.Fatalf("refused %d with Valkey up", tk.Refusal)
		}
		srv.Stop()
		for _, step := range []struct {
			more usd.Pico
			want bool
		}{
			{worst / 2, true},    // 0.6 of the lease's 1.1 worst cases
			{worst / 2, true},    // 1.1: all of it
			{worst / 100, false}, // nothing left to lease from
		} {
			if ok := g.Extend(ctx, &tk, step.more, clock.Now()); ok != step.want {
				t.Fatalf("Extend by %s while down: %v, want %v (reserved %s)", step.more, ok, step.want, tk.Reserved())
			}
		}
		if tk.Reserved() != worst/10+worst {
			t.Fatalf("reserved %s, want %s", tk.Reserved(), worst/10+worst)
		}
		g.Settle(&tk, usd.Tokens{Prompt: 1000, Completion: 1000}, price, clock.Now())
	})
}

// TestSharedBudgetAcrossOutage: two nodes share a cap of 50 worst cases.
// They spend some with Valkey up, then as much as their leases allow with
// Valkey stopped, then the rest once it is back: the cap is spent exactly,
// never passed, and Valkey records every request settled during the outage
// once.
func TestSharedBudgetAcrossOutage(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	clock := newSimClock(nov)
	const idle = 500 * time.Millisecond
	o := ValkeyOptions{Timeout: time.Second, IdleReturn: idle, Backoff: idle}
	gates := []*Gate{sharedGate(t, c, "outcap", "a", clock, o), sharedGate(t, c, "outcap", "b", clock, o)}
	ctx := context.Background()
	worst := price.Cost(1000, 1000)
	a := Admission{KeyID: "k", Model: "m", Limits: Limits{Monthly: usd.Micro(50 * worst / 1_000_000)}, Worst: worst}
	admitted := 0
	// round admits one request on each node, settled at its worst case,
	// and reports the refusals.
	round := func() []Refusal {
		var got []Refusal
		for _, g := range gates {
			var tk Ticket
			g.Admit(ctx, &a, clock.Now(), &tk)
			got = append(got, tk.Refusal)
			if tk.Refusal == Admitted {
				admitted++
				g.Settle(&tk, usd.Tokens{Prompt: 1000, Completion: 1000}, price, clock.Now())
			}
		}
		return got
	}
	// Nine each: a lease is the request and a fiftieth of the cap, so
	// every other request leases two worst cases, and each node ends
	// with one worst case leased and free.
	for range 9 {
		if got := round(); !slices.Equal(got, []Refusal{Admitted, Admitted}) {
			t.Fatalf("with Valkey up: %v", got)
		}
	}

	srv.Stop()
	down := 0
	for range 10 {
		for _, r := range round() {
			if r == Admitted {
				down++
			} else if r != RefusedUnavailable {
				t.Fatalf("while down: refusal %d, want %d", r, RefusedUnavailable)
			}
		}
		clock.Add(idle) // past each backoff: every round calls Valkey again
	}
	if down != 2 {
		t.Fatalf("%d requests admitted while down, want 2: one on each node, from its lease", down)
	}
	for _, g := range gates {
		if err := g.Flush(ctx); err == nil {
			t.Fatal("Flush succeeded with Valkey down")
		}
	}

	srv.Restart(t)
	clock.Add(idle)
	// Until the cap: when both nodes are refused, their idle leases go
	// back and they try once more.
	for tries := 0; tries < 200; tries++ {
		if got := round(); got[0] != Admitted && got[1] != Admitted {
			for _, r := range got {
				if r != RefusedMonthlyCap {
					t.Fatalf("after the outage: refusal %d, want %d", r, RefusedMonthlyCap)
				}
			}
			clock.Add(idle)
			for _, g := range gates {
				if err := g.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if got := round(); got[0] != Admitted && got[1] != Admitted {
				break
			}
		}
	}
	for _, g := range gates {
		if err := g.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r, err := gates[1].Usage(ctx, "k", clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if admitted != 50 || r.Usage.Requests != 50 || r.Usage.Spent != 50*worst {
		t.Fatalf("admitted %d; Valkey records %d requests, %s; want 50 worst cases, the cap", admitted, r.Usage.Requests, r.Usage.Spent)
	}
}

// TestOneNodeLedgerOutage: a one-node Gate whose ledger (here Valkey) is
// unreachable refuses a capped key whose month it has not loaded, keeps
// enforcing the cap of one it has, admits an uncapped one, and keeps what it
// settles until a flush reaches the ledger again, which then records it
// once.
func TestOneNodeLedgerOutage(t *testing.T) {
	srv := valkeytest.Start(t)
	ledger, err := NewValkeyLedger(valkeyClient(t, srv), "onenode", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	g := NewGate(ledger, quiet)
	ctx := context.Background()
	worst := price.Cost(1000, 1000)
	capped := Limits{Monthly: usd.Micro(10 * worst / 1_000_000)}
	loaded := Admission{KeyID: "loaded", Model: "m", Limits: capped, Worst: worst}
	unloaded := Admission{KeyID: "unloaded", Model: "m", Limits: capped, Worst: worst}
	uncapped := Admission{KeyID: "uncapped", Model: "m", Limits: Limits{RPM: 600}, Worst: worst}
	admit := func(a *Admission) Refusal {
		var tk Ticket
		g.Admit(ctx, a, nov, &tk)
		if tk.Refusal == Admitted {
			g.Settle(&tk, usd.Tokens{Prompt: 1000, Completion: 1000}, price, nov)
		}
		return tk.Refusal
	}
	for range 4 {
		if r := admit(&loaded); r != Admitted {
			t.Fatalf("with the ledger up: refusal %d", r)
		}
	}
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	for _, c := range []struct {
		what string
		a    *Admission
		want []Refusal
	}{
		{"a capped key whose month is loaded: the cap, from what it knows", &loaded, []Refusal{0, 0, 0, 0, 0, 0, RefusedMonthlyCap}},
		{"a capped key whose month is not loaded", &unloaded, []Refusal{RefusedUnavailable}},
		{"a key without a cap", &uncapped, []Refusal{0, 0}},
	} {
		var got []Refusal
		for range c.want {
			got = append(got, admit(c.a))
		}
		if !slices.Equal(got, c.want) {
			t.Fatalf("%s: %v, want %v", c.what, got, c.want)
		}
	}
	if err := g.Flush(ctx); err == nil {
		t.Fatal("Flush succeeded with the ledger down")
	}
	if _, err := g.Usage(ctx, "loaded", nov); err == nil {
		t.Fatal("Usage succeeded with the ledger down")
	}

	srv.Restart(t)
	if r := admit(&unloaded); r != Admitted {
		t.Fatalf("a capped key after the outage: refusal %d", r)
	}
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key      string
		requests int64
	}{{"loaded", 10}, {"unloaded", 1}, {"uncapped", 2}} {
		r, err := g.Usage(ctx, c.key, nov)
		if err != nil {
			t.Fatal(err)
		}
		if r.Usage.Requests != c.requests || r.Usage.Spent != usd.Pico(c.requests)*worst {
			t.Fatalf("%s: the ledger records %d requests, %s; want %d worst cases", c.key, r.Usage.Requests, r.Usage.Spent, c.requests)
		}
	}
}
