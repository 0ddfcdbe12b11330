package limits

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/limits/journal"
)

// oneNode is the strategy of a Gate made by NewGate: every limit is kept in
// this node's memory, and usage is added to its ledger by Flush.
type oneNode struct {
	ledger Ledger
	keys   *sync.Map // the Gate's, key id → *keyState
	log    *slog.Logger

	// flushMu is held by flush while usage moves from pending to the
	// ledger, and shared by readers that add pending usage to the ledger's,
	// so they see it in exactly one of the two. Taken before any key's mu
	// and before outboxMu.
	flushMu sync.RWMutex

	// outboxMu guards outbox: pending records of months that have ended,
	// or of a failed flush. Taken after any key's mu.
	outboxMu sync.Mutex
	outbox   []*MonthUsage
}

func (*oneNode) newKey(*keyState)                {}
func (*oneNode) useJournal(*journal.Journal)     {}
func (*oneNode) unapplied(next int64) int64      { return next }
func (o *oneNode) endMonth(s *keyState, _ Month) { o.keepEnded(s) }

// keepEnded puts what s's month left pending in the outbox, with s.mu held.
func (o *oneNode) keepEnded(s *keyState) {
	if s.month == 0 || s.pending.Counts.zero() {
		return
	}
	o.outboxMu.Lock()
	o.outbox = append(o.outbox, s.pending.clone())
	o.outboxMu.Unlock()
}

// errMonthMoved says the key's month changed between loading its spend and
// deciding on it, which only a request dated in another month can do.
var errMonthMoved = errors.New("limits: the key's month changed during the request")

func (o *oneNode) admit(ctx context.Context, s *keyState, a *Admission, now time.Time, t *Ticket) {
	ns := now.UnixNano()
	if o.decide(s, a, ns, t) {
		return
	}
	err := o.loadSpent(ctx, s, a.KeyID, t.Month)
	if err == nil && !o.decide(s, a, ns, t) {
		err = errMonthMoved
	}
	if err != nil {
		o.log.Error("limits: month-to-date spend unavailable", "key_id", a.KeyID, "err", err)
		t.Refusal = RefusedUnavailable
	}
}

// decide admits or refuses a request from what s holds, and reports false,
// deciding nothing, when the key has a monthly cap and its month's spend is
// not loaded yet.
func (o *oneNode) decide(s *keyState, a *Admission, ns int64, t *Ticket) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rollover(o, s, t.Month)
	l := &a.Limits
	if l.Monthly > 0 {
		if !s.loaded {
			return false
		}
		if s.spent+s.reserved+a.reserve() > l.Monthly.Pico() {
			t.Refusal, t.Spent, t.Cap = RefusedMonthlyCap, s.spent+s.reserved, l.Monthly.Pico()
			return true
		}
	}
	if l.RPM > 0 {
		if ok, wait := s.req.Take(l.RPM, 1, ns); !ok {
			t.Refusal, t.RetryAfter = RefusedRequests, wait
			rateStates(s, t, ns)
			return true
		}
	}
	if l.TPM > 0 {
		if ok, wait := s.tok.Take(l.TPM, a.Tokens, ns); !ok {
			if l.RPM > 0 {
				s.req.Adjust(l.RPM, -1, ns)
			}
			t.Refusal, t.RetryAfter = RefusedTokens, wait
			rateStates(s, t, ns)
			return true
		}
		t.tokLimit = l.TPM
	}
	s.reserved += a.reserve()
	t.state, t.reserved = s, a.reserve()
	rateStates(s, t, ns)
	return true
}

// loadSpent sets s.spent to the month's spend, unless it is loaded: the
// ledger's, plus what this node settled and has not added to it yet
// (pending, or in the outbox after a month ended or a flush failed).
// Settles before the load count in pending, not on top of the ledger:
// counting them in both is how spend was counted twice when a key gained a
// cap. flushMu keeps a flush from moving spend from pending into the ledger
// between the two reads.
func (o *oneNode) loadSpent(ctx context.Context, s *keyState, keyID string, month Month) error {
	o.flushMu.RLock()
	defer o.flushMu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	rollover(o, s, month)
	if s.loaded {
		return nil // another request loaded it meanwhile
	}
	u, err := o.ledger.Load(ctx, keyID, month)
	if err != nil {
		return err
	}
	s.spent = u.Spent + s.pending.Spent + o.outboxSpent(keyID, month)
	s.loaded = true
	return nil
}

