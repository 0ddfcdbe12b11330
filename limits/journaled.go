package limits

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/limits/journal"
)

// UseJournal makes g write every settled request, and a stream's running
// count (Progress), to j before Settle and Progress return, so that usage
// answered is not lost when the process dies before the next flush. Call it
// before serving, then Replay.
func (g *Gate) UseJournal(j *journal.Journal) {
	g.journal = j
	g.strategy.useJournal(j)
}

// appendJournal writes one record of t's key, storing its seq in *seq
// (unless the append failed: then the failure is logged once until an
// append succeeds again, and the request goes on unjournaled rather than
// failing).
func (g *Gate) appendJournal(kind journal.Kind, keyID string, t *Ticket, month Month, used usd.Tokens, cost usd.Pico, seq *int64) {
	r := journal.Record{Kind: kind, Month: int32(month), Stream: t.stream, Requests: 1,
		Prompt: used.Prompt, Cached: used.Cached, CacheWrite: used.CacheWrite, Completion: used.Completion, Spent: int64(cost),
		KeyID: keyID, Model: t.model}
	var n int64
	var err error
	if kind == journal.Progress {
		n, err = g.journal.AppendPinned(&r, &t.pin)
	} else {
		n, err = g.journal.Append(&r)
	}
	g.journaled(err)
	if err == nil && seq != nil {
		*seq = n
	}
}

// journaled logs a failed append, once until an append succeeds again.
func (g *Gate) journaled(err error) {
	if err == nil {
		g.journalError.Store(false)
		return
	}
	if !g.journalError.Swap(true) {
		g.log.Error("limits: usage journal append failed; usage since the last flush is lost if the process dies", "err", err)
	}
}

// Progress journals what an admitted stream has produced so far (prompt,
// its cached and cache-write parts and completion counted from its start), superseded by a
// later Progress and by its Settle: if the process dies before Settle,
// replay bills this, at the cost Settle would have. The journal keeps the
// latest Progress of a stream until its Settle, however much else is
// applied and recycled meanwhile. It does nothing without a journal, or for
// a settled ticket.
func (g *Gate) Progress(t *Ticket, used usd.Tokens, price usd.Price, now time.Time) {
	s := t.state
	if g.journal == nil || s == nil {
		return
	}
	if t.stream == 0 {
		t.stream = g.journal.StreamID()
	}
	used, _ = used.Clamped()
	g.appendJournal(journal.Progress, s.pending.KeyID, t, MonthOf(now), used, price.Bill(used), nil)
}

// RenewProgress journals an admitted stream's last Progress again when the
// journal has moved on to a new segment since: call it after each upstream
// read that carried nothing new to bill. A stream that relays no text for
// long then holds back from recycling only the segments filled since its
// last read (a silent upstream is cut after its event timeout), not every
// segment since its last text. It costs one atomic load while the segment
// is the same, and does nothing without a journal or for a settled ticket.
func (g *Gate) RenewProgress(t *Ticket) {
	if g.journal == nil || t.state == nil {
		return
	}
	if err := g.journal.Renew(&t.pin); err != nil {
		g.journaled(err)
	}
}

// releaseJournal lets the journal remove the segments whose records are all
// below next, now applied.
func (g *Gate) releaseJournal(next int64) error {
	if g.journal == nil || next == 0 {
		return nil
	}
	if err := g.journal.Release(next); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	return nil
}

// appliedLedger is a ledger that stores the journal sequence number of what
// it applied (see MonthUsage.Seq).
type appliedLedger interface {
	Applied(ctx context.Context, keyID string, month Month) (int64, error)
}

type keyMonth struct {
	key   string
	month Month
}

