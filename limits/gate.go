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
	// sh is the key's shared state, in a Gate made by NewValkeyGate; req
	// and tok are then the buckets of this node's share, for outages.
	sh *sharedKey
}

// Gate admits requests against their key's rate limits and budgets and
// records what they used. One Gate serves a node; its state is per key and
// locked per key, so keys never contend with each other. NewGate makes one
// whose limits are this node's alone; NewValkeyGate one whose limits hold
// across every node sharing a Valkey.
type Gate struct {
	ledger Ledger
	log    *slog.Logger
	keys   sync.Map // key id → *keyState

	mu     sync.Mutex
	outbox []*MonthUsage // pending records of months that have ended, or of a failed flush

	// flushMu is held by Flush while usage moves from pending to the
	// ledger, and shared by readers that add pending usage to the ledger's,
	// so they see it in exactly one of the two. Taken before any key's mu.
	flushMu sync.RWMutex

	sh *shared // nil on one node

	// journal, when set, gets every settled request before Settle returns
	// (see UseJournal); nil without one.
	journal      *journal.Journal
	journalError atomic.Bool // an append failed and was logged
}

// NewGate returns a Gate recording into ledger.
func NewGate(ledger Ledger, log *slog.Logger) *Gate {
	if log == nil {
		log = slog.Default()
	}
	return &Gate{ledger: ledger, log: log}
}

func (g *Gate) state(keyID string) *keyState {
	if s, ok := g.keys.Load(keyID); ok {
		return s.(*keyState)
	}
	s := &keyState{pending: MonthUsage{KeyID: keyID}}
	if g.sh != nil {
		s.sh = &sharedKey{acct: &account{}}
	}
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
	s := g.state(a.KeyID)
	s.mu.Lock()
	g.rollover(s, t.Month)
	if g.sh != nil {
		g.admitShared(ctx, s, a, now.UnixNano(), t)
		return
	}
	defer s.mu.Unlock()
	if l.Monthly > 0 {
		if !s.loaded {
			if err := g.loadSpent(ctx, s, a.KeyID, t.Month); err != nil {
				g.log.Error("limits: month-to-date spend unavailable", "key_id", a.KeyID, "err", err)
				t.Refusal = RefusedUnavailable
				return
			}
		}
		if s.spent+s.reserved+a.reserve() > l.Monthly.Pico() {
			t.Refusal, t.Spent, t.Cap = RefusedMonthlyCap, s.spent+s.reserved, l.Monthly.Pico()
			return
		}
	}
	ns := now.UnixNano()
	if l.RPM > 0 {
		if ok, wait := s.req.Take(l.RPM, 1, ns); !ok {
			t.Refusal, t.RetryAfter = RefusedRequests, wait
			g.rateStates(s, t, ns)
			return
		}
	}
	if l.TPM > 0 {
		if ok, wait := s.tok.Take(l.TPM, a.Tokens, ns); !ok {
			if l.RPM > 0 {
				s.req.Adjust(l.RPM, -1, ns)
			}
			t.Refusal, t.RetryAfter = RefusedTokens, wait
			g.rateStates(s, t, ns)
			return
		}
		t.tokLimit = l.TPM
	}
	s.reserved += a.reserve()
	t.state, t.reserved = s, a.reserve()
	g.rateStates(s, t, ns)
}

// loadSpent sets s.spent to the month's spend: the ledger's, plus what this
// node settled and has not added to it yet (pending, or back in the outbox
// after a failed flush). It is called with s.mu held and returns with it
// held, released meanwhile. Settles before the load count in pending, not on
// top of the ledger: counting them in both is how spend was counted twice
// when a key gained a cap. flushMu keeps a flush from moving spend from
// pending into the ledger between the two reads.
func (g *Gate) loadSpent(ctx context.Context, s *keyState, keyID string, month Month) error {
	s.mu.Unlock()
	g.flushMu.RLock()
	defer g.flushMu.RUnlock()
	s.mu.Lock()
	g.rollover(s, month)
	if s.loaded {
		return nil // another request loaded it meanwhile
	}
	u, err := g.ledger.Load(ctx, keyID, month)
	if err != nil {
		return err
	}
	s.spent = u.Spent + s.pending.Spent
	g.mu.Lock()
	for _, o := range g.outbox {
		if o.KeyID == keyID && o.Month == month {
			s.spent += o.Spent
		}
	}
	g.mu.Unlock()
	s.loaded = true
	return nil
}

func (g *Gate) rateStates(s *keyState, t *Ticket, now int64) {
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
	s.mu.Lock()
	g.rollover(s, MonthOf(now))
	if s.month != t.Month || t.limits.Monthly <= 0 {
		// A new month began, which owes nothing to the old reservation; or
		// there is no cap to hold against.
		s.mu.Unlock()
		return true
	}
	if g.sh != nil {
		return g.extendShared(ctx, s, t, more, now.UnixNano())
	}
	defer s.mu.Unlock()
	if s.spent+s.reserved+more > t.limits.Monthly.Pico() {
		return false
	}
	s.reserved += more
	t.reserved += more
	return true
}

