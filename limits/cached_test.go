package limits

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
	"github.com/tokenhub/tokenhub/limits/journal"
)

// cachedPrice is gpt-4o-mini's: $0.15 input, $0.075 cached, $0.60 output.
var cachedPrice = usd.Price{InputPerMTok: 150_000, CachedInputPerMTok: 75_000, OutputPerMTok: 600_000}

// TestCachedTokensKeptAcrossRestartAndCrash: cached tokens are counted apart
// from (and inside) prompt tokens and billed at their own price to the
// pico-dollar; the counts survive a flush and restart, and what was settled
// and never flushed (a stream's Progress included) survives a crash through
// the journal's replay. A lying upstream's cached count past the prompt is
// clamped to it. On the bolt ledger and on Valkey.
func TestCachedTokensKeptAcrossRestartAndCrash(t *testing.T) {
	for _, store := range []string{"embedded", "valkey"} {
		t.Run(store, func(t *testing.T) {
			n := newCrashNode(t, store, "cached", journal.Options{Log: quiet})
			start := func() (*Gate, *journal.Journal) {
				g, j := n.start()
				if _, err := g.Replay(context.Background()); err != nil {
					t.Fatal(err)
				}
				return g, j
			}
			crash := func(*journal.Journal) { n.crash() }
			ctx := context.Background()
			a := Admission{KeyID: "key_c", Model: "gpt-4o-mini", Worst: cachedPrice.Bound(3000, 1000)}
			settle := func(g *Gate, used usd.Tokens) usd.Pico {
				var tk Ticket
				g.Admit(ctx, &a, nov, &tk)
				return g.Settle(&tk, used, cachedPrice, nov)
			}

			g, j := start()
			if got := settle(g, usd.Tokens{Prompt: 2006, Cached: 1920, Completion: 300}); got != 336_900_000 {
				t.Fatalf("billed %s, want $0.0003369", got) // 86×0.15 + 1920×0.075 + 300×0.6 µ$
			}
			// A lying upstream: 5000 cached of 1000 prompt is 1000 cached.
			if got, want := settle(g, usd.Tokens{Prompt: 1000, Cached: 5000, Completion: 0}), usd.Pico(75_000_000); got != want {
				t.Fatalf("billed %s for a cached count past the prompt, want %s", got, want)
			}
			if err := g.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			settle(g, usd.Tokens{Prompt: 100, Cached: 64, Completion: 10}) // answered, never flushed
			var cut Ticket
			g.Admit(ctx, &a, nov, &cut)
			g.Progress(&cut, usd.Tokens{Prompt: 500, Cached: 256, Completion: 40}, cachedPrice, nov) // the node dies mid-stream
			crash(j)

			want := Counts{Requests: 4, PromptTokens: 2006 + 1000 + 100 + 500, CachedTokens: 1920 + 1000 + 64 + 256,
				CompletionTokens: 300 + 10 + 40}
			want.Spent = 336_900_000 + 75_000_000 +
				cachedPrice.Bill(usd.Tokens{Prompt: 100, Cached: 64, Completion: 10}) +
				cachedPrice.Bill(usd.Tokens{Prompt: 500, Cached: 256, Completion: 40})
			for _, what := range []string{"after a crash and replay", "after a second restart"} {
				g, j = start()
				r, err := g.Usage(ctx, "key_c", nov)
				if err != nil {
					t.Fatal(err)
				}
				if r.Usage.Counts != want || r.Usage.Models["gpt-4o-mini"] == nil || *r.Usage.Models["gpt-4o-mini"] != want {
					t.Fatalf("%s: recorded %+v (model %+v), want %+v", what, r.Usage.Counts, r.Usage.Models["gpt-4o-mini"], want)
				}
				crash(j)
			}
		})
	}
}

// TestBoltReadsRecordsWithoutCachedTokens: a usage record an older version
// wrote (binary, four counts per entry) is read as it was, and the next Add
// rewrites it with cached tokens, its other counts and models intact.
func TestBoltReadsRecordsWithoutCachedTokens(t *testing.T) {
	l, err := OpenBoltLedger(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Version 1: totals, then 2 models, each name and four uvarints.
	v := []byte{recordV1}
	for _, n := range []uint64{3, 300, 30, 3_000_000} {
		v = binary.AppendUvarint(v, n)
	}
	v = binary.AppendUvarint(v, 2)
	for _, m := range []struct {
		name string
		c    [4]uint64
	}{{"a", [4]uint64{1, 100, 10, 1_000_000}}, {"b", [4]uint64{2, 200, 20, 2_000_000}}} {
		v = binary.AppendUvarint(v, uint64(len(m.name)))
		v = append(v, m.name...)
		for _, n := range m.c {
			v = binary.AppendUvarint(v, n)
		}
	}
	if err := l.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(usageBucket).Put(ledgerKey(nil, "k", 202611), v)
	}); err != nil {
		t.Fatal(err)
	}
	load := func() *MonthUsage {
		t.Helper()
		u, err := l.Load(context.Background(), "k", 202611)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	if u := load(); u.Counts != (Counts{3, 300, 0, 0, 30, 3_000_000}) || *u.Models["a"] != (Counts{1, 100, 0, 0, 10, 1_000_000}) || *u.Models["b"] != (Counts{2, 200, 0, 0, 20, 2_000_000}) {
		t.Fatalf("read the old record as %+v %+v %+v", u.Counts, u.Models["a"], u.Models["b"])
	}
	d := &MonthUsage{KeyID: "k", Month: 202611, Counts: Counts{1, 50, 40, 0, 5, 7},
		Models: map[string]*Counts{"b": {1, 50, 40, 0, 5, 7}}}
	if err := l.Add(context.Background(), []*MonthUsage{d}); err != nil {
		t.Fatal(err)
	}
	u := load()
	if u.Counts != (Counts{4, 350, 40, 0, 35, 3_000_007}) || *u.Models["a"] != (Counts{1, 100, 0, 0, 10, 1_000_000}) || *u.Models["b"] != (Counts{3, 250, 40, 0, 25, 2_000_007}) {
		t.Fatalf("after an Add: %+v %+v %+v", u.Counts, u.Models["a"], u.Models["b"])
	}
}

// TestValkeyLedgerKeepsCachedTokens: the Valkey ledger's Add and Load carry
// cached tokens, in total and per model, beside the other counts.
func TestValkeyLedgerKeepsCachedTokens(t *testing.T) {
	srv := valkeytest.Start(t)
	l, err := NewValkeyLedger(valkeyClient(t, srv), "cachedledger", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d := func() *MonthUsage {
		return &MonthUsage{KeyID: "k", Month: 202611, Counts: Counts{2, 300, 200, 0, 30, 9_000},
			Models: map[string]*Counts{"a:b": {1, 100, 100, 0, 10, 4_000}, "c": {1, 200, 100, 0, 20, 5_000}}}
	}
	for range 2 {
		if err := l.Add(context.Background(), []*MonthUsage{d()}); err != nil {
			t.Fatal(err)
		}
	}
	u, err := l.Load(context.Background(), "k", 202611)
	if err != nil {
		t.Fatal(err)
	}
	if u.Counts != (Counts{4, 600, 400, 0, 60, 18_000}) || *u.Models["a:b"] != (Counts{2, 200, 200, 0, 20, 8_000}) || *u.Models["c"] != (Counts{2, 400, 200, 0, 40, 10_000}) {
		t.Fatalf("loaded %+v %+v %+v", u.Counts, u.Models["a:b"], u.Models["c"])
	}
}
