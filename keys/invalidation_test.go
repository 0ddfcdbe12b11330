package keys

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/eventually"
)

// lossyPubSub delivers published messages to its subscriber, or silently
// drops them while lossy is set: a subscription that looks alive but lags or
// loses messages, which no real server can be made to do on demand.
type lossyPubSub struct {
	mu    sync.Mutex
	subs  []chan string
	lossy atomic.Bool
}

func (p *lossyPubSub) Publish(_ context.Context, msg string) error {
	if p.lossy.Load() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.subs {
		select {
		case c <- msg:
		default:
		}
	}
	return nil
}

func (p *lossyPubSub) Subscribe(ctx context.Context, ready func(), handle func(string)) error {
	c := make(chan string, 64)
	p.mu.Lock()
	p.subs = append(p.subs, c)
	p.mu.Unlock()
	ready()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-c:
			handle(m)
		}
	}
}

// TestInvalidatorBoundsStalenessWhenMessagesAreLost: once heartbeats stop
// arriving, entries older than StaleAfter are re-read, so a change whose
// message was lost still takes effect.
func TestInvalidatorBoundsStalenessWhenMessagesAreLost(t *testing.T) {
	store, err := OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	reg, err := NewRegistry(store, RegistryOptions{MaxKeys: 1000, NegativeTTL: testNegativeTTL, StaleIfError: testStaleIfError})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	ctx := context.Background()
	if err := reg.PutPlan(ctx, &Plan{Name: "p", Models: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	k, secret, err := reg.CreateKey(ctx, KeySpec{Name: "k", Plan: "p"})
	if err != nil {
		t.Fatal(err)
	}

	ps := &lossyPubSub{}
	iv, err := NewInvalidator(reg, ps, InvalidatorOptions{
		Heartbeat: 20 * time.Millisecond, StaleAfter: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go iv.Run(runCtx)
	waitFor(t, iv.Healthy, "healthy")

	if _, _, err := reg.Authenticate(ctx, []byte(secret)); err != nil {
		t.Fatal(err)
	}
	// Another node revokes the key; its message is lost.
	ps.lossy.Store(true)
	revoked := k.Clone()
	revoked.RevokedAt = time.Now()
	if err := store.PutKey(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !iv.Healthy() }, "unhealthy after heartbeats stop")
	// The bound is StaleAfter exactly: checked on the Registry, not by the
	// wall clock, which a loaded machine stretches.
	if got := time.Duration(reg.maxAge.Load()); got != 50*time.Millisecond {
		t.Fatalf("cache age bound %v while unhealthy, want StaleAfter (50ms)", got)
	}
	// While healthy, entries never go stale (the bound is 0), so the
	// revocation is seen at all only because of that bound.
	waitFor(t, func() bool {
		_, _, err := reg.Authenticate(ctx, []byte(secret))
		return errors.Is(err, ErrRevoked)
	}, "revocation seen")

	// Messages flow again: healthy, and entries live until evicted.
	ps.lossy.Store(false)
	waitFor(t, iv.Healthy, "healthy again")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	eventually.True(t, what, cond)
}
