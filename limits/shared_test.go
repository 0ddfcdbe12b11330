package limits

import (
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
	"github.com/valkey-io/valkey-go"
)

// valkeyClient returns a client of srv like the one the key store opens,
// closed when t ends.
func valkeyClient(t testing.TB, srv *valkeytest.Server) valkey.Client {
	t.Helper()
	c, err := valkey.NewClient(valkey.ClientOption{
		InitAddress:      []string{srv.Addr()},
		DisableCache:     true,
		Dialer:           net.Dialer{Timeout: time.Second},
		ConnWriteTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// simClock is a time that tests move by hand, shared by the Gates of a test
// as their clock and passed to Admit and Settle.
type simClock struct{ ns atomic.Int64 }

func newSimClock(start time.Time) *simClock {
	c := &simClock{}
	c.ns.Store(start.UnixNano())
	return c
}

func (c *simClock) Now() time.Time                { return time.Unix(0, c.ns.Load()).UTC() }
func (c *simClock) Add(d time.Duration) time.Time { return time.Unix(0, c.ns.Add(int64(d))).UTC() }

// sharedGate returns a Gate on c under prefix as node id, on clock when it is
// not nil.
func sharedGate(t testing.TB, c valkey.Client, prefix, id string, clock *simClock, o ValkeyOptions) *Gate {
	t.Helper()
	o.Client, o.Prefix, o.NodeID = c, prefix, id
	g, err := NewValkeyGate(o, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if clock != nil {
		sharedOf(g).now = clock.Now
		sharedOf(g).base = clock.Now()
	}
	return g
}

// sharedOf is g's strategy, for a Gate made by NewValkeyGate.
func sharedOf(g *Gate) *shared { return g.strategy.(*shared) }

// hget reads one field of a hash, "" when it is missing.
func hget(t testing.TB, c valkey.Client, key, field string) string {
	t.Helper()
	v, err := c.Do(context.Background(), c.B().Hget().Key(key).Field(field).Build()).ToString()
	if valkey.IsValkeyNil(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func pico(t testing.TB, s string) usd.Pico {
	t.Helper()
	if s == "" {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return usd.Pico(n)
}

// TestSharedBudgetHoldsUnderConcurrency: 100 requests at once over two nodes
// against a budget with room for 10 worst cases: the recorded spend ends at
// or under the cap however they interleave, within one worst case of it.
func TestSharedBudgetHoldsUnderConcurrency(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	gates := []*Gate{
		sharedGate(t, c, "budget", "a", nil, ValkeyOptions{}),
		sharedGate(t, c, "budget", "b", nil, ValkeyOptions{}),
	}
	worst := price.Cost(1000, 1000) // $0.003
	a := Admission{KeyID: "key_a", Model: "m", Limits: Limits{Monthly: 30_000}, Worst: worst}
	var wg sync.WaitGroup
	var admitted atomic.Int64
	for i := range 100 {
		g := gates[i%2]
		wg.Go(func() {
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
			admitted.Add(1)
		})
	}
	wg.Wait()
	for _, g := range gates {
		if err := g.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	r, err := gates[0].Usage(context.Background(), "key_a", nov)
	if err != nil {
		t.Fatal(err)
	}
	spent := r.Usage.Spent
	capUSD := usd.Micro(30_000).Pico()
	t.Logf("admitted %d, spent %s of %s", admitted.Load(), spent, capUSD)
	if spent > capUSD || spent < capUSD-worst || r.Usage.Requests != admitted.Load() || spent != usd.Pico(admitted.Load())*worst {
		t.Fatalf("admitted %d, spent %s, requests %d; want spend in (cap − worst, cap]", admitted.Load(), spent, r.Usage.Requests)
	}
	key := "{budget:key_a}:spend:202611"
	if got := pico(t, hget(t, c, key, "spent")); got != spent {
		t.Fatalf("valkey spent %s, usage %s", got, spent)
	}
}

// TestSharedRateAcrossNodes: two or three nodes share a key's 600 requests a
// minute under demand far above it, spread unevenly, over two simulated
// minutes. The first minute starts with a full bucket, so the ideal is the
// limit plus one burst (1200); the second is the limit. Each must come within
// 5% of it, and never above; no minute in between may pass 1200.
func TestSharedRateAcrossNodes(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	for _, nodes := range []int{2, 3} {
		t.Run(strconv.Itoa(nodes)+" nodes", func(t *testing.T) {
			checkRateAcrossNodes(t, c, nodes)
		})
	}
}

func checkRateAcrossNodes(t *testing.T, c valkey.Client, nodes int) {
	clock := newSimClock(nov)
	prefix := "rate" + strconv.Itoa(nodes)
	var gates []*Gate
	for _, id := range []string{"a", "b", "c"}[:nodes] {
		gates = append(gates, sharedGate(t, c, prefix, id, clock, ValkeyOptions{}))
	}
	const rpm = 600
	a := Admission{KeyID: "key_r", Model: "m", Limits: Limits{RPM: rpm}}
	demand := []int{3, 1, 1} // requests per node per step, node c only every 5th step
	const step = 10 * time.Millisecond
	var perSecond [120]int
	calls, attempts := scriptCalls(t, c), 0
	for i := range int(2 * time.Minute / step) {
		now := clock.Now()
		for n, g := range gates {
			if n == 2 && i%5 != 0 {
				continue
			}
			for range demand[n] {
				var tk Ticket
				g.Admit(context.Background(), &a, now, &tk)
				attempts++
				switch tk.Refusal {
				case Admitted:
					perSecond[i*int(step)/int(time.Second)]++
					g.Settle(&tk, usd.Tokens{Prompt: 10, Completion: 10}, price, now)
				case RefusedRequests:
					if tk.RetryAfter <= 0 || tk.RetryAfter > time.Minute {
						t.Fatalf("retry after %v", tk.RetryAfter)
					}
				default:
					t.Fatalf("refusal %d", tk.Refusal)
				}
			}
			if i%25 == 0 { // Run's tick
				if err := sharedOf(g).sync(context.Background(), true, false); err != nil {
					t.Fatal(err)
				}
			}
		}
		clock.Add(step)
	}
	window := func(from int) (n int) {
		for _, c := range perSecond[from : from+60] {
			n += c
		}
		return n
	}
	first, second := window(0), window(60)
	t.Logf("admitted %d in the first minute, %d in the second, of %d requests, with %d Valkey calls (syncs included)",
		first, second, attempts, scriptCalls(t, c)-calls)
	if first > 2*rpm || first < 2*rpm*95/100 {
		t.Errorf("first minute admitted %d, want within 5%% under %d", first, 2*rpm)
	}
	if second > rpm || second < rpm*95/100 {
		t.Errorf("second minute admitted %d, want within 5%% under %d", second, rpm)
	}
	for from := 1; from <= 60; from++ {
		if n := window(from); n > rpm+rpm {
			t.Errorf("the minute from second %d admitted %d, more than the limit and a burst", from, n)
		}
	}
}

// scriptCalls is how many scripts srv has run.
func scriptCalls(t testing.TB, c valkey.Client) int64 {
	t.Helper()
	info, err := c.Do(context.Background(), c.B().Info().Section("commandstats").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, cmd := range []string{"cmdstat_evalsha:calls=", "cmdstat_eval:calls="} {
		if i := strings.Index(info, cmd); i >= 0 {
			rest := info[i+len(cmd):]
			calls, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
			n += calls
		}
	}
	return n
}

// TestSharedRateNoRoundTripPerRequest: under the limit, three nodes admit
// every request, and call Valkey about once per slice, not per request.
func TestSharedRateNoRoundTripPerRequest(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	clock := newSimClock(nov)
	var gates []*Gate
	for _, id := range []string{"a", "b", "c"} {
		gates = append(gates, sharedGate(t, c, "trips", id, clock, ValkeyOptions{}))
	}
	a := Admission{KeyID: "key_t", Model: "m", Limits: Limits{RPM: 60_000, TPM: 6_000_000, Monthly: 1_000_000_000}, Tokens: 500, Worst: price.Cost(100, 400)}
	before := scriptCalls(t, c)
	requests := 0
	for range 1000 { // 10 s of 600 requests a second, 60% of the limit
		now := clock.Now()
		for _, g := range gates {
			for range 2 {
				var tk Ticket
				if g.Admit(context.Background(), &a, now, &tk); tk.Refusal != Admitted {
					t.Fatalf("refused %d under the limit", tk.Refusal)
				}
				g.Settle(&tk, usd.Tokens{Prompt: 100, Completion: 300}, price, now)
				requests++
			}
		}
		clock.Add(10 * time.Millisecond)
	}
	calls := scriptCalls(t, c) - before
	t.Logf("%d requests, %d Valkey calls", requests, calls)
	if calls > int64(requests/100) {
		t.Fatalf("%d Valkey calls for %d requests", calls, requests)
	}
}

// TestSharedIdleLeaseReturns: what a node leased and did not use goes back
// to Valkey once it has been idle for IdleReturn, so busy nodes can have it.
func TestSharedIdleLeaseReturns(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	clock := newSimClock(nov)
	g := sharedGate(t, c, "idle", "a", clock, ValkeyOptions{})
	a := Admission{KeyID: "key_i", Model: "m", Limits: Limits{RPM: 600, Monthly: 1_000_000}, Worst: price.Cost(1000, 1000)} // $1 a month
	var tk Ticket
	now := clock.Now()
	if g.Admit(context.Background(), &a, now, &tk); tk.Refusal != Admitted {
		t.Fatalf("refused %d", tk.Refusal)
	}
	if want := (RateState{Limit: 600, Remaining: 599, Reset: 13 * time.Duration(interval(600))}); tk.Requests != want {
		t.Fatalf("headers %+v, want %+v: 587 in Valkey and 12 here", tk.Requests, want)
	}
	g.Settle(&tk, usd.Tokens{Prompt: 500, Completion: 500}, price, now)
	rate, spend := "{idle:key_i}:rate", "{idle:key_i}:spend:202611"
	tat := func() time.Duration {
		v := hget(t, c, rate, "req")
		if v == "" {
			return 0
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		return time.Duration(n - now.UnixNano())
	}
	iv := time.Duration(interval(600))
	if got := tat(); got != 13*iv {
		t.Fatalf("after one request the global bucket lent %v of tokens, want 13 (the request and a slice of 12)", got/iv)
	}
	if lease := pico(t, hget(t, c, spend, "lease:a")); lease != a.Worst+usd.Micro(1_000_000).Pico()/50 {
		t.Fatalf("lease %s, want the worst case and a fiftieth of the cap", lease)
	}
	// Busy: nothing goes back.
	clock.Add(100 * time.Millisecond)
	if err := g.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := tat(); got != 13*iv {
		t.Fatalf("a busy node gave back tokens: %v lent", got/iv)
	}
	// Idle: everything unused goes back; the spend stays.
	clock.Add(500 * time.Millisecond)
	if err := g.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// One token used 600ms ago has refilled: the bucket is full again (it
	// would be 700ms from full had the 12 not come back).
	if got := tat(); got != 0 {
		t.Fatalf("after the idle return the bucket is %v from full, want full", got)
	}
	for _, f := range []string{"lease:a", "exp:a", "leased"} {
		if v := hget(t, c, spend, f); v != "" {
			t.Errorf("after the idle return %s = %s, want none", f, v)
		}
	}
	if got := pico(t, hget(t, c, spend, "spent")); got != price.Cost(500, 500) {
		t.Fatalf("spent %s", got)
	}
}

// timed runs f and fails t if it took longer than limit.
// timed runs f and fails when it took past limit: a guard against a call
// that hangs, so limits are generous (seconds past the Valkey timeout), never
// a speed claim that a busy machine could break.
func timed(t *testing.T, what string, limit time.Duration, f func()) {
	t.Helper()
	start := time.Now()
	f()
	if took := time.Since(start); took > limit {
		t.Errorf("%s took %v, want at most %v", what, took, limit)
	}
}

// TestSharedValkeyDown: with Valkey stopped a node enforces its share of
// each rate limit and spends only the budget it has leased, answers within
// the timeout, and, once Valkey is back, is global again and records what
// it spent meanwhile.
func TestSharedValkeyDown(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	clock := newSimClock(nov)
	const timeout = 200 * time.Millisecond
	const bound = timeout + 10*time.Second // it returns, rather than hang; not a speed claim
	o := ValkeyOptions{Timeout: timeout}
	ga, gb := sharedGate(t, c, "down", "a", clock, o), sharedGate(t, c, "down", "b", clock, o)
	ctx := context.Background()
	for _, g := range []*Gate{ga, gb, ga} {
		sharedOf(g).heartbeat(ctx, true)
	}
	if sharedOf(ga).nodes() != 2 {
		t.Fatalf("registry says %d nodes, want 2", sharedOf(ga).nodes())
	}
	rate := Admission{KeyID: "key_r", Model: "m", Limits: Limits{RPM: 600}}
	worst := price.Cost(1000, 1000) // $0.003
	budget := Admission{KeyID: "key_b", Model: "m", Limits: Limits{Monthly: 1_000_000}, Worst: worst}
	admit := func(g *Gate, a *Admission) Refusal {
		var tk Ticket
		timed(t, "Admit", bound, func() { g.Admit(ctx, a, clock.Now(), &tk) })
		if tk.Refusal == Admitted {
			g.Settle(&tk, usd.Tokens{Prompt: 1000, Completion: 1000}, price, clock.Now())
		}
		return tk.Refusal
	}
	// Before: a rate slice, given back when idle; a budget lease of the
	// request and a fiftieth of $1, kept.
	if r := admit(ga, &rate); r != Admitted {
		t.Fatalf("refused %d", r)
	}
	clock.Add(time.Second)
	if err := ga.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if r := admit(ga, &budget); r != Admitted {
		t.Fatalf("refused %d", r)
	}

	srv.Stop()
	// Budget: the lease has $0.02 left, room for 6 more worst cases.
	var got []Refusal
	for range 8 {
		got = append(got, admit(ga, &budget))
	}
	want := []Refusal{0, 0, 0, 0, 0, 0, RefusedUnavailable, RefusedUnavailable}
	if !slices.Equal(got, want) {
		t.Fatalf("budget refusals while down %v, want %v", got, want)
	}
	fresh := Admission{KeyID: "key_c", Limits: Limits{Monthly: 1_000_000}, Worst: worst}
	if r := admit(ga, &fresh); r != RefusedUnavailable {
		t.Fatalf("a key with no lease: refusal %d, want %d", r, RefusedUnavailable)
	}
	// Rate: half of 600 a minute on each of the two nodes.
	for _, g := range []*Gate{ga, gb} {
		admitted := 0
		for range 400 {
			if admit(g, &rate) == Admitted {
				admitted++
			}
		}
		if admitted != 300 {
			t.Fatalf("admitted %d of 600 rpm on one of 2 nodes while down, want 300", admitted)
		}
	}
	timed(t, "Flush", bound, func() {
		if err := ga.Flush(ctx); err == nil {
			t.Error("Flush succeeded with Valkey down")
		}
	})
	timed(t, "Usage", bound, func() {
		if _, err := ga.Usage(ctx, "key_b", clock.Now()); err == nil {
			t.Error("Usage succeeded with Valkey down")
		}
	})

	srv.Restart(t)
	clock.Add(time.Second) // past the backoff
	if r := admit(ga, &budget); r != Admitted {
		t.Fatalf("after Restart: refusal %d", r)
	}
	if err := ga.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	u, err := gb.Usage(ctx, "key_b", clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if u.Usage.Spent != 8*worst || u.Usage.Requests != 8 {
		t.Fatalf("after Restart Valkey has %d requests, %s; want 8 worst cases", u.Usage.Requests, u.Usage.Spent)
	}
	var tk Ticket
	if gb.Admit(ctx, &rate, clock.Now(), &tk); tk.Refusal != Admitted || tk.Requests.Limit != 600 {
		t.Fatalf("after Restart: refusal %d, %+v; want global again", tk.Refusal, tk.Requests)
	}
}

// TestSharedValkeyHung: a server that accepts connections and never answers
// costs one request the timeout (it returns, rather than hang), and the
// others during the backoff no Valkey call at all.
func TestSharedValkeyHung(t *testing.T) {
	srv := valkeytest.Start(t)
	c := &countingClient{Client: valkeyClient(t, srv)}
	clock := newSimClock(nov)
	const timeout = 200 * time.Millisecond
	g := sharedGate(t, c, "hung", "a", clock, ValkeyOptions{Timeout: timeout, Nodes: 2})
	ctx := context.Background()
	a := Admission{KeyID: "key_h", Model: "m", Limits: Limits{RPM: 600, Monthly: 1_000_000}, Worst: price.Cost(1000, 1000)}
	srv.Pause(t)
	defer srv.Resume(t)
	var tk Ticket
	timed(t, "the first Admit", timeout+10*time.Second, func() { g.Admit(ctx, &a, clock.Now(), &tk) })
	if tk.Refusal != RefusedUnavailable {
		t.Fatalf("refusal %d, want %d: no budget was leased", tk.Refusal, RefusedUnavailable)
	}
	a.Limits.Monthly = 0
	before := c.calls.Load()
	for range 100 {
		g.Admit(ctx, &a, clock.Now(), &tk)
	}
	if n := c.calls.Load() - before; n != 0 {
		t.Fatalf("100 Admits during the backoff made %d Valkey calls, want none", n)
	}
	if tk.Refusal != Admitted || tk.Requests.Limit != 300 {
		t.Fatalf("refusal %d, %+v; want admitted against half the limit", tk.Refusal, tk.Requests)
	}
}

// countingClient counts the commands sent through it (scripts included:
// valkey.Lua sends through Do and DoMulti).
type countingClient struct {
	valkey.Client
	calls atomic.Int64
}

func (c *countingClient) Do(ctx context.Context, cmd valkey.Completed) valkey.ValkeyResult {
	c.calls.Add(1)
	return c.Client.Do(ctx, cmd)
}

func (c *countingClient) DoMulti(ctx context.Context, cmds ...valkey.Completed) []valkey.ValkeyResult {
	c.calls.Add(int64(len(cmds)))
	return c.Client.DoMulti(ctx, cmds...)
}

// TestBudgetScript holds the budget script to its contract one call at a
// time, with amounts beyond the 2^53 pico-dollars a Lua number holds exactly.
func TestBudgetScript(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	g := sharedGate(t, c, "script", "a", nil, ValkeyOptions{})
	other := sharedGate(t, c, "script", "b", nil, ValkeyOptions{})
	const key = "{script:k}:spend:202611"
	ctx := context.Background()
	call := func(g *Gate, op budgetOp) budgetReply {
		t.Helper()
		op.key = key
		r, err := op.exec(ctx, sharedOf(g))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	capUSD := usd.Micro(50_000_000_000).Pico() // $50,000
	odd := usd.Pico(12_345_678_901_234_567)    // $12,345.678901234567
	r := call(g, budgetOp{need: odd, extra: capUSD / 50, cap: capUSD})
	if want := odd + capUSD/50; r.granted != want || r.lease != want || r.leased != want {
		t.Fatalf("far from the cap: %+v, want the need and a whole fiftieth", r)
	}
	// A record is applied once however often it is sent, and turns lease
	// into spend.
	rec := &MonthUsage{Counts: Counts{Requests: 1, PromptTokens: 7, Spent: odd}, Models: map[string]*Counts{"gpt:4o": {Requests: 1, PromptTokens: 7, Spent: odd}}}
	for range 2 {
		r = call(g, budgetOp{seq: 42, rec: rec})
		if r.spent != odd || r.lease != capUSD/50 {
			t.Fatalf("after the record: %+v", r)
		}
	}
	u, err := sharedOf(g).ledger.Load(ctx, "k", 202611)
	if err != nil {
		t.Fatal(err)
	}
	if u.Spent != odd || u.Requests != 1 || u.Models["gpt:4o"].Spent != odd || u.Models["gpt:4o"].PromptTokens != 7 {
		t.Fatalf("ledger %+v, model %+v", u.Counts, u.Models["gpt:4o"])
	}
	// Near the cap the extra shrinks to an eighth of what would be left.
	left := capUSD - odd - capUSD/50
	need := left - 800
	r = call(other, budgetOp{need: need, extra: capUSD / 50, cap: capUSD})
	if r.granted != need+100 {
		t.Fatalf("near the cap granted %s, want the need and %s", r.granted, usd.Pico(100))
	}
	// Past what is left: refused, and the spare goes back.
	r = call(other, budgetOp{need: 701, extra: 1, cap: capUSD, spare: 50})
	if r.granted != 0 || r.lease != need+50 || r.spent+r.leased != capUSD-750 {
		t.Fatalf("refused: %+v", r)
	}
	// A silent node's lease is reclaimed once it has expired.
	srv.Do(t, "HSET", key, "exp:b", "1")
	r = call(g, budgetOp{need: 1000, cap: capUSD})
	if r.granted != 1000 || hget(t, c, key, "lease:b") != "" {
		t.Fatalf("reclaim: %+v, lease:b %q", r, hget(t, c, key, "lease:b"))
	}
	// Everything back.
	r = call(g, budgetOp{all: true})
	if r.lease != 0 || r.leased != 0 || r.spent != odd || hget(t, c, key, "leased") != "" {
		t.Fatalf("all back: %+v", r)
	}
}

// TestSharedMonthRollover: a new month starts a new budget; the old month's
// usage is recorded under it and its lease given back.
func TestSharedMonthRollover(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	end := time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC)
	clock := newSimClock(end)
	g := sharedGate(t, c, "roll", "a", clock, ValkeyOptions{})
	ctx := context.Background()
	a := Admission{KeyID: "k", Model: "m", Limits: Limits{Monthly: 5_000}, Worst: price.Cost(1000, 1000)} // $0.005, worst $0.003
	var tk Ticket
	for _, want := range []Refusal{Admitted, RefusedMonthlyCap} {
		if g.Admit(ctx, &a, clock.Now(), &tk); tk.Refusal != want {
			t.Fatalf("November: refusal %d, want %d", tk.Refusal, want)
		}
		g.Settle(&tk, usd.Tokens{Prompt: 1000, Completion: 1000}, price, clock.Now())
	}
	dec := clock.Add(2 * time.Second)
	if g.Admit(ctx, &a, dec, &tk); tk.Refusal != Admitted || tk.Month != 202612 {
		t.Fatalf("December: refusal %d, month %d", tk.Refusal, tk.Month)
	}
	g.Settle(&tk, usd.Tokens{Prompt: 2, Completion: 2}, price, dec)
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at     time.Time
		prompt int64
	}{{end, 1000}, {dec, 2}} {
		r, err := g.Usage(ctx, "k", c.at)
		if err != nil {
			t.Fatal(err)
		}
		if r.Usage.PromptTokens != c.prompt || r.Usage.Requests != 1 {
			t.Fatalf("month %d: %+v", r.Month, r.Usage.Counts)
		}
	}
	nov := "{roll:k}:spend:202611"
	if lease, leased := hget(t, c, nov, "lease:a"), hget(t, c, nov, "leased"); lease != "" || leased != "" {
		t.Fatalf("November's lease not given back: lease %q, leased %q", lease, leased)
	}
	if n := len(g.state("k").sh.ended); n != 0 {
		t.Fatalf("%d ended months still held", n)
	}
}

// TestSharedTokensAcrossNodes: two nodes share 60,000 tokens a minute.
// Requests are charged an estimate of 1,000 and settle at what they used,
// less or more: the real tokens over a minute from a full bucket stay within
// 5% under the limit and a burst, above it only by the debts of the last
// requests, which the next lease charges.
func TestSharedTokensAcrossNodes(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	clock := newSimClock(nov)
	gates := []*Gate{
		sharedGate(t, c, "tokens", "a", clock, ValkeyOptions{}),
		sharedGate(t, c, "tokens", "b", clock, ValkeyOptions{}),
	}
	const tpm = 60_000
	a := Admission{KeyID: "key_tok", Model: "m", Limits: Limits{TPM: tpm}, Tokens: 1000}
	used := []int64{400, 1500} // 950 on average
	var real int64
	i := 0
	for range int(time.Minute / (10 * time.Millisecond)) {
		now := clock.Now()
		for _, g := range gates {
			var tk Ticket
			if g.Admit(context.Background(), &a, now, &tk); tk.Refusal == Admitted {
				u := used[i%2]
				i++
				g.Settle(&tk, usd.Tokens{Prompt: u / 2, Completion: u - u/2}, price, now)
				real += u
			} else if tk.Refusal != RefusedTokens {
				t.Fatalf("refusal %d", tk.Refusal)
			}
		}
		clock.Add(10 * time.Millisecond)
	}
	t.Logf("%d requests used %d tokens in a minute", i, real)
	if real > 2*tpm+2*500 || real < 2*tpm*95/100 {
		t.Fatalf("used %d tokens, want within 5%% of %d", real, 2*tpm)
	}
}

// TestValkeyLedger: Load reads what Add added, exactly, per key and month.
func TestValkeyLedger(t *testing.T) {
	srv := valkeytest.Start(t)
	l, err := NewValkeyLedger(valkeyClient(t, srv), "ledger", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	big := usd.Pico(1<<53 + 1) // not a float64
	d := &MonthUsage{KeyID: "k", Month: 202611, Counts: Counts{Requests: 2, PromptTokens: 10, CompletionTokens: 20, Spent: big},
		Models: map[string]*Counts{"a": {Requests: 2, PromptTokens: 10, CompletionTokens: 20, Spent: big}, "idle": {}}}
	if err := l.Add(ctx, []*MonthUsage{d, d, {KeyID: "k", Month: 202612, Counts: Counts{Requests: 1}}}); err != nil {
		t.Fatal(err)
	}
	u, err := l.Load(ctx, "k", 202611)
	if err != nil {
		t.Fatal(err)
	}
	want := Counts{Requests: 4, PromptTokens: 20, CompletionTokens: 40, Spent: 2 * big}
	if u.Counts != want || len(u.Models) != 1 || *u.Models["a"] != want {
		t.Fatalf("loaded %+v, models %v", u.Counts, u.Models)
	}
	if u, _ := l.Load(ctx, "k", 202612); u.Requests != 1 {
		t.Fatalf("December: %+v", u.Counts)
	}
	if u, _ := l.Load(ctx, "none", 202611); !u.Counts.zero() || u.KeyID != "none" {
		t.Fatalf("a key without usage: %+v", u)
	}
}

// TestSharedGateCluster: on a cluster node, which refuses scripts that reach
// beyond one slot, budgets, rates, flushes and the registry all work.
func TestSharedGateCluster(t *testing.T) {
	srv := valkeytest.StartCluster(t)
	c := valkeyClient(t, srv)
	if c.Mode() != valkey.ClientModeCluster {
		t.Fatalf("client mode %s", c.Mode())
	}
	g := sharedGate(t, c, "cluster", "a", nil, ValkeyOptions{})
	ctx := context.Background()
	sharedOf(g).heartbeat(ctx, true)
	if sharedOf(g).live.Load() != 1 {
		t.Fatalf("registry: %d live", sharedOf(g).live.Load())
	}
	a := Admission{KeyID: "k", Model: "m", Limits: Limits{RPM: 10, TPM: 10_000, Monthly: 1_000_000}, Tokens: 100, Worst: price.Cost(50, 50)}
	var tk Ticket
	if g.Admit(ctx, &a, time.Now(), &tk); tk.Refusal != Admitted {
		t.Fatalf("refusal %d", tk.Refusal)
	}
	g.Settle(&tk, usd.Tokens{Prompt: 50, Completion: 50}, price, time.Now())
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := g.Usage(ctx, "k", time.Now())
	if err != nil || r.Usage.Spent != price.Cost(50, 50) {
		t.Fatalf("usage %+v, %v", r, err)
	}
}

// TestSharedRunGivesEverythingBack: when Run ends, the node records its
// usage, gives back its slices and leases and leaves the registry.
func TestSharedRunGivesEverythingBack(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	g := sharedGate(t, c, "run", "a", nil, ValkeyOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		g.Run(ctx, time.Second)
		close(done)
	}()
	a := Admission{KeyID: "k", Model: "m", Limits: Limits{RPM: 600, Monthly: 1_000_000}, Worst: price.Cost(1000, 1000)}
	now := time.Now()
	var tk Ticket
	if g.Admit(context.Background(), &a, now, &tk); tk.Refusal != Admitted {
		t.Fatalf("refusal %d", tk.Refusal)
	}
	g.Settle(&tk, usd.Tokens{Prompt: 1, Completion: 1}, price, now)
	eventually.True(t, "the first heartbeat", func() bool { return sharedOf(g).live.Load() == 1 })
	cancel()
	<-done
	spend := "{run:k}:spend:" + strconv.Itoa(int(MonthOf(now)))
	if got := hget(t, c, spend, "spent"); got != strconv.FormatInt(int64(price.Cost(1, 1)), 10) {
		t.Fatalf("spent %q", got)
	}
	if v := hget(t, c, spend, "leased"); v != "" {
		t.Fatalf("leased %q after Run ended", v)
	}
	if v := hget(t, c, "{run:k}:rate", "req"); v != "" {
		if n, _ := strconv.ParseInt(v, 10, 64); n > now.UnixNano()+interval(600) {
			t.Fatalf("the slice was not given back: the bucket is %v from full", time.Duration(n-now.UnixNano()))
		}
	}
	if n := srv.Do(t, "ZCARD", "{run}:limits:nodes"); n != "0" {
		t.Fatalf("%s nodes registered after Run ended", n)
	}
}

// benchLimits are never reached in a benchmark: $1M a month at most.
var benchLimits = Limits{RPM: 1_000_000_000, TPM: 1_000_000_000, MaxRequest: 1_000_000_000, Monthly: 1_000_000_000_000}

// BenchmarkAdmitSettleShared is Admit and Settle on a shared Gate with
// slices and a lease in hand, the common case.
func BenchmarkAdmitSettleShared(b *testing.B) {
	srv := valkeytest.Start(b)
	g := sharedGate(b, valkeyClient(b, srv), "bench", "a", nil, ValkeyOptions{})
	a := Admission{KeyID: "key_bench", Model: "m", Limits: benchLimits, Tokens: 300, Worst: price.Cost(100, 200)}
	now := nov
	b.ReportAllocs()
	for b.Loop() {
		var tk Ticket
		g.Admit(context.Background(), &a, now, &tk)
		g.Settle(&tk, usd.Tokens{Prompt: 100, Completion: 200}, price, now)
	}
}

// BenchmarkAdmitSettleSharedParallel is the same from every CPU at once, on
// one key (the worst case: one lock) and on a key per goroutine.
func BenchmarkAdmitSettleSharedParallel(b *testing.B) {
	srv := valkeytest.Start(b)
	g := sharedGate(b, valkeyClient(b, srv), "bench", "a", nil, ValkeyOptions{})
	for _, perGoroutine := range []bool{false, true} {
		name := "OneKey"
		if perGoroutine {
			name = "KeyPerGoroutine"
		}
		b.Run(name, func(b *testing.B) {
			var n atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				a := Admission{KeyID: "key_bench", Model: "m", Limits: benchLimits, Tokens: 300, Worst: price.Cost(100, 200)}
				if perGoroutine {
					a.KeyID = "key_bench_" + strconv.FormatInt(n.Add(1), 10)
				}
				now := nov
				for pb.Next() {
					var tk Ticket
					g.Admit(context.Background(), &a, now, &tk)
					g.Settle(&tk, usd.Tokens{Prompt: 100, Completion: 200}, price, now)
				}
			})
		})
	}
}

// TestSharedBudgetStress: two nodes, each with eight clients and a flusher,
// spend a $1 budget on requests that cost up to their worst case: the cap
// holds, and the spend ends within a worst case of it.
func TestSharedBudgetStress(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	o := ValkeyOptions{IdleReturn: 5 * time.Millisecond}
	gates := []*Gate{sharedGate(t, c, "stress", "a", nil, o), sharedGate(t, c, "stress", "b", nil, o)}
	a := Admission{KeyID: "k", Model: "m", Limits: Limits{Monthly: 1_000_000, RPM: 1_000_000}, Worst: price.Cost(2000, 4000)} // $1; $0.01
	ctx, cancel := context.WithCancel(context.Background())
	var flushers, clients sync.WaitGroup
	for _, g := range gates {
		flushers.Go(func() {
			for ctx.Err() == nil {
				_ = g.Flush(ctx)
				time.Sleep(time.Millisecond)
			}
		})
		for i := range 8 {
			clients.Go(func() {
				refusals := 0
				for n := int64(i); refusals < 20; n++ {
					var tk Ticket
					g.Admit(context.Background(), &a, time.Now(), &tk)
					switch tk.Refusal {
					case Admitted:
						refusals = 0
						g.Settle(&tk, usd.Tokens{Prompt: 2000, Completion: n * 397 % 4001}, price, time.Now())
					case RefusedMonthlyCap:
						refusals++
						time.Sleep(5 * time.Millisecond)
					default:
						t.Errorf("refusal %d", tk.Refusal)
						return
					}
				}
			})
		}
	}
	clients.Wait()
	cancel()
	flushers.Wait()
	for _, g := range gates {
		if err := sharedOf(g).sync(context.Background(), true, true); err != nil {
			t.Fatal(err)
		}
	}
	r, err := gates[0].Usage(context.Background(), "k", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	capUSD := usd.Micro(1_000_000).Pico()
	t.Logf("%d requests spent %s of %s", r.Usage.Requests, r.Usage.Spent, capUSD)
	if r.Usage.Spent > capUSD || r.Usage.Spent < capUSD-a.Worst {
		t.Fatalf("spent %s, want within a worst case (%s) under the cap", r.Usage.Spent, a.Worst)
	}
	spend := "{stress:k}:spend:" + strconv.Itoa(int(MonthOf(time.Now())))
	if v := hget(t, c, spend, "leased"); v != "" {
		t.Fatalf("leased %s after every lease was given back", v)
	}
}
