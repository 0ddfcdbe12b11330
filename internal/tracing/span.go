package tracing

import (
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Span is one finished request as its span is made of: values only, the
// strings long-lived (from the configuration and the key cache), so that a
// request hands it over by copy and the span is built off the request path.
// It holds no request or response content.
type Span struct {
	Context    SpanContext
	Start, End time.Time
	// Endpoint is the gateway endpoint's name (chat, completions,
	// embeddings, responses, messages, ...); Operation the GenAI operation
	// it performs (chat, text_completion, embeddings).
	Endpoint, Operation string
	// Model is the model the client asked for, as configured; RouteModel
	// the upstream's name for it on the route taken; empty when none.
	Model, RouteModel string
	// Provider is the upstream's kind (openai, anthropic), Upstream its
	// configured name; empty when no upstream was tried.
	Provider, Upstream string
	// KeyID and Plan are the key's id (never its secret) and plan; empty
	// when the key did not authenticate.
	KeyID, Plan string
	Status      int
	Stream      bool
	// GatewayDur is the gateway's own time, UpstreamDur the upstream's to
	// its answer (a stream's: to its headers), TTFB a stream's to its first
	// event at the client.
	GatewayDur, UpstreamDur, TTFB time.Duration
	// Tokens, as billed; Cached (cache reads) and CacheWrite are parts of
	// Prompt.
	Prompt, Completion, Cached, CacheWrite int64
	// CostUSD is what the request was billed, in US dollars.
	CostUSD   float64
	Estimated bool
	// StreamError is the code of the error event that ended a stream.
	StreamError string
	RequestID   [128]byte
	RequestIDN  uint8
}

// name is the span's name, as the GenAI conventions make it: the operation
// and the model.
func (s *Span) name() string {
	if s.Model == "" {
		return s.Operation
	}
	return s.Operation + " " + s.Model
}

// attributes are the span's attributes: the GenAI semantic conventions'
// where one exists, tokenhub.* for the gateway's own.
func (s *Span) attributes(at []attribute.KeyValue) []attribute.KeyValue {
	at = append(at,
		attribute.String("gen_ai.operation.name", s.Operation),
		attribute.String("tokenhub.endpoint", s.Endpoint),
		attribute.Int("http.response.status_code", s.Status),
		attribute.Bool("tokenhub.stream", s.Stream),
		attribute.Float64("tokenhub.gateway.duration_ms", ms(s.GatewayDur)),
	)
	if s.RequestIDN > 0 {
		at = append(at, attribute.String("tokenhub.request_id", string(s.RequestID[:s.RequestIDN])))
	}
	if s.KeyID != "" {
		at = append(at, attribute.String("tokenhub.key_id", s.KeyID), attribute.String("tokenhub.plan", s.Plan))
	}
	if s.Model != "" {
		at = append(at, attribute.String("gen_ai.request.model", s.Model))
	}
	if s.Upstream != "" {
		at = append(at,
			attribute.String("gen_ai.provider.name", s.Provider),
			attribute.String("tokenhub.upstream", s.Upstream),
			attribute.Float64("tokenhub.upstream.duration_ms", ms(s.UpstreamDur)))
		if s.RouteModel != "" {
			at = append(at, attribute.String("gen_ai.response.model", s.RouteModel))
		}
	}
	if s.Stream && s.TTFB > 0 {
		at = append(at, attribute.Float64("tokenhub.stream.ttfb_ms", ms(s.TTFB)))
	}
	if s.Prompt > 0 || s.Completion > 0 {
		at = append(at,
			attribute.Int64("gen_ai.usage.input_tokens", s.Prompt),
			attribute.Int64("gen_ai.usage.output_tokens", s.Completion),
			attribute.Float64("tokenhub.cost_usd", s.CostUSD))
		if s.Cached > 0 {
			at = append(at, attribute.Int64("gen_ai.usage.cache_read.input_tokens", s.Cached))
		}
		if s.CacheWrite > 0 {
			at = append(at, attribute.Int64("gen_ai.usage.cache_creation.input_tokens", s.CacheWrite))
		}
		if s.Estimated {
			at = append(at, attribute.Bool("tokenhub.usage_estimated", true))
		}
	}
	if t := s.errorType(); t != "" {
		at = append(at, attribute.String("error.type", t))
	}
	return at
}

// errorType is the semantic conventions' error.type: a stream's error
// event's code, else an error status.
func (s *Span) errorType() string {
	if s.StreamError != "" {
		return s.StreamError
	}
	if s.Status >= 400 {
		return strconv.Itoa(s.Status)
	}
	return ""
}

// status is the span's status: an error for what the server failed (5xx, a
// stream cut), unset otherwise, as the HTTP conventions ask of server spans.
func (s *Span) status() (codes.Code, string) {
	if s.Status >= 500 || s.StreamError != "" {
		return codes.Error, s.errorType()
	}
	return codes.Unset, ""
}

// parent is the client's span the gateway span is a child of.
func (s *Span) parent() trace.SpanContext {
	if !s.Context.Remote {
		return trace.SpanContext{}
	}
	var flags trace.TraceFlags
	if s.Context.Sampled {
		flags = trace.FlagsSampled
	}
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: s.Context.TraceID, SpanID: s.Context.ParentID, TraceFlags: flags, Remote: true,
	})
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
