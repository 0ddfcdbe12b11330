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

// writePrice has four distinct prices, Claude Sonnet's: $3 input, $0.30 a
// cache read, $3.75 a cache write, $15 output per million tokens.
var writePrice = usd.Price{InputPerMTok: 3_000_000, CachedInputPerMTok: 300_000, CacheWritePerMTok: 3_750_000, OutputPerMTok: 15_000_000}

// TestCacheWriteTokensKeptAcrossRestartAndCrash: cache-write tokens are
// counted apart from (and inside) prompt tokens, beside cached ones, and
// billed at their own price to the pico-dollar; the counts survive a flush
// and restart, and what was settled and never flushed (a stream's Progress
// included) survives a crash through the journal's replay. A lying
// upstream's cache-write count past what the prompt leaves is clamped to
// it. On the bolt ledger and on Valkey.
func TestCacheWriteTokensKeptAcrossRestartAndCrash(t *testing.T) {
	for _, store := range []string{"embedded", "valkey"} {
		t.Run(store, func(t *testing.T) {
			n := newCrashNode(t, store, "cachewrite", journal.Options{Log: quiet})
			start := func() (*Gate, *journal.Journal) {
				g, j := n.start()
				if _, err := g.Replay(context.Background()); err != nil {
					t.Fatal(err)
				}
				return g, j
			}
			crash := func(*journal.Journal) { n.crash() }
			ctx := context.Background()
			a := Admission{KeyID: "key_w", Model: "claude-sonnet-4-5", Worst: writePrice.Bound(4000, 1000)}
			settle := func(g *Gate, used usd.Tokens) usd.Pico {
				var tk Ticket
				g.Admit(ctx, &a, nov, &tk)
				if tk.Refusal != Admitted {
					t.Fatalf("refused: %v", tk.Refusal)
				}
				return g.Settle(&tk, used, writePrice, nov)
			}

			g, j := start()
			// 500 input × $3 + 1000 read × $0.30 + 1500 written × $3.75 + 300 output × $15
			if got := settle(g, usd.Tokens{Prompt: 3000, Cached: 1000, CacheWrite: 1500, Completion: 300}); got != 11_925_000_000 {
				t.Fatalf("billed %s, want $0.011925", got)
			}
			// A lying upstream: 600 read and 5000 written of 1000 prompt
			// tokens is 600 read and 400 written.
			if got, want := settle(g, usd.Tokens{Prompt: 1000, Cached: 600, CacheWrite: 5000}), usd.Pico(600*300_000+400*3_750_000); got != want {
				t.Fatalf("billed %s for a cache-write count past the prompt, want %s", got, want)
			}
			if err := g.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			settle(g, usd.Tokens{Prompt: 100, CacheWrite: 64, Completion: 10}) // answered, never flushed
			var cut Ticket
			g.Admit(ctx, &a, nov, &cut)
			g.Progress(&cut, usd.Tokens{Prompt: 500, Cached: 100, CacheWrite: 256, Completion: 40}, writePrice, nov) // the node dies mid-stream
			crash(j)

			want := Counts{Requests: 4, PromptTokens: 3000 + 1000 + 100 + 500, CachedTokens: 1000 + 600 + 0 + 100,
				CacheWriteTokens: 1500 + 400 + 64 + 256, CompletionTokens: 300 + 10 + 40}
			want.Spent = 11_925_000_000 + 600*300_000 + 400*3_750_000 +
				(36*3_000_000 + 64*3_750_000 + 10*15_000_000) +
				(144*3_000_000 + 100*300_000 + 256*3_750_000 + 40*15_000_000)
			for _, what := range []string{"after a crash and replay", "after a second restart"} {
				g, j = start()
				r, err := g.Usage(ctx, "key_w", nov)
				if err != nil {
					t.Fatal(err)
				}
				if r.Usage.Counts != want || r.Usage.Models["claude-sonnet-4-5"] == nil || *r.Usage.Models["claude-sonnet-4-5"] != want {
					t.Fatalf("%s: recorded %+v (model %+v), want %+v", what, r.Usage.Counts, r.Usage.Models["claude-sonnet-4-5"], want)
				}
				crash(j)
			}
		})
	}
}