// Replay applies what the journal holds and the ledger does not: at start,
// before serving. Settled requests are applied when their seq is above the
// one the ledger stored for their key-month; a stream the process died
// relaying (Progress records and no Settle) is first settled in the journal
// at its last count, then applied the same way, so a second replay (or one
// after a crash during this one) finds it settled and applied and counts it
// nothing more. It returns the number of records applied.
func (g *Gate) Replay(ctx context.Context) (int, error) {
	if g.journal == nil {
		return 0, nil
	}
	var settles []journal.Record
	progress := map[uint64]journal.Record{} // the last of each stream
	settled := map[uint64]bool{}
	err := g.journal.Records(func(r *journal.Record) error {
		switch r.Kind {
		case journal.Settle:
			settles = append(settles, *r)
			if r.Stream != 0 {
				settled[r.Stream] = true
			}
		case journal.Progress:
			if last, ok := progress[r.Stream]; !ok || r.Seq > last.Seq {
				progress[r.Stream] = *r
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("limits: replay: %w", err)
	}
	orphans := 0
	for id, r := range progress {
		if settled[id] {
			continue
		}
		r.Kind = journal.Settle
		seq, err := g.journal.Append(&r)
		if err != nil {
			return 0, fmt.Errorf("limits: replay: settle a stream cut by a crash: %w", err)
		}
		r.Seq = seq
		settles = append(settles, r)
		orphans++
	}
	if orphans > 0 {
		// The settles must be on disk before the ledger counts them: else
		// a power loss could keep the count and lose what says it is done.
		if err := g.journal.Sync(); err != nil {
			return 0, fmt.Errorf("limits: replay: %w", err)
		}
		g.log.Warn("limits: replay settled streams cut by a crash at their last journaled count", "streams", orphans)
	}
	n, err := g.strategy.applyJournal(ctx, settles)
	if err != nil {
		return 0, err
	}
	if n > 0 {
		g.log.Warn("limits: replayed usage the last run answered and did not record", "records", n)
	}
	return n, g.releaseJournal(g.journal.Next())
}

// addRecord adds a journal record's usage to u.
func addRecord(u *MonthUsage, r *journal.Record) {
	c := Counts{Requests: r.Requests, PromptTokens: r.Prompt, CachedTokens: r.Cached, CacheWriteTokens: r.CacheWrite,
		CompletionTokens: r.Completion, Spent: usd.Pico(r.Spent)}
	u.Counts.add(&c)
	m := u.Models[r.Model]
	if m == nil {
		m = &Counts{}
		u.Models[r.Model] = m
	}
	m.add(&c)
	u.Seq = max(u.Seq, r.Seq)
}

// unapplied is the seq of the oldest journal record a shared Gate has not
// had Valkey confirm: next, unless a key holds an older one in pending usage
// or in an unconfirmed record.
func (sh *shared) unapplied(next int64) int64 {
	if next == 0 {
		return 0
	}
	low := next
	older := func(u *MonthUsage) {
		if u != nil && u.first > 0 && u.first < low {
			low = u.first
		}
	}
	sh.keys.Range(func(_, v any) bool {
		s := v.(*keyState)
		s.mu.Lock()
		defer s.mu.Unlock()
		older(&s.pending)
		older(s.sh.acct.inflight)
		for _, a := range s.sh.ended {
			older(a.inflight)
			older(a.pending)
		}
		return true
	})
	return low
}

// applyJournal on Valkey: per key-month, the records
// above the seq Valkey holds for this node are sent as one record with the
// newest seq, through the budget script, which applies a seq once and turns
// the node's lease into spend by as much; the rest of the lease the node
// held before it died is given back with it.
func (sh *shared) applyJournal(ctx context.Context, settles []journal.Record) (int, error) {
	byMonth := map[keyMonth][]*journal.Record{}
	for i := range settles {
		r := &settles[i]
		km := keyMonth{r.KeyID, Month(r.Month)}
		byMonth[km] = append(byMonth[km], r)
	}
	n := 0
	seqField := "seq:" + sh.node
	for km, rs := range byMonth {
		key := sh.ledger.monthKey(km.key, km.month)
		cctx, cancel := context.WithTimeout(ctx, sh.ledger.timeout)
		stored, err := sh.ledger.c.Do(cctx, sh.ledger.c.B().Hget().Key(key).Field(seqField).Build()).AsInt64()
		cancel()
		if err != nil && !valkey.IsValkeyNil(err) {
			return n, fmt.Errorf("limits: replay: read %s's applied seq: %w", km.key, err)
		}
		u := &MonthUsage{KeyID: km.key, Month: km.month, Models: map[string]*Counts{}}
		for _, r := range rs {
			if r.Seq > stored {
				addRecord(u, r)
				n++
			}
		}
		if u.Seq == 0 {
			continue
		}
		args := []string{sh.node, sh.ttlMs, strconv.FormatInt(u.Seq, 10), "0", "1", "0", "0", "0", "0"}
		cctx, cancel = context.WithTimeout(ctx, sh.ledger.timeout)
		_, err = parseBudgetReply(budgetScript.Exec(cctx, sh.ledger.c, []string{key}, usageArgs(args, u)))
		cancel()
		if err != nil {
			return n, fmt.Errorf("limits: replay: apply %s's usage: %w", km.key, err)
		}
	}
	return n, nil
}
