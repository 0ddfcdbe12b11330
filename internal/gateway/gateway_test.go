package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/otlptest"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

const testAdminKey = "test-admin-key-0123456789abcdefghijklmnopqrstuvwxyz"

// openServe opens a node from yaml, serves it on 127.0.0.1:0, makes one
// streamed chat request through the built-in mock, and then shuts the node
// down and closes it, as cmd/tokenhub does.
func openServe(t *testing.T, yaml string) {
	t.Helper()
	cfg, err := config.Parse([]byte("admin_key: "+testAdminKey+"\n"+yaml), "test.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	n, err := Open(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// A check that fails below still shuts the node down and closes it
	// (t.Fatal runs defers): its goroutines must not be counted against
	// the next test's.
	closed := false
	defer func() {
		if !closed {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = n.Shutdown(ctx) // the test has failed already
			n.Close()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- n.Serve(ln) }()
	url := "http://" + ln.Addr().String()

	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	hc := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	req, err := http.NewRequest("POST", url+"/v1/keys", bytes.NewReader([]byte(`{"name":"leak","plan":"all"}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ Key string }
	err = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create key: status %d, %v", resp.StatusCode, err)
	}

	client := openai.NewClient(option.WithBaseURL(url+"/v1"), option.WithAPIKey(created.Key), option.WithHTTPClient(hc), option.WithMaxRetries(0))
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model:    "mock",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	chunks := 0
	for stream.Next() {
		chunks++
	}
	if err := stream.Err(); err != nil || chunks == 0 {
		t.Fatalf("stream: %d chunks, %v", chunks, err)
	}
	stream.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	closed = true
	n.Close()
}

// startedByTokenhub returns the stacks of the goroutines that tokenhub's
// own code started (a go statement in this module, not in a library's pool
// or in the test's HTTP client) and that still wait on something: the ones
// a node must join before Close returns.
//
// A goroutine that Close joined may still be seen once, runnable: Go has
// no join at a goroutine's exit, so Close waits for its last signal (a
// deferred close or Done) and the scheduler runs its final return later.
// On a loaded machine that was seen (the built-in mock's server, runnable
// at its last line, right after Close). Those are polled until they end,
// with the shared deadline; a goroutine blocked in a receive, select or
// read after Close is a leak at once.
func startedByTokenhub(t *testing.T) []string {
	t.Helper()
	var blocked []string
	eventually.True(t, "the goroutines Close joined have returned", func() bool {
		buf := make([]byte, 4<<20)
		blocked = blocked[:0]
		finishing := false
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if !strings.Contains(g, "created by github.com/tokenhub/tokenhub/") ||
				strings.Contains(g, "created by github.com/tokenhub/tokenhub/internal/valkeytest") {
				continue
			}
			if strings.Contains(g, " [runnable]:") || strings.Contains(g, " [running]:") {
				finishing = true
				continue
			}
			blocked = append(blocked, g)
		}
		return len(blocked) > 0 || !finishing
	})
	return blocked
}

// TestCloseJoinsGoroutines: a node opened, used and closed again and again
// leaves no goroutine behind. Those tokenhub starts (the gate's flush loop,
// the invalidator, the store watcher, the access log writer, the built-in
// mock's server, the journal's sync loop) are joined: none waits on
// anything when Close returns, counted then, since one that ends "soon
// after" is one Close did not wait for; only one past its join, runnable
// on its way out, is given time to return (see startedByTokenhub). Those
// fasthttp's pools start end on their own
// once their connections are closed, so the process's count is polled back
// to where it started.
func TestCloseJoinsGoroutines(t *testing.T) {
	const models = `upstreams: [{name: mock, base_url: "inproc://mock"}]
models: [{name: mock, routes: [{upstream: mock}]}]
plans: [{name: all, models: ["*"]}]
log: {level: error, access: {enabled: true}}
`
	v := valkeytest.Start(t)
	col := otlptest.Start(t)
	for _, tc := range []struct {
		name  string
		store func(dir string, i int) string
	}{
		{"embedded", func(dir string, _ int) string { return fmt.Sprintf("store: {path: %q}\n", dir) }},
		// The trace exporter's goroutine, and its connections to the
		// collector; Close flushes the node's spans before it returns.
		{"traced", func(dir string, _ int) string {
			return fmt.Sprintf("store: {path: %q}\ntelemetry: {traces: {endpoint: %q}}\n", dir, col.URL)
		}},
		{"valkey", func(dir string, i int) string {
			return fmt.Sprintf("store: {path: %q, valkey: {addrs: [%q], prefix: leak%d, timeout: 10s}}\n", dir, v.Addr(), i)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One round first: what a process starts once (fasthttp's date
			// ticker, connection pools) is not a node's leak.
			openServe(t, tc.store(t.TempDir(), 0)+models)
			start := runtime.NumGoroutine()
			const rounds = 3
			for i := 1; i <= rounds; i++ {
				spans := len(col.Spans())
				openServe(t, tc.store(t.TempDir(), i)+models)
				if got := len(col.Spans()) - spans; tc.name == "traced" && got != 1 {
					t.Fatalf("round %d: %d spans at the collector when Close returned, want the request's 1", i, got)
				}
				if left := startedByTokenhub(t); len(left) > 0 {
					t.Fatalf("round %d: %d goroutines tokenhub started still run after Close:\n\n%s", i, len(left), strings.Join(left, "\n\n"))
				}
			}
			eventually.True(t, fmt.Sprintf("back to %d goroutines after %d nodes opened and closed", start, rounds), func() bool {
				return runtime.NumGoroutine() <= start
			})
		})
	}
}
