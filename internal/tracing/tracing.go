// Package tracing exports one OpenTelemetry span per inference request,
// built off the request path. A request decides its trace context when it
// starts (Begin: the client's W3C traceparent honoured, or a new trace
// sampled by ratio), fixed-size and without allocation, so that the
// upstream can be told the gateway span's id; when it ends it hands a Span,
// a value, to a bounded queue (Send). One goroutine builds the spans with
// the OpenTelemetry SDK and exports them in batches as OTLP/HTTP protobuf.
// When it falls behind, or an export fails, spans are dropped and counted,
// never waited for: tracing cannot slow or fail a request.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenhub/tokenhub/config"
)

// Options are what a Tracer takes besides its configuration.
type Options struct {
	Logger *slog.Logger
	// Dropped is called with the number of spans lost and why: DropQueueFull
	// or DropExportFailed. Nil counts nothing.
	Dropped func(reason string, n int)
	// InstanceID names this node in the spans' resource
	// (service.instance.id).
	InstanceID string
	// QueueSize is how many finished spans may wait for the exporter;
	// 0 means DefaultQueueSize.
	QueueSize int
}

// Why spans are dropped, for Options.Dropped.
const (
	DropQueueFull    = "queue_full"
	DropExportFailed = "export_failed"
)

const (
	// DefaultQueueSize is the queue's default bound: a few seconds of spans
	// at a busy node's rate, a few hundred bytes each.
	DefaultQueueSize = 4096
	// batchSize is the most spans one export carries.
	batchSize = 512
	// batchDelay is the longest a span waits for its batch to fill: a
	// collector shows a quiet node's requests within about a second.
	batchDelay = time.Second
	// exportTimeout bounds one export, its retries included: while it runs
	// the queue fills, and past it, drops.
	exportTimeout = 15 * time.Second
)

// Tracer is the node's span exporter. A nil *Tracer is tracing off.
type Tracer struct {
	log         *slog.Logger
	dropped     func(string, int)
	sampleBound uint64
	queue       chan Span

	exporter *otlpExporter
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	// ids and batch are the goroutine's: the ids the span being built is
	// given (see spanIDs), and the spans ended since the last export.
	ids   *spanIDs
	batch *batcher
	attrs []attribute.KeyValue
	// failing: the last export failed, so the next success is logged.
	failing bool

	// exports is the parent of every export; Shutdown cancels it when its
	// own deadline passes, so that no export outlives it by much.
	exports      context.Context
	abortExports context.CancelFunc

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// New returns the Tracer the configuration asks for, its goroutine running;
// nil when tracing is off (no endpoint).
func New(c config.Traces, o Options) (*Tracer, error) {
	if !c.Enabled() {
		return nil, nil
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	dropped := o.Dropped
	if dropped == nil {
		dropped = func(string, int) {}
	}
	size := o.QueueSize
	if size <= 0 {
		size = DefaultQueueSize
	}
	exporter := newOTLPExporter(strings.TrimSuffix(c.Endpoint, "/")+"/v1/traces", c.Headers)
	attrs := []attribute.KeyValue{attribute.String("service.name", "tokenhub")}
	if o.InstanceID != "" {
		attrs = append(attrs, attribute.String("service.instance.id", o.InstanceID))
	}
	t := &Tracer{
		log: log, dropped: dropped, sampleBound: sampleBound(c.Sample),
		queue: make(chan Span, size), exporter: exporter,
		ids: &spanIDs{}, batch: &batcher{}, attrs: make([]attribute.KeyValue, 0, 24),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	t.exports, t.abortExports = context.WithCancel(context.Background())
	// The sampling decision is Begin's, made at the request's start: every
	// span that reaches the SDK is recorded.
	t.provider = sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithIDGenerator(t.ids),
		sdktrace.WithSpanProcessor(t.batch),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
	)
	t.tracer = t.provider.Tracer("github.com/tokenhub/tokenhub")
	go t.run()
	return t, nil
}

// Send queues a finished request's span without blocking: a full queue
// drops it and counts the drop. It allocates nothing.
func (t *Tracer) Send(s *Span) {
	select {
	case t.queue <- *s:
	default:
		t.dropped(DropQueueFull, 1)
	}
}

// run builds and exports spans until Shutdown, then exports what is queued.
func (t *Tracer) run() {
	defer close(t.done)
	timer := time.NewTimer(batchDelay)
	defer timer.Stop()
	var s Span
	for {
		select {
		case s = <-t.queue:
			t.add(&s)
		case <-timer.C:
			t.export()
			timer.Reset(batchDelay)
		case <-t.stop:
			for {
				select {
				case s = <-t.queue:
					t.add(&s)
				default:
					t.export()
					return
				}
			}
		}
	}
}

// add builds s into the batch, and exports the batch once it is full.
func (t *Tracer) add(s *Span) {
	t.build(s)
	if len(t.batch.spans) >= batchSize {
		t.export()
	}
}

// build makes s into an ended SDK span, which the batcher keeps.
func (t *Tracer) build(s *Span) {
	ctx := context.Background()
	if p := s.parent(); p.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, p)
	}
	t.ids.next = s.Context
	t.attrs = s.attributes(t.attrs[:0])
	_, span := t.tracer.Start(ctx, s.name(), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(s.Start), trace.WithAttributes(t.attrs...))
	if code, desc := s.status(); code != 0 {
		span.SetStatus(code, desc)
	}
	span.End(trace.WithTimestamp(s.End))
}

// export sends the batch, and counts its spans as dropped if that fails.
func (t *Tracer) export() {
	spans := t.batch.spans
	if len(spans) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(t.exports, exportTimeout)
	err := t.exporter.ExportSpans(ctx, spans)
	cancel()
	clear(spans)
	t.batch.spans = spans[:0]
	if err != nil {
		t.dropped(DropExportFailed, len(spans))
		if !t.failing {
			// Once per outage, not per batch; the count is in the metric.
			t.log.Warn("trace export failed; spans are dropped until it succeeds", "err", err, "spans", len(spans))
		}
		t.failing = true
		return
	}
	if t.failing {
		t.log.Info("trace export succeeds again")
		t.failing = false
	}
}

// Shutdown exports the spans queued and stops, within ctx: what is not
// exported by then is lost. Requests finished after it start no export.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	t.stopOnce.Do(func() { close(t.stop) })
	select {
	case <-t.done:
	case <-ctx.Done():
		// The export running and those left fail at once, their spans
		// counted as dropped.
		t.abortExports()
		<-t.done
	}
	defer t.abortExports()
	err := errors.Join(ctx.Err(), t.provider.Shutdown(ctx), t.exporter.Shutdown(ctx))
	if err != nil {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}

// spanIDs gives the SDK the ids Begin chose at the request's start, which
// the upstream has been told: the goroutine sets next before each span.
type spanIDs struct{ next SpanContext }

func (g *spanIDs) NewIDs(context.Context) (trace.TraceID, trace.SpanID) {
	return g.next.TraceID, g.next.SpanID
}

func (g *spanIDs) NewSpanID(context.Context, trace.TraceID) trace.SpanID { return g.next.SpanID }

// batcher is the SDK span processor that keeps ended spans for the
// goroutine's next export; only the goroutine ends spans.
type batcher struct{ spans []sdktrace.ReadOnlySpan }

func (b *batcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (b *batcher) OnEnd(s sdktrace.ReadOnlySpan)                   { b.spans = append(b.spans, s) }
func (b *batcher) Shutdown(context.Context) error                  { return nil }
func (b *batcher) ForceFlush(context.Context) error                { return nil }
