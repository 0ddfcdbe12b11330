package tracing

import (
	"context"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/otlptest"
)

// drops counts Options.Dropped's calls by reason.
type drops struct {
	mu sync.Mutex
	n  map[string]int
}

func (d *drops) add(reason string, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == nil {
		d.n = make(map[string]int)
	}
	d.n[reason] += n
}

func (d *drops) get(reason string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[reason]
}

func newTracer(t *testing.T, c config.Traces, o Options) *Tracer {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	tr, err := New(c, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tr.Shutdown(ctx)
	})
	return tr
}

func TestNewIsNilWithoutEndpoint(t *testing.T) {
	tr, err := New(config.Traces{Sample: 1}, Options{})
	if tr != nil || err != nil {
		t.Fatalf("%v %v", tr, err)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestSpanReachesCollector: a span sent is exported as OTLP/HTTP protobuf
// with the ids Begin chose, the client's span as parent, its times and its
// attributes, and the export carries the configured headers.
func TestSpanReachesCollector(t *testing.T) {
	col := otlptest.Start(t)
	tr := newTracer(t, config.Traces{Endpoint: col.URL + "/", Headers: map[string]string{"Authorization": "Bearer otlp-token"}, Sample: 1},
		Options{InstanceID: "node-1"})
	const trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	start := time.Unix(1700000000, 0)
	s := Span{Context: tr.Begin([][]byte{[]byte("00-" + trace + "-" + parent + "-01")}), Start: start, End: start.Add(1500 * time.Millisecond),
		Endpoint: "chat", Operation: "chat", Model: "gpt", RouteModel: "gpt-up", Provider: "openai", Upstream: "up1",
		KeyID: "key_1", Plan: "pro", Status: 502, GatewayDur: 2 * time.Millisecond, UpstreamDur: 1498 * time.Millisecond}
	s.RequestIDN = uint8(copy(s.RequestID[:], "req-1"))
	tr.Send(&s)
	eventually.True(t, "one span at the collector", func() bool { return len(col.Spans()) == 1 })
	got := col.Spans()[0]
	if got.TraceID != trace || got.ParentSpanID != parent || got.SpanID != hex.EncodeToString(s.Context.SpanID[:]) {
		t.Fatalf("ids %s %s %s, want %s %s %x", got.TraceID, got.ParentSpanID, got.SpanID, trace, parent, s.Context.SpanID)
	}
	if got.Name != "chat gpt" || got.Kind != tracepb.Span_SPAN_KIND_SERVER || got.StatusCode != tracepb.Status_STATUS_CODE_ERROR ||
		got.StartUnixNano != uint64(start.UnixNano()) || got.EndUnixNano != uint64(start.Add(1500*time.Millisecond).UnixNano()) {
		t.Fatalf("span %+v", got)
	}
	want := map[string]any{
		"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt", "gen_ai.response.model": "gpt-up",
		"gen_ai.provider.name": "openai", "tokenhub.upstream": "up1", "tokenhub.key_id": "key_1", "tokenhub.plan": "pro",
		"http.response.status_code": int64(502), "error.type": "502", "tokenhub.request_id": "req-1", "tokenhub.endpoint": "chat",
		"tokenhub.stream": false, "tokenhub.gateway.duration_ms": 2.0, "tokenhub.upstream.duration_ms": 1498.0,
	}
	for k, v := range want {
		if got.Attrs[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got.Attrs[k], v)
		}
	}
	if len(got.Attrs) != len(want) {
		t.Errorf("attributes %v, want exactly %v", got.Attrs, want)
	}
	if got.Resource["service.name"] != "tokenhub" || got.Resource["service.instance.id"] != "node-1" {
		t.Errorf("resource %v", got.Resource)
	}
	if h := col.Headers()[0].Get("Authorization"); h != "Bearer otlp-token" {
		t.Errorf("export's Authorization %q", h)
	}
}

// TestDeadCollectorDropsAndCounts: with the collector refusing connections,
// Send never blocks, and every span is counted as dropped, by the export
// that failed or by the full queue.
func TestDeadCollectorDropsAndCounts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	var d drops
	tr := newTracer(t, config.Traces{Endpoint: url, Sample: 1}, Options{Dropped: d.add})
	const n = 3000
	s := Span{Context: tr.Begin(nil), Operation: "chat", Start: time.Unix(1, 0), End: time.Unix(2, 0)}
	for range n {
		tr.Send(&s)
	}
	eventually.True(t, "every span counted as dropped", func() bool { return d.get(DropExportFailed)+d.get(DropQueueFull) == n })
}