// outboxSpent is what the outbox holds of a key-month's spend.
func (o *oneNode) outboxSpent(keyID string, month Month) usd.Pico {
	o.outboxMu.Lock()
	defer o.outboxMu.Unlock()
	var spent usd.Pico
	for _, u := range o.outbox {
		if u.KeyID == keyID && u.Month == month {
			spent += u.Spent
		}
	}
	return spent
}

func (o *oneNode) extend(_ context.Context, s *keyState, t *Ticket, more usd.Pico, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rollover(o, s, MonthOf(now))
	if s.month != t.Month {
		return true // a new month began, which owes nothing to the old reservation
	}
	if s.spent+s.reserved+more > t.limits.Monthly.Pico() {
		return false
	}
	s.reserved += more
	t.reserved += more
	return true
}

func (o *oneNode) flush(ctx context.Context) error {
	o.flushMu.Lock()
	defer o.flushMu.Unlock()
	batch := o.takeOutbox()
	o.keys.Range(func(_, v any) bool {
		if u := v.(*keyState).takePending(); u != nil {
			batch = append(batch, u)
		}
		return true
	})
	if len(batch) == 0 {
		return nil
	}
	if err := o.ledger.Add(ctx, batch); err != nil {
		o.outboxMu.Lock()
		o.outbox = append(batch, o.outbox...)
		o.outboxMu.Unlock()
		return fmt.Errorf("limits: flush %d usage records: %w", len(batch), err)
	}
	return nil
}

func (o *oneNode) takeOutbox() []*MonthUsage {
	o.outboxMu.Lock()
	defer o.outboxMu.Unlock()
	batch := o.outbox
	o.outbox = nil
	return batch
}

// takePending takes what s holds pending, nil when nothing is.
func (s *keyState) takePending() *MonthUsage {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending.Counts.zero() {
		return nil
	}
	return s.pending.take()
}

// run calls flush, which is Gate.Flush: the journal is released with it.
func (o *oneNode) run(ctx context.Context, interval time.Duration, flush func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := flush(fctx); err != nil {
				o.log.Error("limits: final flush failed; usage since the last flush is lost", "err", err)
			}
			cancel()
			return
		case <-t.C:
			if err := flush(ctx); err != nil {
				o.log.Warn("limits: flush failed; will retry", "err", err)
			}
		}
	}
}

func (o *oneNode) usage(ctx context.Context, keyID string, month Month) (*Report, error) {
	o.flushMu.RLock()
	defer o.flushMu.RUnlock()
	u, err := o.ledger.Load(ctx, keyID, month)
	if err != nil {
		return nil, err
	}
	r := &Report{Month: month, Usage: u.clone()}
	r.Usage.KeyID, r.Usage.Month = keyID, month
	if v, ok := o.keys.Load(keyID); ok {
		v.(*keyState).addPending(r)
	}
	o.outboxMu.Lock()
	defer o.outboxMu.Unlock()
	for _, u := range o.outbox {
		if u.KeyID == keyID && u.Month == month {
			r.Usage.add(u)
		}
	}
	return r, nil
}

// addPending adds what s holds pending and reserved of r's month to r.
func (s *keyState) addPending(r *Report) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.month == r.Month {
		r.Usage.add(&s.pending)
		r.Reserved = s.reserved
	}
}

func (o *oneNode) applyJournal(ctx context.Context, settles []journal.Record) (int, error) {
	al, ok := o.ledger.(appliedLedger)
	if !ok {
		return 0, errors.New("limits: replay: the ledger does not record journal sequence numbers")
	}
	applied := map[keyMonth]int64{}
	batch := map[keyMonth]*MonthUsage{}
	n := 0
	for i := range settles {
		r := &settles[i]
		km := keyMonth{r.KeyID, Month(r.Month)}
		seq, ok := applied[km]
		if !ok {
			var err error
			if seq, err = al.Applied(ctx, km.key, km.month); err != nil {
				return 0, fmt.Errorf("limits: replay: %w", err)
			}
			applied[km] = seq
		}
		if r.Seq <= seq {
			continue
		}
		u := batch[km]
		if u == nil {
			u = &MonthUsage{KeyID: km.key, Month: km.month, Models: map[string]*Counts{}}
			batch[km] = u
		}
		addRecord(u, r)
		n++
	}
	if len(batch) == 0 {
		return 0, nil
	}
	deltas := make([]*MonthUsage, 0, len(batch))
	for _, u := range batch {
		deltas = append(deltas, u)
	}
	if err := o.ledger.Add(ctx, deltas); err != nil {
		return 0, fmt.Errorf("limits: replay: %w", err)
	}
	return n, nil
}