// TestBoltReadsRecordsWithoutCacheWriteTokens: a usage record the previous
// version wrote (binary, five counts per entry) is read as it was, and the
// next Add rewrites it with cache-write tokens, its other counts and models
// intact.
func TestBoltReadsRecordsWithoutCacheWriteTokens(t *testing.T) {
	l, err := OpenBoltLedger(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Version 2: totals, then 2 models, each name and five uvarints
	// (requests, prompt, completion, spent, cached).
	v := []byte{recordV2}
	for _, n := range []uint64{3, 300, 30, 3_000_000, 90} {
		v = binary.AppendUvarint(v, n)
	}
	v = binary.AppendUvarint(v, 2)
	for _, m := range []struct {
		name string
		c    [5]uint64
	}{{"a", [5]uint64{1, 100, 10, 1_000_000, 40}}, {"b", [5]uint64{2, 200, 20, 2_000_000, 50}}} {
		v = binary.AppendUvarint(v, uint64(len(m.name)))
		v = append(v, m.name...)
		for _, n := range m.c {
			v = binary.AppendUvarint(v, n)
		}
	}
	k := ledgerKey(nil, "k", 202611)
	if err := l.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(usageBucket).Put(k, v) }); err != nil {
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
	a := Counts{Requests: 1, PromptTokens: 100, CachedTokens: 40, CompletionTokens: 10, Spent: 1_000_000}
	if u := load(); u.Counts != (Counts{Requests: 3, PromptTokens: 300, CachedTokens: 90, CompletionTokens: 30, Spent: 3_000_000}) ||
		*u.Models["a"] != a || *u.Models["b"] != (Counts{Requests: 2, PromptTokens: 200, CachedTokens: 50, CompletionTokens: 20, Spent: 2_000_000}) {
		t.Fatalf("read the old record as %+v %+v %+v", u.Counts, u.Models["a"], u.Models["b"])
	}
	d := Counts{Requests: 1, PromptTokens: 50, CachedTokens: 10, CacheWriteTokens: 30, CompletionTokens: 5, Spent: 7}
	if err := l.Add(context.Background(), []*MonthUsage{{KeyID: "k", Month: 202611, Counts: d, Models: map[string]*Counts{"b": &d}}}); err != nil {
		t.Fatal(err)
	}
	u := load()
	if u.Counts != (Counts{Requests: 4, PromptTokens: 350, CachedTokens: 100, CacheWriteTokens: 30, CompletionTokens: 35, Spent: 3_000_007}) ||
		*u.Models["a"] != a || *u.Models["b"] != (Counts{Requests: 3, PromptTokens: 250, CachedTokens: 60, CacheWriteTokens: 30, CompletionTokens: 25, Spent: 2_000_007}) {
		t.Fatalf("after an Add: %+v %+v %+v", u.Counts, u.Models["a"], u.Models["b"])
	}
	if err := l.db.View(func(tx *bolt.Tx) error {
		if got := tx.Bucket(usageBucket).Get(k)[0]; got != recordV3 {
			t.Errorf("rewritten as version %d, want %d", got, recordV3)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestValkeyLedgerKeepsCacheWriteTokens: the Valkey ledger's Add and Load
// carry cache-write tokens, in total and per model, beside the other
// counts, added to a month hash a node of the previous version wrote (no
// cache_write_tokens field).
func TestValkeyLedgerKeepsCacheWriteTokens(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	l, err := NewValkeyLedger(c, "writeledger", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// What the previous version's script left: five counters, in total and
	// for model "a:b".
	old := map[string]string{"requests": "1", "prompt_tokens": "100", "completion_tokens": "10", "spent": "4000", "cached_tokens": "60",
		"m:a:b:requests": "1", "m:a:b:prompt_tokens": "100", "m:a:b:completion_tokens": "10", "m:a:b:spent": "4000", "m:a:b:cached_tokens": "60"}
	for f, v := range old {
		if err := c.Do(ctx, c.B().Hset().Key(l.monthKey("k", 202611)).FieldValue().FieldValue(f, v).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	d := func() *MonthUsage {
		return &MonthUsage{KeyID: "k", Month: 202611, Counts: Counts{2, 300, 100, 150, 30, 9_000},
			Models: map[string]*Counts{"a:b": {1, 100, 0, 50, 10, 4_000}, "c": {1, 200, 100, 100, 20, 5_000}}}
	}
	for range 2 {
		if err := l.Add(ctx, []*MonthUsage{d()}); err != nil {
			t.Fatal(err)
		}
	}
	u, err := l.Load(ctx, "k", 202611)
	if err != nil {
		t.Fatal(err)
	}
	if u.Counts != (Counts{5, 700, 260, 300, 70, 22_000}) || *u.Models["a:b"] != (Counts{3, 300, 60, 100, 30, 12_000}) || *u.Models["c"] != (Counts{2, 400, 200, 200, 40, 10_000}) {
		t.Fatalf("loaded %+v %+v %+v", u.Counts, u.Models["a:b"], u.Models["c"])
	}
}
