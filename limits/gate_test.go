package limits

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
)

var (
	quiet = slog.New(slog.NewTextHandler(io.Discard, nil))
	price = usd.Price{InputPerMTok: 1_000_000, OutputPerMTok: 2_000_000} // $1 and $2 per million
	nov   = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
)

func newGate(t *testing.T) (*Gate, *BoltLedger, string) {
	t.Helper()
	dir := t.TempDir()
	l, err := OpenBoltLedger(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return NewGate(l, quiet), l, dir
}

// TestBudgetHoldsUnderConcurrency: 100 requests at once against a budget with
// room for 10 worst cases: the recorded spend ends at or under the cap however
// they interleave, and every admitted one is recorded.
func TestBudgetHoldsUnderConcurrency(t *testing.T) {
	g, _, _ := newGate(t)
	worst := price.Cost(1000, 1000)                                                           // $0.003
	a := Admission{KeyID: "key_a", Model: "m", Limits: Limits{Monthly: 30_000}, Worst: worst} // $0.03: 10 worst cases
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var tk Ticket
			g.Admit(context.Background(), &a, nov, &tk)
			if tk.Refusal != Admitted {
				if tk.Refusal != RefusedMonthlyCap {
					t.Errorf("refusal %d", tk.Refusal)
				}
				return
			}
			time.Sleep(time.Millisecond)
			g.Settle(&tk, usd.Tokens{Prompt: 1000, Completion: 1000}, price, nov) // the worst case, exactly
			mu.Lock()
			admitted++
			mu.Unlock()
		}()
	}
	wg.Wait()
	r, err := g.Usage(context.Background(), "key_a", nov)
	if err != nil {
		t.Fatal(err)
	}
	if admitted != 10 || r.Usage.Spent != 10*worst || r.Usage.Requests != 10 || r.Reserved != 0 {
		t.Fatalf("admitted %d, spent %s, requests %d, reserved %s; want 10 worst cases", admitted, r.Usage.Spent, r.Usage.Requests, r.Reserved)
	}
}

func TestSettleReleasesTheUnusedReservation(t *testing.T) {
	g, _, _ := newGate(t)
	a := Admission{KeyID: "k", Model: "m", Limits: Limits{Monthly: 10_000}, Worst: price.Cost(0, 5000)} // $0.01 cap, worst $0.01
	var tk Ticket
	g.Admit(context.Background(), &a, nov, &tk)
	if tk.Refusal != Admitted {
		t.Fatal("refused the first request")
	}
	var second Ticket
	if g.Admit(context.Background(), &a, nov, &second); second.Refusal != RefusedMonthlyCap {
		t.Fatal("admitted past the cap while the first is reserved")
	}
	g.Settle(&tk, usd.Tokens{Completion: 100}, price, nov) // used a fiftieth of the worst case
	g.Settle(&tk, usd.Tokens{Completion: 100}, price, nov) // settling twice does nothing
	a.Worst = price.Cost(0, 4900)
	if g.Admit(context.Background(), &a, nov, &second); second.Refusal != Admitted {
		t.Fatalf("refused %d with $0.0098 left", second.Refusal)
	}
}

func TestPerRequestCap(t *testing.T) {
	g, _, _ := newGate(t)
	a := Admission{KeyID: "k", Limits: Limits{MaxRequest: 500_000, RPM: 10}, Worst: usd.Micro(500_001).Pico()}
	var tk Ticket
	if g.Admit(context.Background(), &a, nov, &tk); tk.Refusal != RefusedRequestCap || tk.Cap != usd.Micro(500_000).Pico() {
		t.Fatalf("refusal %d cap %s", tk.Refusal, tk.Cap)
	}
	a.Worst = usd.Micro(500_000).Pico()
	if g.Admit(context.Background(), &a, nov, &tk); tk.Refusal != Admitted || tk.Requests.Remaining != 9 {
		t.Fatalf("at the cap: refusal %d, %+v (a refused request must not spend the rate)", tk.Refusal, tk.Requests)
	}
}

