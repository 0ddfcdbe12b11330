package limits

import (
	"context"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
)

// Ledger keeps month-to-date usage per key: the embedded store on one node,
// Valkey for many. Nodes only ever add to it, so several can share one.
type Ledger interface {
	// Load returns a key's usage for a month (zero when there is none).
	Load(ctx context.Context, keyID string, month Month) (*MonthUsage, error)
	// Add adds each record's counts to the stored ones, atomically per record.
	Add(ctx context.Context, deltas []*MonthUsage) error
	Close() error
}

// Month is a UTC calendar month as yyyymm, such as 202611.
type Month int32

// MonthOf returns t's UTC month.
func MonthOf(t time.Time) Month {
	y, m, _ := t.UTC().Date() // one calendar computation, not one for Year and one for Month
	return Month(y*100 + int(m))
}

// Start returns the first instant of the month.
func (m Month) Start() time.Time {
	return time.Date(int(m/100), time.Month(m%100), 1, 0, 0, 0, 0, time.UTC)
}

// End returns the first instant of the next month, when budgets reset.
func (m Month) End() time.Time { return m.Start().AddDate(0, 1, 0) }

// Counts are what requests used. CachedTokens and CacheWriteTokens are
// part of PromptTokens (the prompt tokens the provider served from its
// cache, and those it wrote to it), not on top.
type Counts struct {
	Requests         int64    `json:"requests"`
	PromptTokens     int64    `json:"prompt_tokens"`
	CachedTokens     int64    `json:"cached_tokens"`
	CacheWriteTokens int64    `json:"cache_write_tokens"`
	CompletionTokens int64    `json:"completion_tokens"`
	Spent            usd.Pico `json:"-"`
}

func (c *Counts) add(o *Counts) {
	c.Requests += o.Requests
	c.PromptTokens += o.PromptTokens
	c.CachedTokens += o.CachedTokens
	c.CacheWriteTokens += o.CacheWriteTokens
	c.CompletionTokens += o.CompletionTokens
	c.Spent += o.Spent
}

func (c *Counts) zero() bool { return *c == Counts{} }

// MonthUsage is one key's usage in one month, in total and by model.
type MonthUsage struct {
	KeyID string
	Month Month
	Counts
	Models map[string]*Counts
	// Seq is the sequence number of the newest journal record whose usage
	// this holds (0: none, or no journal). A ledger stores it with the
	// counts, atomically, so that replay skips what is already applied.
	Seq int64
	// first is the seq of the oldest journal record it holds (0: none):
	// the journal keeps what is at or above it.
	first int64
}

// add adds o's counts (for any key and month) to u.
func (u *MonthUsage) add(o *MonthUsage) {
	u.Counts.add(&o.Counts)
	u.Seq = max(u.Seq, o.Seq)
	if o.first > 0 && (u.first == 0 || o.first < u.first) {
		u.first = o.first
	}
	for name, c := range o.Models {
		if c.zero() {
			continue
		}
		if u.Models == nil {
			u.Models = make(map[string]*Counts)
		}
		mine := u.Models[name]
		if mine == nil {
			mine = &Counts{}
			u.Models[name] = mine
		}
		mine.add(c)
	}
}

// clone copies u without its zero model entries.
func (u *MonthUsage) clone() *MonthUsage {
	c := &MonthUsage{KeyID: u.KeyID, Month: u.Month}
	c.add(u)
	return c
}

// take returns a copy of u and resets u.
func (u *MonthUsage) take() *MonthUsage {
	c := u.clone()
	u.reset()
	return c
}

// reset zeroes u, keeping its model entries so that the next Settle of
// those models does not allocate.
func (u *MonthUsage) reset() {
	u.Counts, u.Seq, u.first = Counts{}, 0, 0
	for _, m := range u.Models {
		*m = Counts{}
	}
}
