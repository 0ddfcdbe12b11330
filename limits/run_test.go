package limits

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
	"github.com/tokenhub/tokenhub/limits/journal"
)

// TestSharedRunRecyclesTheJournal: on a Gate made by NewValkeyGate, Run
// (the only flusher a node has) lets the journal remove the segments whose
// records Valkey holds, as Flush does, so the journal's files stay bounded
// however long a node runs.
func TestSharedRunRecyclesTheJournal(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	jdir := t.TempDir()
	j, err := journal.Open(jdir, journal.Options{SegmentBytes: 16 * journal.RecordSize, Log: quiet}) // 15 records a segment
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	g := sharedGate(t, c, "runjournal", "a", nil, ValkeyOptions{Nodes: 1})
	g.UseJournal(j)
	ctx := context.Background()
	segments := func() int {
		m, _ := filepath.Glob(filepath.Join(jdir, "*.journal"))
		return len(m)
	}
	a := Admission{KeyID: "key_a", Model: "m", Limits: Limits{Monthly: 1_000_000}, Worst: price.Cost(1, 1)}
	for range 100 {
		var tk Ticket
		g.Admit(ctx, &a, time.Now(), &tk)
		if tk.Refusal != Admitted {
			t.Fatalf("refused %d", tk.Refusal)
		}
		g.Settle(&tk, usd.Tokens{Prompt: 1, Completion: 1}, price, time.Now())
	}
	if n := segments(); n != 7 {
		t.Fatalf("%d segments for 100 records of 15 a segment, want 7", n)
	}
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Go(func() { g.Run(runCtx, 10*time.Millisecond) })
	defer func() { stop(); running.Wait() }()
	eventually.True(t, "the journal recycled once Run recorded its usage", func() bool { return segments() == 1 })
	r, err := g.Usage(ctx, "key_a", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.Usage.Requests != 100 {
		t.Fatalf("Valkey holds %d requests, want 100", r.Usage.Requests)
	}
}

// TestSharedRunThroughAnOutage: Run keeps a node going while Valkey is
// stopped (its syncs and heartbeats back off), records what the node
// settled meanwhile once Valkey is back, exactly once, and returns when its
// context ends even with Valkey stopped again.
func TestSharedRunThroughAnOutage(t *testing.T) {
	srv := valkeytest.Start(t)
	c := valkeyClient(t, srv)
	g := sharedGate(t, c, "runout", "a", nil, ValkeyOptions{Timeout: time.Second, Backoff: 20 * time.Millisecond, IdleReturn: 40 * time.Millisecond})
	reader := sharedGate(t, c, "runout", "reader", nil, ValkeyOptions{Nodes: 1})
	ctx := context.Background()
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Go(func() { g.Run(runCtx, 10*time.Millisecond) })
	defer func() { stop(); running.Wait() }()

	a := Admission{KeyID: "k", Model: "m", Limits: Limits{RPM: 6000}}
	settle := func(n int) {
		for range n {
			var tk Ticket
			if g.Admit(ctx, &a, time.Now(), &tk); tk.Refusal != Admitted {
				t.Fatalf("refusal %d", tk.Refusal)
			}
			g.Settle(&tk, usd.Tokens{Prompt: 1000, Completion: 1000}, price, time.Now())
		}
	}
	recorded := func(want int64) func() bool {
		return func() bool {
			r, err := reader.Usage(ctx, "k", time.Now())
			return err == nil && r.Usage.Requests == want && r.Usage.Spent == usd.Pico(want)*price.Cost(1000, 1000)
		}
	}
	settle(1)
	eventually.True(t, "the request before the outage recorded", recorded(1))

	srv.Stop()
	settle(3)
	eventually.True(t, "the node backing off", func() bool { return sharedOf(g).isDown(sharedOf(g).clock()) })
	srv.Restart(t)
	eventually.True(t, "the 3 requests of the outage recorded", recorded(4))

	srv.Stop()
	stop()
	running.Wait() // Run ends though its final sync cannot reach Valkey
}

// TestOneNodeRunThroughAnOutage: a one-node Gate's Run keeps what the node
// settles while its ledger (here Valkey) is unreachable, records it once the
// ledger is back, and returns when its context ends even with the ledger
// unreachable again.
func TestOneNodeRunThroughAnOutage(t *testing.T) {
	srv := valkeytest.Start(t)
	ledger, err := NewValkeyLedger(valkeyClient(t, srv), "onerun", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	g := NewGate(ledger, quiet)
	ctx := context.Background()
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Go(func() { g.Run(runCtx, 10*time.Millisecond) })
	defer func() { stop(); running.Wait() }()

	a := Admission{KeyID: "k", Model: "m", Limits: Limits{RPM: 6000}}
	settle := func(n int) {
		for range n {
			var tk Ticket
			if g.Admit(ctx, &a, nov, &tk); tk.Refusal != Admitted {
				t.Fatalf("refusal %d", tk.Refusal)
			}
			g.Settle(&tk, usd.Tokens{Prompt: 1000, Completion: 1000}, price, nov)
		}
	}
	recorded := func(want int64) func() bool {
		return func() bool {
			u, err := ledger.Load(ctx, "k", MonthOf(nov))
			return err == nil && u.Requests == want && u.Spent == usd.Pico(want)*price.Cost(1000, 1000)
		}
	}
	settle(1)
	eventually.True(t, "the request before the outage recorded", recorded(1))

	srv.Stop()
	settle(3)
	eventually.True(t, "the ledger unreachable", func() bool {
		_, err := g.Usage(ctx, "k", nov)
		return err != nil
	})
	srv.Restart(t)
	eventually.True(t, "the 3 requests of the outage recorded", recorded(4))

	srv.Stop()
	stop()
	running.Wait() // Run ends though its final flush cannot reach the ledger
}
