package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

// TestReadyzEmbedded: the embedded store is local, so a serving node is
// ready; once shutting down it is not, so load balancers move on.
func TestReadyzEmbedded(t *testing.T) {
	g := startGateway(t, reloadModels, "")
	status, _, b := g.do("GET", "/readyz", "", nil)
	if status != 200 || string(b) != `{"status":"ready"}` {
		t.Fatalf("readyz: %d %s", status, b)
	}
	g.srv.draining.Store(true)
	var ctx fasthttp.RequestCtx
	g.srv.readyz(&ctx)
	if ctx.Response.StatusCode() != 503 || !containsAll(string(ctx.Response.Body()), `"code":"shutting_down"`, `"type":"server_error"`) {
		t.Fatalf("readyz while shutting down: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// TestReadyzValkeyOutage: with Valkey down the node stays ready while its
// cached keys may be served (cache.stale_if_error), then answers 503
// store_unavailable, and is ready again once Valkey is back.
func TestReadyzValkeyOutage(t *testing.T) {
	v := valkeytest.Start(t)
	g := startNode(t, fmt.Sprintf(`
store: {path: %s, valkey: {addrs: [%q], timeout: 200ms}}
cache: {stale_if_error: 2s}
upstreams: [{name: mock, base_url: "inproc://mock"}]
models: [{name: mock, routes: [{upstream: mock}]}]
plans: [{name: all, models: ["*"]}]
`, t.TempDir(), v.Addr()))
	readyz := func() (int, string) {
		status, _, b := g.do("GET", "/readyz", "", nil)
		return status, string(b)
	}
	until := func(within time.Duration, wantStatus int, want string) time.Time {
		t.Helper()
		eventually.Within(t, within, fmt.Sprintf("readyz answering %d with %s", wantStatus, want), func() bool {
			status, body := readyz()
			return status == wantStatus && containsAll(body, want)
		})
		return time.Now()
	}
	until(time.Second, http.StatusOK, `{"status":"ready"}`)
	v.Stop()
	lost := until(5*time.Second, http.StatusOK, `{"status":"ready","store":"unreachable"}`)
	gone := until(5*time.Second, http.StatusServiceUnavailable, `"code":"store_unavailable"`)
	if d := gone.Sub(lost); d < 1500*time.Millisecond {
		t.Fatalf("not ready %s after the store was found unreachable; want about stale_if_error (2s)", d)
	}
	v.Restart(t)
	until(10*time.Second, http.StatusOK, `{"status":"ready"}`)
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