// Settle records what an admitted request used, at the model's price, and
// releases its reservation: the tokens bucket is corrected from the estimate
// to the real count. It returns the cost billed. Settling a refused or
// already settled ticket does nothing (and returns 0).
func (g *Gate) Settle(t *Ticket, prompt, completion int64, price usd.Price, now time.Time) usd.Pico {
	s := t.state
	if s == nil {
		return 0
	}
	t.state = nil
	cost := price.Cost(prompt, completion)
	s.mu.Lock()
	defer s.mu.Unlock()
	month := MonthOf(now)
	g.rollover(s, month)
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
		g.appendJournal(journal.Settle, s.pending.KeyID, t, month, prompt, completion, cost, &s.pending.Seq)
		if s.pending.first == 0 {
			s.pending.first = s.pending.Seq
		}
		// The Settle supersedes the stream's Progress. Unpinned even when
		// its append failed (logged): a pin no one drops would hold back
		// the journal's recycling for good.
		g.journal.Unpin(&t.pin)
	}
	c := Counts{Requests: 1, PromptTokens: prompt, CompletionTokens: completion, Spent: cost}
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

// rollover starts a new month in s: its pending usage goes to the outbox and
// its spend starts again. Called with s.mu held.
func (g *Gate) rollover(s *keyState, month Month) {
	if s.month == month {
		return
	}
	if s.sh != nil {
		if s.month != 0 {
			g.sh.endMonth(s)
		}
		s.sh.acct = &account{month: month}
	} else if s.month != 0 && !s.pending.Counts.zero() {
		g.mu.Lock()
		g.outbox = append(g.outbox, s.pending.clone())
		g.mu.Unlock()
	}
	s.month, s.spent, s.loaded, s.reserved = month, 0, false, 0
	s.pending.reset() // what was pending went to the outbox (or the ended account) above
	s.pending.Month = month
}

// Flush adds everything settled on this node since the last flush to the
// ledger. What the ledger refuses stays pending for the next flush, so spend
// is never lost and never counted twice. On a Gate made by NewValkeyGate it
// also gives back the slices and leases idle for IdleReturn and renews the
// leases in use; a record Valkey may not have applied is sent again with
// its sequence number, which Valkey applies once.
func (g *Gate) Flush(ctx context.Context) error {
	if g.sh != nil {
		var next int64
		if g.journal != nil {
			next = g.journal.Next()
		}
		if err := g.syncShared(ctx, true, false); err != nil {
			return err
		}
		return g.releaseJournal(g.unappliedShared(next))
	}
	g.flushMu.Lock()
	defer g.flushMu.Unlock()
	// Every journal record below next is in the outbox or a pending this
	// flush takes: a key's record is appended under its lock, which the
	// walk below takes after this.
	var next int64
	if g.journal != nil {
		next = g.journal.Next()
	}
	g.mu.Lock()
	batch := g.outbox
	g.outbox = nil
	g.mu.Unlock()
	g.keys.Range(func(_, v any) bool {
		s := v.(*keyState)
		s.mu.Lock()
		if !s.pending.Counts.zero() {
			batch = append(batch, s.pending.take())
		}
		s.mu.Unlock()
		return true
	})
	if len(batch) > 0 {
		if err := g.ledger.Add(ctx, batch); err != nil {
			g.mu.Lock()
			g.outbox = append(batch, g.outbox...)
			g.mu.Unlock()
			return fmt.Errorf("limits: flush %d usage records: %w", len(batch), err)
		}
	}
	return g.releaseJournal(next)
}

// Run flushes every interval until ctx ends, then once more with a short
// deadline of its own, so a clean shutdown loses nothing. On a Gate made by
// NewValkeyGate it also gives back idle slices and leases every IdleReturn/2
// (when shorter than interval), heartbeats into the node registry every
// second, and when ctx ends gives back every slice and lease and leaves the
// registry.
func (g *Gate) Run(ctx context.Context, interval time.Duration) {
	if g.sh != nil {
		g.runShared(ctx, interval)
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := g.Flush(fctx); err != nil {
				g.log.Error("limits: final flush failed; usage since the last flush is lost", "err", err)
			}
			cancel()
			return
		case <-t.C:
			if err := g.Flush(ctx); err != nil {
				g.log.Warn("limits: flush failed; will retry", "err", err)
			}
		}
	}
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
	month := MonthOf(now)
	if g.sh != nil {
		return g.usageShared(ctx, keyID, month)
	}
	g.flushMu.RLock()
	defer g.flushMu.RUnlock()
	u, err := g.ledger.Load(ctx, keyID, month)
	if err != nil {
		return nil, fmt.Errorf("limits: usage of %s: %w", keyID, err)
	}
	r := &Report{Month: month, Usage: u.clone()}
	r.Usage.KeyID, r.Usage.Month = keyID, month
	if v, ok := g.keys.Load(keyID); ok {
		s := v.(*keyState)
		s.mu.Lock()
		if s.month == month {
			r.Usage.add(&s.pending)
			r.Reserved = s.reserved
		}
		s.mu.Unlock()
	}
	g.mu.Lock()
	for _, o := range g.outbox {
		if o.KeyID == keyID && o.Month == month {
			r.Usage.add(o)
		}
	}
	g.mu.Unlock()
	return r, nil
}
