package proxy

import (
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

// propagationBound is the promise: a change on one node holds on every node
// within this time.
const propagationBound = 5 * time.Second

// valkeyNodes starts n gateways sharing the Valkey at addr under a prefix of
// their own.
func valkeyNodes(t *testing.T, addr string, n int) []*gateway {
	t.Helper()
	return valkeyNodesAt(t, slices.Repeat([]string{addr}, n))
}

// valkeyNodesAt starts one gateway per address, all under one prefix.
func valkeyNodesAt(t *testing.T, addrs []string) []*gateway {
	t.Helper()
	return valkeyNodesWith(t, addrs, "")
}

// valkeyNodesWith is valkeyNodesAt with more of the config file, such as a
// cache block. The store timeout is a generous 2s: under a loaded machine a
// 300ms one failed node start-up (seeding plans, the first ping), which is
// not what these tests check; keys' TestValkeyOutage owns the timeout itself.
func valkeyNodesWith(t *testing.T, addrs []string, more string) []*gateway {
	t.Helper()
	prefix := fmt.Sprintf("t%d", time.Now().UnixNano())
	var nodes []*gateway
	for _, a := range addrs {
		nodes = append(nodes, startNode(t, fmt.Sprintf(`%s
store:
  path: %s
  valkey: {addrs: [%q], prefix: %s, timeout: 2s}
upstreams: [{name: mock, base_url: "inproc://mock"}]
models:
  - {name: mock, routes: [{upstream: mock}]}
  - {name: other, routes: [{upstream: mock}]}
plans:
  - {name: all, models: ["*"]}
`, more, t.TempDir(), a, prefix)))
	}
	return nodes
}

// warm makes sure g has key cached: the invalidation that announces a new key
// can reach g while its first request fills the cache, which then (rightly)
// drops the fill; so it asks until a request is answered from the cache
// (the Registry counts a hit), rather than sleeping for the message.
func (g *gateway) warm(t *testing.T, key string) { g.warmModel(t, key, "mock") }

func (g *gateway) warmModel(t *testing.T, key, model string) {
	t.Helper()
	eventually.True(t, "the key cached on node "+g.url, func() bool {
		hits := g.node.Registry.Stats().Hits
		if st := g.answer(key, model); st != 200 {
			t.Fatalf("node %s: key answered %d for %s", g.url, st, model)
		}
		return g.node.Registry.Stats().Hits > hits
	})
}

// answer sends a one-token chat for model with key to g and returns the status.
func (g *gateway) answer(key, model string) int {
	status, _, _ := g.do("POST", "/v1/chat/completions", key,
		[]byte(`{"model":"`+model+`","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`))
	return status
}

// within polls g until it answers want for key and model, and returns how long
// that took after since; it fails the test past the promise's bound
// (propagationBound from since), never a tighter one.
func within(t *testing.T, g *gateway, since time.Time, key, model string, want int) time.Duration {
	t.Helper()
	eventually.Within(t, propagationBound-time.Since(since),
		fmt.Sprintf("node %s answering %d for %s", g.url, want, model),
		func() bool { return g.answer(key, model) == want })
	return time.Since(since)
}

func percentiles(d []time.Duration) string {
	slices.Sort(d)
	p := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return fmt.Sprintf("n=%d p50=%s p99=%s max=%s", len(d), p(0.50), p(0.99), d[len(d)-1])
}

// TestChangesReachEveryNode revokes, rotates and narrows plans on node A and
// measures when nodes B and C first refuse: the time from the API call's
// return to the first refusal elsewhere.
func TestChangesReachEveryNode(t *testing.T) {
	v := valkeytest.Start(t)
	nodes := valkeyNodes(t, v.Addr(), 3)
	a, others := nodes[0], nodes[1:]
	const trials = 30
	var revoke, rotate, plan []time.Duration
	for i := range trials {
		k := a.newKey("all")
		for _, g := range others { // cache the key everywhere first
			g.warm(t, k.Key)
		}
		if i%2 == 0 {
			a.admin("DELETE", "/v1/keys/"+k.ID, nil, http.StatusOK, nil)
			t0 := time.Now()
			for _, g := range others {
				revoke = append(revoke, within(t, g, t0, k.Key, "mock", 401))
			}
		} else {
			a.admin("POST", "/v1/keys/"+k.ID+"/rotate", nil, http.StatusOK, nil)
			t0 := time.Now()
			for _, g := range others {
				rotate = append(rotate, within(t, g, t0, k.Key, "mock", 401))
			}
		}

		name := fmt.Sprintf("narrowing-%d", i)
		a.admin("PUT", "/v1/plans/"+name, map[string]any{"models": []string{"mock", "other"}}, http.StatusOK, nil)
		pk := a.newKey(name)
		for _, g := range others {
			g.warmModel(t, pk.Key, "other")
		}
		a.admin("PUT", "/v1/plans/"+name, map[string]any{"models": []string{"mock"}}, http.StatusOK, nil)
		t0 := time.Now()
		for _, g := range others {
			plan = append(plan, within(t, g, t0, pk.Key, "other", 403))
		}
	}
	t.Logf("revoke on A → 401 on B/C: %s", percentiles(revoke))
	t.Logf("rotate on A → old secret 401 on B/C: %s", percentiles(rotate))
	t.Logf("model removed from plan on A → 403 on B/C: %s", percentiles(plan))
}

// TestPubSubKilled kills every subscriber connection and revokes at once, so
// the revocation's message is lost to the other nodes: they must still refuse
// the key within the bound.
func TestPubSubKilled(t *testing.T) {
	v := valkeytest.Start(t)
	nodes := valkeyNodes(t, v.Addr(), 2)
	a, b := nodes[0], nodes[1]
	var waits []time.Duration
	for range 5 {
		k := a.newKey("all")
		b.warm(t, k.Key)
		v.Do(t, "CLIENT", "KILL", "TYPE", "pubsub")
		a.admin("DELETE", "/v1/keys/"+k.ID, nil, http.StatusOK, nil)
		waits = append(waits, within(t, b, time.Now(), k.Key, "mock", 401))
	}
	t.Logf("revoke with pub/sub killed → 401 on B: %s", percentiles(waits))
}

// TestValkeyOutage stops Valkey under load: cached keys keep working, keys
// the node has not seen get a prompt 503, nothing piles up, and everything
// recovers when Valkey is back.
func TestValkeyOutage(t *testing.T) {
	v := valkeytest.Start(t)
	nodes := valkeyNodes(t, v.Addr(), 2)
	a, b := nodes[0], nodes[1]
	k := a.newKey("all")
	fresh := a.newKey("all") // never used: not in any cache
	for _, g := range nodes {
		g.warm(t, k.Key)
	}
	goroutines := runtime.NumGoroutine()

	v.Stop()
	var served, failed atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Second)
	for _, g := range nodes {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					if g.answer(k.Key, "mock") == 200 {
						served.Add(1)
					} else {
						failed.Add(1)
					}
				}
			}()
		}
	}
	t0 := time.Now()
	status, hdr, body := b.do("POST", "/v1/chat/completions", fresh.Key, []byte(`{"model":"mock","messages":[]}`))
	wantErrorBody(t, status, hdr, body, 503, "store_unavailable")
	// A hang guard, not a speed claim: the refusal waits at most one
	// store.valkey.timeout (2s here; keys' TestValkeyOutage proves that
	// bound by its cause), and this is ten times that.
	if d := time.Since(t0); d > 20*time.Second {
		t.Fatalf("unknown key during the outage took %s to refuse", d)
	}
	wg.Wait()
	if failed.Load() != 0 || served.Load() == 0 {
		t.Fatalf("cached key during the outage: %d served, %d failed", served.Load(), failed.Load())
	}
	if n := runtime.NumGoroutine(); n > goroutines+50 {
		t.Fatalf("goroutines grew from %d to %d during the outage", goroutines, n)
	}

	v.Restart(t)
	// Not the propagation promise: how soon Valkey is reachable again after
	// a restart is the client's redial, so this waits generously.
	eventually.True(t, "the new key answering on node B once Valkey is back", func() bool {
		return b.answer(fresh.Key, "mock") == 200
	})
	a.admin("DELETE", "/v1/keys/"+k.ID, nil, http.StatusOK, nil)
	t0 = time.Now()
	for _, g := range nodes {
		within(t, g, t0, k.Key, "mock", 401)
	}
}