func TestRateLimits(t *testing.T) {
	g, _, _ := newGate(t)
	a := Admission{KeyID: "k", Model: "m", Limits: Limits{RPM: 3, TPM: 1000}, Tokens: 300}
	var tk Ticket
	for i := range 3 {
		if g.Admit(context.Background(), &a, nov, &tk); tk.Refusal != Admitted {
			t.Fatalf("request %d refused %d", i, tk.Refusal)
		}
		g.Settle(&tk, usd.Tokens{Prompt: 10, Completion: 20}, price, nov) // 30 real tokens: 270 go back to the bucket
	}
	if tk.Requests.Remaining != 0 || tk.Requests.Limit != 3 || tk.Tokens.Limit != 1000 {
		t.Fatalf("after 3 of 3: %+v %+v", tk.Requests, tk.Tokens)
	}
	g.Admit(context.Background(), &a, nov, &tk)
	if tk.Refusal != RefusedRequests || tk.RetryAfter != 20*time.Second {
		t.Fatalf("4th of 3 rpm: refusal %d retry %s", tk.Refusal, tk.RetryAfter)
	}
	later := nov.Add(time.Minute)
	a.Tokens = 1001
	if g.Admit(context.Background(), &a, later, &tk); tk.Refusal != RefusedTokens {
		t.Fatalf("more tokens than the limit: refusal %d", tk.Refusal)
	}
	a.Tokens = 900
	if g.Admit(context.Background(), &a, later, &tk); tk.Refusal != Admitted {
		t.Fatalf("refused %d: the token refusal must have given its request back", tk.Refusal)
	}
}

// TestUsageSurvivesRestart: flushed usage is in the ledger, so a new Gate on
// the same file reports it and counts it against the cap.
func TestUsageSurvivesRestart(t *testing.T) {
	g, l, dir := newGate(t)
	a := Admission{KeyID: "k", Model: "gpt", Limits: Limits{Monthly: 5_000}, Worst: price.Cost(1000, 1000)}
	var tk Ticket
	g.Admit(context.Background(), &a, nov, &tk)
	g.Settle(&tk, usd.Tokens{Prompt: 1000, Completion: 1000}, price, nov) // $0.003 of $0.005
	if err := g.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.Close()

	l2, err := OpenBoltLedger(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	g2 := NewGate(l2, quiet)
	r, err := g2.Usage(context.Background(), "k", nov)
	if err != nil {
		t.Fatal(err)
	}
	if r.Usage.Spent != price.Cost(1000, 1000) || r.Usage.Models["gpt"].PromptTokens != 1000 {
		t.Fatalf("after restart: %+v", r.Usage)
	}
	if g2.Admit(context.Background(), &a, nov, &tk); tk.Refusal != RefusedMonthlyCap {
		t.Fatal("the restarted gate forgot the month's spend")
	}
	// A new month starts from zero.
	if g2.Admit(context.Background(), &a, nov.AddDate(0, 1, 0), &tk); tk.Refusal != Admitted {
		t.Fatalf("next month refused %d", tk.Refusal)
	}
}

func TestMonthRolloverKeepsTheOldMonth(t *testing.T) {
	g, _, _ := newGate(t)
	a := Admission{KeyID: "k", Model: "m"}
	end := time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC)
	var tk Ticket
	g.Admit(context.Background(), &a, end, &tk)
	g.Settle(&tk, usd.Tokens{Prompt: 1, Completion: 1}, price, end)
	g.Admit(context.Background(), &a, end.Add(2*time.Second), &tk)
	g.Settle(&tk, usd.Tokens{Prompt: 2, Completion: 2}, price, end.Add(2*time.Second))
	if err := g.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at   time.Time
		want int64
	}{{end, 1}, {end.Add(2 * time.Second), 2}} {
		r, _ := g.Usage(context.Background(), "k", c.at)
		if r.Usage.PromptTokens != c.want || r.Usage.Requests != 1 {
			t.Fatalf("month %d: %+v", r.Month, r.Usage.Counts)
		}
	}
	if MonthOf(end).End() != time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) {
		t.Fatal("month end")
	}
}

func BenchmarkAdmitSettle(b *testing.B) {
	g := NewGate(nil, quiet)
	a := Admission{KeyID: "key_bench", Model: "m", Limits: Limits{RPM: 1_000_000_000, TPM: 1_000_000_000, MaxRequest: 1_000_000_000}, Tokens: 300, Worst: 1000}
	now := nov
	b.ReportAllocs()
	for b.Loop() {
		var tk Ticket
		g.Admit(context.Background(), &a, now, &tk)
		g.Settle(&tk, usd.Tokens{Prompt: 100, Completion: 200}, price, now)
	}
}
