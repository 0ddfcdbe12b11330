package limits

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/limits/journal"
)

// Limits is what one key may use; zero fields mean "no limit".
type Limits struct {
	RPM        int64
	TPM        int64
	MaxRequest usd.Micro
	Monthly    usd.Micro
}

// Refusal says why a request was not admitted.
type Refusal uint8

// Refusals, each answered differently: 429 for rates, 402 for money, 503 when
// the month's spend cannot be read (on a Gate made by NewValkeyGate: when
// Valkey is unreachable and the budget this node leased does not cover the
// request).
const (
	Admitted Refusal = iota
	RefusedRequests
	RefusedTokens
	RefusedRequestCap
	RefusedMonthlyCap
	RefusedUnavailable
)

// Admission describes a request about to be forwarded.
type Admission struct {
	KeyID  string
	Model  string
	Limits Limits
	// Tokens is the estimate charged to the tokens-per-minute bucket now:
	// the prompt estimate plus the most output the request allows.
	Tokens int64
	// Worst is the most the request can cost; it is checked against the
	// per-request cap and, unless Reserve is set, reserved against the
	// monthly one.
	Worst usd.Pico
	// Reserve, when set, is reserved against the monthly cap instead of
	// Worst: a part of it, for a request that will Extend its reservation as
	// it goes (a stream), so an open-ended stream does not hold the model's
	// whole output of the budget.
	Reserve usd.Pico
}

// reserve is what admission reserves against the monthly cap.
func (a *Admission) reserve() usd.Pico {
	if a.Reserve > 0 {
		return a.Reserve
	}
	return a.Worst
}

// Ticket is the outcome of Admit, and for an admitted request its claim, to be
// settled exactly once. It is a plain value so it can live on the stack.
type Ticket struct {
	Refusal    Refusal
	RetryAfter time.Duration
	// Requests and Tokens describe the buckets after admission, for the
	// x-ratelimit-* headers; Limit is 0 for a bucket without a limit.
	Requests RateState
	Tokens   RateState
	// Spent and Cap are the month's spend (with what is reserved, or on a
	// shared Gate leased, against it) and cap, set when the monthly cap
	// refused, for the message; Month is the month admitted in.
	Spent, Cap usd.Pico
	Month      Month

	state    *keyState
	limits   Limits
	model    string
	tokens   int64
	reserved usd.Pico
	// stream names the request's Progress records in the journal; 0 until
	// its first. pin keeps the latest of them in the journal until Settle.
	stream uint64
	pin    journal.Pin
	// The tokens were charged to the node's slice of the global bucket
	// (tokSlice), or else to the local bucket of tokLimit per minute.
	tokSlice bool
	tokLimit int64
}

// keyState is everything one node knows about one key.
type keyState struct {
	// mu guards every field below but sh, and is never held across a
	// Valkey call.
	mu       sync.Mutex
	req, tok Rate
	month    Month
	// spent is the month's spend as far as this node knows, when loaded
	// (only a key with a monthly cap needs it): the ledger's when loaded,
	// plus what this node settled and had not flushed then, plus what it
	// settled since. Before the load it means nothing.
	spent    usd.Pico
	loaded   bool
	reserved usd.Pico
	// pending is settled here and not yet added to the ledger.
	pending MonthUsage

	// sh is the key's shared state, in a Gate made by NewValkeyGate (nil
	// otherwise); set when the keyState is made and never replaced, its
	// fields say what guards them. req and tok are then the buckets of
	// this node's share, for outages.
	sh *sharedKey
}

// startMonth makes month s's month with nothing spent, reserved or pending
// yet, with s.mu held. What the old month left is the strategy's to keep
// (see strategy.endMonth).
func (s *keyState) startMonth(month Month) {
	s.month, s.spent, s.loaded, s.reserved = month, 0, false, 0
	s.pending.reset()
	s.pending.Month = month
}

// strategy is how a Gate keeps its limits: on this node alone (oneNode) or
// across every node sharing a Valkey (shared). Gate holds what both need
// (the keys' states, the journal, Settle); a strategy holds the rest and
// takes its own locks.
type strategy interface {
	// newKey fills in what the strategy keeps for a key new to the node.
	newKey(s *keyState)
	// endMonth keeps what s's month leaves before s moves on to month,
	// with s.mu held; it leaves s itself as it is.
	endMonth(s *keyState, month Month)
	// admit and extend are Gate.Admit and Gate.Extend after the checks
	// that need no state. Gate calls them through admitVia and extendVia,
	// not through this interface (see there).
	admit(ctx context.Context, s *keyState, a *Admission, now time.Time, t *Ticket)
	extend(ctx context.Context, s *keyState, t *Ticket, more usd.Pico, now time.Time) bool
	// flush is Gate.Flush without the journal's part; unapplied is the seq
	// of the oldest journal record the ledger may not hold, given next,
	// the journal's next seq when the flush began.
	flush(ctx context.Context) error
	unapplied(next int64) int64
	// run is Gate.Run; flush is Gate.Flush.
	run(ctx context.Context, interval time.Duration, flush func(context.Context) error)
	usage(ctx context.Context, keyID string, month Month) (*Report, error)
	// applyJournal adds the settles the ledger does not hold yet to it.
	applyJournal(ctx context.Context, settles []journal.Record) (int, error)
	useJournal(j *journal.Journal)
}

