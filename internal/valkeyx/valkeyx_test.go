package valkeyx_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/tokenhub/tokenhub/internal/valkeytest"
	"github.com/tokenhub/tokenhub/internal/valkeyx"
)

func TestWithDefaults(t *testing.T) {
	f := func(in, want valkeyx.Options) {
		t.Helper()
		got := in.WithDefaults()
		if got.Prefix != want.Prefix || got.Timeout != want.Timeout {
			t.Fatalf("%+v.WithDefaults() = prefix %q timeout %v, want %q %v", in, got.Prefix, got.Timeout, want.Prefix, want.Timeout)
		}
	}
	f(valkeyx.Options{}, valkeyx.Options{Prefix: "tokenhub", Timeout: 500 * time.Millisecond})
	f(valkeyx.Options{Prefix: "eu", Timeout: time.Second}, valkeyx.Options{Prefix: "eu", Timeout: time.Second})
	// A negative timeout is kept, for Check to refuse, not silently replaced.
	f(valkeyx.Options{Timeout: -time.Second}, valkeyx.Options{Prefix: "tokenhub", Timeout: -time.Second})
}

func TestCheck(t *testing.T) {
	f := func(prefix string, timeout time.Duration, want string) {
		t.Helper()
		err := valkeyx.Check(prefix, timeout)
		if want == "" {
			if err != nil {
				t.Fatalf("Check(%q, %v) = %v, want nil", prefix, timeout, err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Check(%q, %v) = %v, want it to mention %q", prefix, timeout, err, want)
		}
	}
	f("tokenhub", time.Second, "")
	f("a.b-c_d", 0, "")
	f("", time.Second, `prefix ""`)
	// A brace would end the hash tag early and scatter a store over slots.
	f("{x}", time.Second, `prefix "{x}"`)
	f("a:b", time.Second, `prefix "a:b"`)
	f("tokenhub", -time.Second, "negative")
}

func TestTag(t *testing.T) {
	if got := valkeyx.Tag("eu"); got != "{eu}" {
		t.Fatalf(`Tag("eu") = %q, want "{eu}"`, got)
	}
}

// TestOpenObserves checks that the observe hook sees every command with its
// outcome: a nil reply is an answer, a wrong-type reply an error.
func TestOpenObserves(t *testing.T) {
	srv := valkeytest.Start(t)
	var mu sync.Mutex
	var calls int
	var errs []error
	c, err := valkeyx.Open(context.Background(), valkeyx.Options{
		Addrs: []string{srv.Addr()},
		Observe: func(d time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if err != nil {
				errs = append(errs, err)
			}
		},
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, c.B().Set().Key("s").Value("v").Build()).Error(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	c.Do(ctx, c.B().Get().Key("missing").Build())
	c.DoMulti(ctx, c.B().Get().Key("s").Build(), c.B().Hget().Key("s").Field("f").Build())
	mu.Lock()
	defer mu.Unlock()
	// The ping of Open, SET, GET and the pipeline.
	if calls != 4 {
		t.Fatalf("observed %d calls, want 4", calls)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "WRONGTYPE") {
		t.Fatalf("observed errors %v, want one WRONGTYPE (the pipeline's HGET of a string)", errs)
	}
}

func TestOpenRefuses(t *testing.T) {
	f := func(o valkeyx.Options, want string) {
		t.Helper()
		c, err := valkeyx.Open(context.Background(), o)
		if err == nil {
			c.Close()
			t.Fatalf("Open(%+v) succeeded, want an error", o)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("Open(%+v) = %q, want it to mention %q", o, err, want)
		}
	}
	f(valkeyx.Options{}, "no addresses")
	f(valkeyx.Options{Addrs: []string{"127.0.0.1:1"}, Prefix: "a/b"}, `prefix "a/b"`)
	f(valkeyx.Options{Addrs: []string{"127.0.0.1:1"}, Timeout: -time.Second}, "negative")
	f(valkeyx.Options{Addrs: []string{"no-port"}, TLS: true}, `address "no-port"`)
}

// TestCallGivesUpWhenCancelled: a command waiting on a hung server (SIGSTOP)
// returns when its context is cancelled, long before its deadline. valkey-go
// sends a lone command with a deadline on the caller's goroutine and waits
// out the deadline whatever the context says, unless the client pipelines
// every command: a node's shutdown cuts its calls by cancelling them. (A
// connection's dial and handshake take no context; they are bounded by the
// connection timeout, so the calls here go over connections already made.)
func TestCallGivesUpWhenCancelled(t *testing.T) {
	srv := valkeytest.Start(t)
	c, err := valkeyx.Open(context.Background(), valkeyx.Options{Addrs: []string{srv.Addr()}, Timeout: time.Hour})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	// valkey-go spreads keyed commands over a few connections at random and
	// dials each on its first use: a hundred calls dial them all (a 1 in
	// 10^7 chance to miss one of four).
	for range 100 {
		if err := c.Do(context.Background(), c.B().Get().Key("k").Build()).Error(); err != nil && !valkey.IsValkeyNil(err) {
			t.Fatal(err)
		}
	}
	srv.Pause(t)
	defer srv.Resume(t)
	f := func(name string, call func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- call(ctx) }()
		// Cancelled once the call is most likely waiting for its reply; if
		// it had not started yet, it fails at once all the same.
		stop := time.AfterFunc(100*time.Millisecond, cancel)
		defer stop.Stop()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s on a hung server, cancelled: %v, want context.Canceled", name, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s on a hung server still waiting a minute after its context was cancelled", name)
		}
	}
	f("GET", func(ctx context.Context) error { return c.Do(ctx, c.B().Get().Key("k").Build()).Error() })
	f("a pipeline", func(ctx context.Context) error {
		return c.DoMulti(ctx, c.B().Get().Key("k").Build(), c.B().Get().Key("j").Build())[0].Error()
	})
}