// TestHungCollectorFillsTheQueue: a collector that never answers holds the
// exporter in its export; Send goes on without waiting, dropping what the
// queue cannot hold, and Shutdown still returns by its deadline.
func TestHungCollectorFillsTheQueue(t *testing.T) {
	release := make(chan struct{})
	var posts atomic.Int64
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(release)
	var d drops
	tr, err := New(config.Traces{Endpoint: hung.URL, Sample: 1}, Options{Dropped: d.add, QueueSize: 8, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s := Span{Context: tr.Begin(nil), Operation: "chat", Start: time.Unix(1, 0), End: time.Unix(2, 0)}
	// A first span reaches the collector, which holds its export.
	tr.Send(&s)
	eventually.True(t, "the collector holding an export", func() bool { return posts.Load() > 0 })
	const n = 1000
	for range n {
		tr.Send(&s)
	}
	// The exporter is stuck: of the n, at most the queue's 8 are held.
	if got := d.get(DropQueueFull); got < n-8 {
		t.Fatalf("%d of %d spans dropped with a queue of 8", got, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := tr.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown with an export hung and a deadline passed reported no error")
	}
	// The export it aborted and the spans it drained count as dropped.
	eventually.True(t, "every span counted", func() bool { return d.get(DropQueueFull)+d.get(DropExportFailed) == n+1 })
}

// TestShutdownExportsWhatIsQueued: spans sent before Shutdown reach the
// collector, without waiting for the batch delay.
func TestShutdownExportsWhatIsQueued(t *testing.T) {
	col := otlptest.Start(t)
	tr := newTracer(t, config.Traces{Endpoint: col.URL, Sample: 1}, Options{})
	for range 10 {
		s := Span{Context: tr.Begin(nil), Operation: "embeddings", Start: time.Unix(1, 0), End: time.Unix(2, 0)}
		tr.Send(&s)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(col.Spans()); got != 10 {
		t.Fatalf("%d spans at the collector after Shutdown, want 10", got)
	}
	s := Span{Context: tr.Begin(nil)}
	tr.Send(&s) // after Shutdown: neither a panic nor a wait
}

// TestExportRetries: a collector that answers 503 (or 429, 502, 504) is
// tried again, and its spans arrive; one that refuses the request (400)
// is not, and its spans count as failed.
func TestExportRetries(t *testing.T) {
	col := otlptest.Start(t)
	f := func(status int, wantRetried bool) {
		t.Helper()
		var posts atomic.Int64
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if posts.Add(1) == 1 {
				w.WriteHeader(status)
				return
			}
			r2, err := http.NewRequestWithContext(r.Context(), r.Method, col.URL+r.URL.Path, r.Body)
			if err != nil {
				t.Error(err)
				return
			}
			r2.Header = r.Header
			resp, err := http.DefaultClient.Do(r2)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			w.WriteHeader(resp.StatusCode)
		}))
		defer proxy.Close()
		var d drops
		tr, err := New(config.Traces{Endpoint: proxy.URL, Sample: 1}, Options{Dropped: d.add, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		before := len(col.Spans())
		s := Span{Context: tr.Begin(nil), Operation: "chat", Start: time.Unix(1, 0), End: time.Unix(2, 0)}
		tr.Send(&s)
		if err := tr.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		arrived := len(col.Spans()) - before
		if wantRetried && (arrived != 1 || posts.Load() != 2 || d.get(DropExportFailed) != 0) {
			t.Fatalf("status %d: %d spans arrived in %d posts, %d failed; want it retried", status, arrived, posts.Load(), d.get(DropExportFailed))
		}
		if !wantRetried && (arrived != 0 || posts.Load() != 1 || d.get(DropExportFailed) != 1) {
			t.Fatalf("status %d: %d spans arrived in %d posts, %d failed; want it given up", status, arrived, posts.Load(), d.get(DropExportFailed))
		}
	}
	f(503, true)
	f(429, true)
	f(400, false)
}
