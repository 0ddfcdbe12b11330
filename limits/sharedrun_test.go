package limits

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/eventually"
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
		g.Settle(&tk, 1, 1, price, time.Now())
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