// Gate admits requests against their key's rate limits and budgets and
// records what they used. One Gate serves a node; its state is per key and
// locked per key, so keys never contend with each other. NewGate makes one
// whose limits are this node's alone; NewValkeyGate one whose limits hold
// across every node sharing a Valkey.
type Gate struct {
	log *slog.Logger
	// keys maps a key id to its *keyState; an entry is never removed or
	// replaced, so a *keyState once loaded stays the key's.
	keys sync.Map
	// strategy is set by the constructor and never changed.
	strategy strategy

	// journal, when set, gets every settled request before Settle returns
	// (see UseJournal); nil without one. Set before serving, read-only
	// after.
	journal      *journal.Journal
	journalError atomic.Bool // an append failed and was logged
}

// NewGate returns a Gate recording into ledger.
func NewGate(ledger Ledger, log *slog.Logger) *Gate {
	if log == nil {
		log = slog.Default()
	}
	g := &Gate{log: log}
	g.strategy = &oneNode{ledger: ledger, keys: &g.keys, log: log}
	return g
}

func (g *Gate) state(keyID string) *keyState {
	if s, ok := g.keys.Load(keyID); ok {
		return s.(*keyState)
	}
	s := &keyState{pending: MonthUsage{KeyID: keyID}}
	g.strategy.newKey(s)
	v, _ := g.keys.LoadOrStore(keyID, s)
	return v.(*keyState)
}

// Admit decides on a request and fills t. Budgets are checked before rates
// are spent, so a request refused for money uses none of the key's rate.
// With the key's state cached it does not allocate.
func (g *Gate) Admit(ctx context.Context, a *Admission, now time.Time, t *Ticket) {
	*t = Ticket{limits: a.Limits, model: a.Model, tokens: a.Tokens, Month: MonthOf(now)}
	l := &a.Limits
	if l.MaxRequest > 0 && a.Worst > l.MaxRequest.Pico() {
		t.Refusal, t.Spent, t.Cap = RefusedRequestCap, a.Worst, l.MaxRequest.Pico()
		return
	}
	g.admitVia(ctx, g.state(a.KeyID), a, now, t)
}

// admitVia calls the strategy's admit by its concrete type: called through
// the interface, the compiler cannot see that t does not outlive the call
// and moves every caller's Ticket to the heap, an allocation per request
// (TestAllocsAdmitSettleShared measures it).
func (g *Gate) admitVia(ctx context.Context, s *keyState, a *Admission, now time.Time, t *Ticket) {
	switch st := g.strategy.(type) {
	case *oneNode:
		st.admit(ctx, s, a, now, t)
	case *shared:
		st.admit(ctx, s, a, now, t)
	}
}

func rateStates(s *keyState, t *Ticket, now int64) {
	if t.limits.RPM > 0 {
		t.Requests = s.req.State(t.limits.RPM, now)
	}
	if t.limits.TPM > 0 {
		t.Tokens = s.tok.State(t.limits.TPM, now)
	}
}

// Capped reports whether the request's key has a monthly cap, the only
// budget Extend holds a running cost against.
func (t *Ticket) Capped() bool { return t.limits.Monthly > 0 }

// Reserved is what an admitted request holds of the monthly budget: what
// Admit reserved, plus what Extend added.
func (t *Ticket) Reserved() usd.Pico { return t.reserved }

// Extend reserves more of the monthly budget for an admitted request whose
// running cost outgrew its reservation, as a stream does while it produces.
// It reports false when the cap has no room for more (on a Gate made by
// NewValkeyGate: nor does any lease this node can get, or Valkey is
// unreachable and the held lease falls short); the request should then stop
// producing and settle what it used. Rates are not charged again. Without a
// monthly cap it always succeeds.
func (g *Gate) Extend(ctx context.Context, t *Ticket, more usd.Pico, now time.Time) bool {
	s := t.state
	if s == nil || more <= 0 {
		return s != nil
	}
	if t.limits.Monthly <= 0 {
		return true // no cap to hold against
	}
	return g.extendVia(ctx, s, t, more, now)
}

