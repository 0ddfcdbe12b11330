package limits

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/limits/journal"
)

func openJournal(t testing.TB, dir string) *journal.Journal {
	t.Helper()
	j, err := journal.Open(dir, journal.Options{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// TestReplayAppliesWhatAFlushMissed: requests settled and not flushed when
// the process dies (the Gate is dropped, the journal not closed) are in the
// ledger after a restart's Replay; a second Replay, and a Replay after the
// flush of a next run, add nothing; a stream cut by the crash is billed at
// its last Progress, once. On the bolt ledger and on Valkey.
func TestReplayAppliesWhatAFlushMissed(t *testing.T) {
	type node struct {
		gate *Gate
		j    *journal.Journal
	}
	for _, store := range []string{"embedded", "valkey"} {
		t.Run(store, func(t *testing.T) {
			cn := newCrashNode(t, store, "replay", journal.Options{Log: quiet})
			start := func() node {
				g, j := cn.start()
				return node{g, j}
			}
			crash := func(node) { cn.crash() }
			ctx := context.Background()
			a := Admission{KeyID: "key_a", Model: "m", Worst: price.Cost(10, 10)}
			n := start()
			if _, err := n.gate.Replay(ctx); err != nil {
				t.Fatal(err)
			}
			settle := func(g *Gate, k int) {
				for range k {
					var tk Ticket
					g.Admit(ctx, &a, nov, &tk)
					g.Settle(&tk, usd.Tokens{Prompt: 10, Completion: 20}, price, nov)
				}
			}
			settle(n.gate, 5)
			if err := n.gate.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			settle(n.gate, 7) // answered, never flushed
			var cut Ticket
			n.gate.Admit(ctx, &a, nov, &cut)
			n.gate.Progress(&cut, usd.Tokens{Prompt: 10, Completion: 3}, price, nov)
			n.gate.Progress(&cut, usd.Tokens{Prompt: 10, Completion: 9}, price, nov) // the client got 9 tokens, then the node died
			crash(n)

			want := Counts{Requests: 13, PromptTokens: 130, CompletionTokens: 12*20 + 9, Spent: 12*price.Cost(10, 20) + price.Cost(10, 9)}
			check := func(g *Gate, what string) {
				t.Helper()
				r, err := g.Usage(ctx, "key_a", nov)
				if err != nil {
					t.Fatal(err)
				}
				if r.Usage.Counts != want || r.Usage.Models["m"] == nil || *r.Usage.Models["m"] != want {
					t.Fatalf("%s: recorded %+v, want %+v", what, r.Usage.Counts, want)
				}
			}
			for i, what := range []string{"after a restart", "after a second restart"} {
				n = start()
				got, err := n.gate.Replay(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if wantN := []int{8, 0}[i]; got != wantN {
					t.Fatalf("%s: replayed %d records, want %d", what, got, wantN)
				}
				check(n.gate, what)
				crash(n)
			}
			// A run that serves and flushes, then restarts: its journal
			// holds nothing unapplied.
			n = start()
			n.gate.Replay(ctx)
			settle(n.gate, 1)
			if err := n.gate.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			crash(n)
			want.Requests, want.PromptTokens, want.CompletionTokens, want.Spent = want.Requests+1, want.PromptTokens+10, want.CompletionTokens+20, want.Spent+price.Cost(10, 20)
			n = start()
			if got, err := n.gate.Replay(ctx); err != nil || got != 0 {
				t.Fatalf("after a clean flush: replayed %d records (%v), want 0", got, err)
			}
			check(n.gate, "after a flushed run")
			crash(n)
		})
	}
}

// failingLedger is the real bolt ledger whose Add fails while fail is set,
// as when the disk is full.
type failingLedger struct {
	*BoltLedger
	fail bool
}

func (l *failingLedger) Add(ctx context.Context, d []*MonthUsage) error {
	if l.fail {
		return errors.New("disk full")
	}
	return l.BoltLedger.Add(ctx, d)
}

// TestFlushRecyclesTheJournal: once a flush has applied them, the journal's
// full segments are removed, so its files stay bounded however long a node
// runs; while the ledger refuses a flush, they stay.
func TestFlushRecyclesTheJournal(t *testing.T) {
	jdir := t.TempDir()
	j, err := journal.Open(jdir, journal.Options{SegmentBytes: 16 * journal.RecordSize, Log: quiet}) // 15 records a segment
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	bolt, err := OpenBoltLedger(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	l := &failingLedger{BoltLedger: bolt, fail: true}
	g := NewGate(l, quiet)
	g.UseJournal(j)
	ctx := context.Background()
	segments := func() int {
		m, _ := filepath.Glob(filepath.Join(jdir, "*.journal"))
		return len(m)
	}
	a := Admission{KeyID: "key_a", Model: "m", Worst: 1}
	for range 100 {
		var tk Ticket
		g.Admit(ctx, &a, nov, &tk)
		g.Settle(&tk, usd.Tokens{Prompt: 1, Completion: 1}, price, nov)
	}
	if n := segments(); n != 7 {
		t.Fatalf("%d segments for 100 records of 15 a segment, want 7", n)
	}
	if err := g.Flush(ctx); err == nil {
		t.Fatal("flush succeeded on a failing ledger")
	}
	if n := segments(); n != 7 {
		t.Fatalf("%d segments after a failed flush, want all 7 kept", n)
	}
	l.fail = false
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := segments(); n != 1 {
		t.Fatalf("%d segments after a flush, want the current one", n)
	}
}

// TestSilentStreamOutlivesRecycling: a stream journals its count, then
// relays no text while other requests fill, flush and recycle several
// segments; the node dies. Replay bills the stream what the client got,
// exactly once, and a second replay adds nothing; a stream that settled
// before the crash is billed its Settle alone, never its Progress on top;
// a stream whose Progress was renewed (copied forward, as the relay does on
// reads without text) is billed it once. On the bolt ledger and on Valkey.
func TestSilentStreamOutlivesRecycling(t *testing.T) {
	cases := []struct {
		name           string
		renew, settled bool
	}{
		{"cut by the crash", false, false},
		{"settled before the crash", false, true},
		{"renewed, cut by the crash", true, false},
		{"renewed, settled before the crash", true, true},
	}
	for _, store := range []string{"embedded", "valkey"} {
		for _, tc := range cases {
			renew, settled := tc.renew, tc.settled
			t.Run(store+"/"+tc.name, func(t *testing.T) {
				cn := newCrashNode(t, store, "silent", journal.Options{SegmentBytes: 16 * journal.RecordSize, Log: quiet}) // 15 records a segment
				jdir := cn.jdir
				start, crash := cn.start, cn.crash
				segments := func() int {
					m, _ := filepath.Glob(filepath.Join(jdir, "*.journal"))
					return len(m)
				}
				ctx := context.Background()
				g, _ := start()
				if _, err := g.Replay(ctx); err != nil {
					t.Fatal(err)
				}
				silent := Admission{KeyID: "key_silent", Model: "m", Worst: price.Cost(10, 100)}
				var stream Ticket
				g.Admit(ctx, &silent, nov, &stream)
				g.Progress(&stream, usd.Tokens{Prompt: 10, Completion: 9}, price, nov) // the client got 9 tokens, then no text for long
				// A stream beside it that settles a segment later: its
				// Progress shares the silent one's segment, its Settle not.
				short := Admission{KeyID: "key_short", Model: "m", Worst: price.Cost(10, 100)}
				var shortStream Ticket
				g.Admit(ctx, &short, nov, &shortStream)
				g.Progress(&shortStream, usd.Tokens{Prompt: 10, Completion: 5}, price, nov)
				busy := Admission{KeyID: "key_busy", Model: "m", Worst: price.Cost(10, 10)}
				for i := range 100 { // 7 segments' worth, flushed as they go
					if i == 20 {
						g.Settle(&shortStream, usd.Tokens{Prompt: 10, Completion: 5}, price, nov)
					}
					var tk Ticket
					g.Admit(ctx, &busy, nov, &tk)
					g.Settle(&tk, usd.Tokens{Prompt: 1, Completion: 1}, price, nov)
					if i%10 == 9 {
						if err := g.Flush(ctx); err != nil {
							t.Fatal(err)
						}
					}
					if renew {
						g.RenewProgress(&stream) // a read that brought no text
					}
				}
				// Without renewing, the journal keeps every segment from the
				// stream's record on (all 7); renewed, it recycles as usual.
				if n := segments(); (renew && n > 3) || (!renew && n != 7) {
					t.Fatalf("%d segments after 103 flushed records of 15 a segment (renewed %v)", n, renew)
				}
				if settled {
					g.Settle(&stream, usd.Tokens{Prompt: 10, Completion: 9}, price, nov)
				}
				crash()

				want := Counts{Requests: 1, PromptTokens: 10, CompletionTokens: 9, Spent: price.Cost(10, 9)}
				wantBusy := Counts{Requests: 100, PromptTokens: 100, CompletionTokens: 100, Spent: 100 * price.Cost(1, 1)}
				wantShort := Counts{Requests: 1, PromptTokens: 10, CompletionTokens: 5, Spent: price.Cost(10, 5)}
				for _, what := range []string{"after a restart", "after a second restart"} {
					g, _ := start()
					if _, err := g.Replay(ctx); err != nil {
						t.Fatal(err)
					}
					for _, c := range []struct {
						key  string
						want Counts
					}{{"key_silent", want}, {"key_busy", wantBusy}, {"key_short", wantShort}} {
						r, err := g.Usage(ctx, c.key, nov)
						if err != nil {
							t.Fatal(err)
						}
						if r.Usage.Counts != c.want {
							t.Fatalf("%s: %s recorded %+v, want %+v", what, c.key, r.Usage.Counts, c.want)
						}
					}
					crash()
				}
			})
		}
	}
}