// TestPartitionedNodeCatchesUp cuts one node off Valkey while another revokes
// a key, on nodes whose operator chose availability over the 5-second
// promise (a long cache.stale_if_error): the cut-off node keeps serving its
// cache (it cannot know), and once it reaches Valkey again it refuses the
// key within the bound. With the default, it would refuse it at once (see
// TestPartitionedNodeKeepsRevocationPromise).
func TestPartitionedNodeCatchesUp(t *testing.T) {
	v := valkeytest.Start(t)
	link := startRelay(t, v.Addr())
	nodes := valkeyNodesWith(t, []string{v.Addr(), link.Addr()}, "cache: {stale_if_error: 10m}")
	a, b := nodes[0], nodes[1]
	k := a.newKey("all")
	b.warm(t, k.Key)

	link.Cut()
	a.admin("DELETE", "/v1/keys/"+k.ID, nil, http.StatusOK, nil)
	time.Sleep(3 * time.Second) // well past stale_after: B re-reads, fails, serves its cache
	if st := b.answer(k.Key, "mock"); st != 200 {
		t.Fatalf("cut-off node answered %d for its cached key, want 200 (stale_if_error)", st)
	}
	link.Restore()
	d := within(t, b, time.Now(), k.Key, "mock", 401)
	t.Logf("partitioned node refused the key revoked meanwhile %s after reconnecting", d)
}