// extendVia calls the strategy's extend by its concrete type, for the
// reason admitVia does.
func (g *Gate) extendVia(ctx context.Context, s *keyState, t *Ticket, more usd.Pico, now time.Time) bool {
	switch st := g.strategy.(type) {
	case *oneNode:
		return st.extend(ctx, s, t, more, now)
	case *shared:
		return st.extend(ctx, s, t, more, now)
	}
	return false
}

// rollover starts month in s unless it is s's month already, with s.mu
// held: st keeps what the old month left, and s starts again.
func rollover(st strategy, s *keyState, month Month) {
	if s.month == month {
		return
	}
	st.endMonth(s, month)
	s.startMonth(month)
}

// Settle records what an admitted request used, at the model's price
// (usd.Price.Bill: cached prompt tokens at the cached price, cache writes at
// the cache-write price, both clamped to the prompt), and releases its reservation: the tokens bucket is corrected from
// the estimate to the real count. It returns the cost billed. Settling a
// refused or already settled ticket does nothing (and returns 0).
func (g *Gate) Settle(t *Ticket, used usd.Tokens, price usd.Price, now time.Time) usd.Pico {
	s := t.state
	if s == nil {
		return 0
	}
	t.state = nil
	used, _ = used.Clamped()
	prompt, completion := used.Prompt, used.Completion
	cost := price.Bill(used)
	s.mu.Lock()
	defer s.mu.Unlock()
	month := MonthOf(now)
	rollover(g.strategy, s, month)
	if t.Month == s.month {
		s.reserved -= t.reserved
	}
	switch {
	case t.tokSlice:
		s.sh.tok.n += t.tokens - prompt - completion
	case t.tokLimit > 0:
		s.tok.Adjust(t.tokLimit, prompt+completion-t.tokens, now.UnixNano())
	}
	s.spent += cost
	if g.journal != nil {
		// Under s.mu, so that a key's records reach the journal in the
		// order they reach pending: pending.Seq then covers every record
		// of the key at or below it.
		g.appendJournal(journal.Settle, s.pending.KeyID, t, month, used, cost, &s.pending.Seq)
		if s.pending.first == 0 {
			s.pending.first = s.pending.Seq
		}
		// The Settle supersedes the stream's Progress. Unpinned even when
		// its append failed (logged): a pin no one drops would hold back
		// the journal's recycling for good.
		g.journal.Unpin(&t.pin)
	}
	c := Counts{Requests: 1, PromptTokens: prompt, CachedTokens: used.Cached, CacheWriteTokens: used.CacheWrite,
		CompletionTokens: completion, Spent: cost}
	s.pending.Counts.add(&c)
	m := s.pending.Models[t.model]
	if m == nil {
		if s.pending.Models == nil {
			s.pending.Models = make(map[string]*Counts)
		}
		m = &Counts{}
		s.pending.Models[t.model] = m
	}
	m.add(&c)
	return cost
}

// Flush adds everything settled on this node since the last flush to the
// ledger. What the ledger refuses stays pending for the next flush, so spend
// is never lost and never counted twice. On a Gate made by NewValkeyGate it
// also gives back the slices and leases idle for IdleReturn and renews the
// leases in use; a record Valkey may not have applied is sent again with
// its sequence number, which Valkey applies once.
func (g *Gate) Flush(ctx context.Context) error {
	// Every journal record below next is in what this flush takes: a key's
	// record is appended under its lock, which the flush takes after this.
	var next int64
	if g.journal != nil {
		next = g.journal.Next()
	}
	if err := g.strategy.flush(ctx); err != nil {
		return err
	}
	return g.releaseJournal(g.strategy.unapplied(next))
}

// Run flushes every interval until ctx ends, then once more with a short
// deadline of its own, so a clean shutdown loses nothing. On a Gate made by
// NewValkeyGate it also gives back idle slices and leases every IdleReturn/2
// (when shorter than interval), heartbeats into the node registry every
// second, and when ctx ends gives back every slice and lease and leaves the
// registry.
func (g *Gate) Run(ctx context.Context, interval time.Duration) {
	g.strategy.run(ctx, interval, g.Flush)
}

// Report is a key's month to date.
type Report struct {
	Month    Month
	Usage    *MonthUsage
	Reserved usd.Pico
}

// Usage reports a key's month to date: the ledger's records plus what this
// node has not flushed yet, and what is reserved by requests in flight here.
// On a Gate made by NewValkeyGate the ledger is Valkey, which holds every
// node's flushed usage.
func (g *Gate) Usage(ctx context.Context, keyID string, now time.Time) (*Report, error) {
	r, err := g.strategy.usage(ctx, keyID, MonthOf(now))
	if err != nil {
		return nil, fmt.Errorf("limits: usage of %s: %w", keyID, err)
	}
	return r, nil
}
