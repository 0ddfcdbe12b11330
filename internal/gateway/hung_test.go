package gateway

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

// TestShutdownWithValkeyHung: a node whose Valkey hangs (SIGSTOP) while an
// admin request waits on it still shuts down at its deadline. The cut
// cancels the node's base context, the parent of the request's store call,
// so the handler returns and Shutdown reports nothing unsettled; then Close
// returns with every goroutine the node started joined, the store's client
// failing what still waits on the hung server. store.valkey.timeout is 10s,
// longer than the shutdown's deadline and the 6s it waits after its cut, so
// a call's own bound is not what ends it.
func TestShutdownWithValkeyHung(t *testing.T) {
	v := valkeytest.Start(t)
	yaml := fmt.Sprintf(`admin_key: %s
store: {path: %q, valkey: {addrs: [%q], timeout: 10s}}
upstreams: [{name: mock, base_url: "inproc://mock"}]
models: [{name: mock, routes: [{upstream: mock}]}]
plans: [{name: all, models: ["*"]}]
log: {level: error}
`, testAdminKey, t.TempDir(), v.Addr())
	cfg, err := config.Parse([]byte(yaml), "test.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	n, err := Open(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- n.Serve(ln) }()

	// One request answered first: the connection is then the server's, and
	// the next request on it is read even once Shutdown closed the listener.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, err := http.ReadResponse(r, nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}

	v.Pause(t)
	defer v.Resume(t)
	body := `{"name":"hung","plan":"all"}`
	fmt.Fprintf(conn, "POST /v1/keys HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		testAdminKey, len(body), body)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var shutdownErr error
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		shutdownErr = n.Shutdown(ctx)
		n.Close()
	}()
	// Generous: what is checked is that they return, not how fast.
	select {
	case <-closed:
	case <-time.After(2 * time.Minute):
		buf := make([]byte, 4<<20)
		t.Fatalf("Shutdown and Close still running 2m after the shutdown began:\n%s", buf[:runtime.Stack(buf, true)])
	}
	if shutdownErr != nil {
		t.Fatalf("shutdown with Valkey hung: %v; want every request's handler returned", shutdownErr)
	}
	// Less the goroutine above, which may not have ended yet.
	left := slices.DeleteFunc(startedByTokenhub(t), func(g string) bool { return strings.Contains(g, "TestShutdownWithValkeyHung") })
	if len(left) > 0 {
		t.Fatalf("%d goroutines tokenhub started still run after Close:\n\n%s", len(left), strings.Join(left, "\n\n"))
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	// The handler answered before the cut closed its connection, or the
	// connection was closed: never a key created against a hung store.
	if resp, err := http.ReadResponse(r, nil); err == nil && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("create key with Valkey hung: %d, want 503", resp.StatusCode)
	}
}
