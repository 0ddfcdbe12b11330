//go:build !race

package proxy

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

func TestAllocsServeChat(t *testing.T) {
	g := startGateway(t, yamlModels(startUpstream(t, staticChat)), "")
	key := g.newKey("all").Key
	for _, model := range []string{"mock", "alias"} { // as is, and renamed for the upstream
		body := bytes.Replace(benchBody, []byte(`"gpt-4o-mini"`), []byte(`"`+model+`"`), 1)
		// With an Accept, as the SDKs send, which is forwarded.
		req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\nAccept: application/json\r\n" +
			"Authorization: Bearer " + key + "\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + string(body))
		c := newFakeConn(g.srv)
		serve := func() {
			c.reset(req)
			if err := g.srv.http.ServeConn(c); err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(c.status(), []byte("HTTP/1.1 200")) || !bytes.Equal(c.body(), staticChatBody) {
				t.Fatalf("answer: %s", c.w.Bytes())
			}
			if n := g.srv.bodies.inUse(); n != 0 {
				t.Fatalf("%d body bytes still reserved after the request", n)
			}
		}
		warmServe(t, g, serve)
		if n := testing.AllocsPerRun(2000, serve); n != 0 {
			t.Errorf("model %s: %v allocations per request, want 0", model, n)
		}
	}
}

// TestAllocsValkeyHotPath: with the shared store, a cached key costs no Valkey
// command and no allocation; the server's own command counters prove the
// first (only heartbeats, PUBLISH, may run meanwhile).
func TestAllocsValkeyHotPath(t *testing.T) {
	v := valkeytest.Start(t)
	up := startUpstream(t, staticChat)
	g := startNode(t, fmt.Sprintf(`
store: {path: %s, valkey: {addrs: [%q], timeout: 10s}}
upstreams: [{name: up, base_url: %q}]
models: [{name: mock, routes: [{upstream: up}]}]
plans: [{name: all, models: ["*"]}]
`, t.TempDir(), v.Addr(), up))
	key := g.newKey("all").Key
	g.warm(t, key)
	req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\n" +
		"Authorization: Bearer " + key + "\r\nContent-Length: " + itoa(len(chatBody)) + "\r\n\r\n" + string(chatBody))
	c := newFakeConn(g.srv)
	serve := func() {
		c.reset(req)
		if err := g.srv.http.ServeConn(c); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(c.status(), []byte("HTTP/1.1 200")) {
			t.Fatalf("answer: %s", c.w.Bytes())
		}
	}
	for range 200 {
		serve()
	}
	before := storeCommands(t, v)
	if n := testing.AllocsPerRun(2000, serve); n != 0 {
		t.Errorf("%v allocations per request on the Valkey store, want 0", n)
	}
	if after := storeCommands(t, v); after != before {
		t.Fatalf("Valkey ran store commands during cache hits:\nbefore %s\nafter  %s", before, after)
	}
}

// storeCommands is the server's call counts of every command but the
// invalidation channel's (PUBLISH, SUBSCRIBE) and this probe's own INFO.
func storeCommands(t *testing.T, v *valkeytest.Server) string {
	var keep []string
	for _, line := range strings.Split(v.Do(t, "INFO", "commandstats"), "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		switch name {
		case "cmdstat_publish", "cmdstat_subscribe", "cmdstat_info", "cmdstat_ping", "cmdstat_hello", "cmdstat_client|setinfo", "cmdstat_client|setname":
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		keep = append(keep, name+"="+calls)
	}
	return strings.Join(keep, " ")
}

// warmServe serves a request until pools, upstream connections and the key cache
// are warm. ristretto applies a set when its goroutine gets to it: so it
// waits for a request answered from the cache rather than sleeping for one.
func warmServe(t *testing.T, g *gateway, serve func()) {
	t.Helper()
	for range 200 {
		serve()
	}
	eventually.True(t, "the key served from the cache", func() bool {
		hits := g.node.Registry.Stats().Hits
		serve()
		return g.node.Registry.Stats().Hits > hits
	})
}
