package proxy

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// TestShutdownWaitsForStreams: Shutdown refuses new connections and closes
// idle keep-alive ones at once, but lets a stream finish.
func TestShutdownWaitsForStreams(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 10, ChunkInterval: 100 * time.Millisecond})
	g := startGateway(t, yamlModels(up), "")
	k := g.newKey("all")
	idle := dialRaw(t, g.url)
	if status, _ := idle.do(t, "GET", "/healthz", "", ""); status != 200 {
		t.Fatalf("healthz: %d", status)
	}
	resp := startStream(t, g.url, k.Key)
	defer resp.Body.Close()

	// Shutdown must return when the stream ends, not at its deadline: the
	// deadline is far (30s against a 1s stream) and checked by whether it
	// expired, not by the wall clock.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- g.node.Shutdown(ctx) }()
	idle.c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := idle.br.ReadByte(); err != io.EOF {
		t.Fatalf("idle keep-alive connection: %v, want it closed (EOF) at once", err)
	}
	eventually.True(t, "refusing new connections during the shutdown", func() bool {
		c, err := net.Dial("tcp", strings.TrimPrefix(g.url, "http://"))
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	b, err := io.ReadAll(resp.Body)
	if err != nil || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
		t.Fatalf("the stream did not finish: %v\n%s", err, b)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Shutdown waited for its deadline, not for the stream to end")
	}
}

// TestShutdownCutsStreamsAndSettlesThem: a stream still running at the
// deadline ends with an error event, and what it relayed is billed before
// the node's final flush, as a restart on the same store shows.
func TestShutdownCutsStreamsAndSettlesThem(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 100, ChunkInterval: 50 * time.Millisecond})
	dir := t.TempDir()
	g := startGateway(t, yamlModels(up), dir)
	k := g.newKey("all")
	resp := startStream(t, g.url, k.Key)
	defer resp.Body.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := g.node.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// A hang guard, not a speed claim: at the deadline streams are cut and
	// settled at once. Shutdown itself gives up cutSettle+cutWait after the
	// cut, so the guard sits well past that, where only a hang reaches
	// (5s, below Shutdown's own 6.3s, could fail a slow but correct cut).
	if d := time.Since(start); d > 300*time.Millisecond+cutSettle+cutWait+10*time.Second {
		t.Fatalf("Shutdown took %s with a 300ms deadline", d)
	}
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), `"code":"upstream_error"`) || strings.Contains(string(b), "[DONE]") {
		t.Fatalf("the cut stream did not end with an error event:\n%s", b)
	}
	g.stop()

	again := startGateway(t, yamlModels(up), dir)
	n, prompt, completion := again.usageOf(k.ID)
	if n != 1 || completion < 3 || completion > 20 || prompt == 0 {
		t.Fatalf("after the cut: %d requests, %d prompt and %d completion tokens billed; want the one stream's relayed part", n, prompt, completion)
	}
}
