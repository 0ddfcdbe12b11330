package proxy

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/tracing"
	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// requestRecord is what one inference request's metrics and access log line
// are made of, filled in as the request goes. It lives in the request's
// claim: on the handler's stack, then in a stream's relay.
type requestRecord struct {
	start       time.Time
	ep          upstream.Endpoint
	stream      bool
	keyID, plan string // from the cached key and plan: they outlive the request
	model       string // the configured model's name; empty if none matched
	upstream    string
	// upstreamDur is the upstream's time until its answer, or a stream's
	// until its headers; gatewayDur is the rest, tokenhub's own.
	upstreamDur, gatewayDur time.Duration
	ttfb                    time.Duration // streams: until the first event reached the client
	prompt, completion      int64
	cached, cacheWrite      int64 // parts of prompt: read from, written to the provider's cache
	cost                    usd.Pico
	estimated               bool
	streamError             string // the code of the error event that ended a stream
	// trace is the request's trace context; provider and routeModel the
	// kind and model name of the route taken, for its span. Set only when
	// tracing is on (see trace.go).
	trace                tracing.SpanContext
	provider, routeModel string
}

// accessEntry is a requestRecord on its way to the writer, with the copies
// of what the request's buffers held.
type accessEntry struct {
	requestRecord
	status    int
	duration  time.Duration // the whole request's, a stream's to its end
	idLen     uint8
	requestID [128]byte // validRequestID bounds ids to 128 bytes
}

// accessLog hands lines to a writer goroutine through a buffered channel, so
// formatting and writing never run on a request. When the writer falls
// behind, lines are dropped and counted rather than slowing requests.
type accessLog struct {
	log     *slog.Logger
	level   slog.Level
	every   uint64 // log one success in every; 0 logs none
	n       atomic.Uint64
	ch      chan accessEntry
	stopped sync.Once
	stop    chan struct{}
	done    chan struct{}
	dropped func()
	// cur, attrs and scratch are the writer goroutine's, reused line after
	// line: the entry being written, its attributes and its cost's text.
	cur     accessEntry
	attrs   []slog.Attr
	scratch []byte
}

const accessLogBuffer = 4096

// newAccessLog starts the writer; nil when the access log is off or its
// level is below what the logger writes.
func newAccessLog(c config.AccessLog, log *slog.Logger, dropped func()) *accessLog {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	if !c.Enabled || !log.Enabled(context.Background(), level) {
		return nil
	}
	a := &accessLog{log: log, level: level, ch: make(chan accessEntry, accessLogBuffer),
		stop: make(chan struct{}), done: make(chan struct{}), dropped: dropped,
		attrs: make([]slog.Attr, 0, 20), scratch: make([]byte, 0, 32)}
	if c.Sample > 0 {
		a.every = uint64(math.Round(1 / c.Sample))
	}
	go a.run()
	return a
}

// wants says whether a request with status gets a line: every error, and
// successes as sampled.
func (a *accessLog) wants(status int) bool {
	if a == nil {
		return false
	}
	if status >= 400 {
		return true
	}
	return a.every > 0 && a.n.Add(1)%a.every == 0
}

// send queues e without blocking.
func (a *accessLog) send(e *accessEntry) {
	select {
	case a.ch <- *e:
	default:
		a.dropped()
	}
}

func (a *accessLog) run() {
	defer close(a.done)
	for {
		select {
		case a.cur = <-a.ch:
			a.write(&a.cur)
		case <-a.stop:
			for {
				select {
				case a.cur = <-a.ch:
					a.write(&a.cur)
				default:
					return
				}
			}
		}
	}
}

// close writes what is queued and stops the writer. Lines sent afterwards
// are dropped once the buffer is full; the channel is never closed, so a
// late sender cannot panic.
func (a *accessLog) close() {
	if a == nil {
		return
	}
	a.stopped.Do(func() { close(a.stop) })
	<-a.done
}

// write logs e as one record with a single group attribute, "request". The
// group's attributes live in a slice the writer reuses, and strings point
// into e and a scratch buffer, so a line costs no allocation of its own:
// the handler has written the record before write returns and they change.
func (a *accessLog) write(e *accessEntry) {
	at := a.attrs[:0]
	at = append(at,
		slog.String("id", b2s(e.requestID[:e.idLen])),
		slog.String("endpoint", endpointNames[e.ep]),
		slog.Int("status", e.status),
		slog.String("key_id", e.keyID),
		slog.String("plan", e.plan),
		slog.String("model", e.model),
		slog.Bool("stream", e.stream),
	)
	if e.upstream != "" {
		at = append(at, slog.String("upstream", e.upstream), slog.Float64("upstream_ms", ms(e.upstreamDur)))
	}
	at = append(at, slog.Float64("gateway_ms", ms(e.gatewayDur)))
	if e.stream && e.ttfb > 0 {
		at = append(at, slog.Float64("ttfb_ms", ms(e.ttfb)))
	}
	if e.prompt > 0 || e.completion > 0 {
		a.scratch = e.cost.AppendUSD(a.scratch[:0])
		at = append(at, slog.Int64("prompt_tokens", e.prompt))
		if e.cached > 0 {
			at = append(at, slog.Int64("cached_tokens", e.cached))
		}
		if e.cacheWrite > 0 {
			at = append(at, slog.Int64("cache_write_tokens", e.cacheWrite))
		}
		at = append(at, slog.Int64("completion_tokens", e.completion), slog.String("cost_usd", b2s(a.scratch)))
		if e.estimated {
			at = append(at, slog.Bool("usage_estimated", true))
		}
	}
	if e.streamError != "" {
		at = append(at, slog.String("stream_error", e.streamError))
	}
	at = append(at, slog.Float64("duration_ms", ms(e.duration)))
	a.attrs = at
	a.log.LogAttrs(context.Background(), a.level, "request", slog.Attr{Key: "request", Value: slog.GroupValue(at...)})
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
