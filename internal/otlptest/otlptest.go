// Package otlptest is an OpenTelemetry collector for tests: an OTLP/HTTP
// endpoint on a loopback port that decodes what it is POSTed, as a real
// collector does (protobuf, POST /v1/traces), and keeps the spans and the
// requests' headers for the test to check.
package otlptest

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Collector is a running OTLP/HTTP trace endpoint.
type Collector struct {
	srv *httptest.Server
	// URL is the endpoint's base URL, what telemetry.traces.endpoint takes.
	URL string

	mu       sync.Mutex
	spans    []Span
	headers  []http.Header
	problems []string
}

// Span is a received span with what tests check, decoded.
type Span struct {
	Name                 string
	TraceID, SpanID      string // lowercase hex
	ParentSpanID         string // empty for a root span
	Kind                 tracepb.Span_SpanKind
	StartUnixNano        uint64
	EndUnixNano          uint64
	StatusCode           tracepb.Status_StatusCode
	Attrs                map[string]any // string, int64, float64 or bool
	Resource             map[string]any
	ScopeName, SchemaURL string
	// Encoded is the span's protobuf encoding, every name and value in it:
	// what tests search for what must never be there.
	Encoded string
}

// Start serves a collector on 127.0.0.1 until the test ends.
func Start(t testing.TB) *Collector {
	c := &Collector{}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	c.URL = c.srv.URL
	t.Cleanup(c.srv.Close)
	return c
}

func (c *Collector) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		c.problem(r.Method + " " + r.URL.Path + " " + r.Header.Get("Content-Type"))
		http.Error(w, "not an OTLP/HTTP protobuf trace export", http.StatusNotFound)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		c.problem("undecodable body: " + err.Error())
		http.Error(w, "undecodable", http.StatusBadRequest)
		return
	}
	var got []Span
	for _, rs := range req.ResourceSpans {
		res := attrMap(rs.GetResource().GetAttributes())
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				got = append(got, Span{
					Name: s.Name, TraceID: hex.EncodeToString(s.TraceId), SpanID: hex.EncodeToString(s.SpanId),
					ParentSpanID: hex.EncodeToString(s.ParentSpanId), Kind: s.Kind,
					StartUnixNano: s.StartTimeUnixNano, EndUnixNano: s.EndTimeUnixNano, StatusCode: s.GetStatus().GetCode(),
					Attrs: attrMap(s.Attributes), Resource: res, ScopeName: ss.GetScope().GetName(), SchemaURL: ss.SchemaUrl,
					Encoded: encoded(s),
				})
			}
		}
	}
	c.mu.Lock()
	c.spans = append(c.spans, got...)
	c.headers = append(c.headers, r.Header.Clone())
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out) //nolint:errcheck // the exporter's problem
}

func (c *Collector) problem(p string) {
	c.mu.Lock()
	c.problems = append(c.problems, p)
	c.mu.Unlock()
}

// Spans returns the spans received so far.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Span(nil), c.spans...)
}

// Headers returns the headers of the exports received so far.
func (c *Collector) Headers() []http.Header {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]http.Header(nil), c.headers...)
}

// Problems returns what the collector refused: requests that were not
// OTLP/HTTP protobuf trace exports.
func (c *Collector) Problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.problems...)
}

func attrMap(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		switch v := kv.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.Key] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = v.IntValue
		case *commonpb.AnyValue_DoubleValue:
			m[kv.Key] = v.DoubleValue
		case *commonpb.AnyValue_BoolValue:
			m[kv.Key] = v.BoolValue
		default:
			m[kv.Key] = kv.Value.String()
		}
	}
	return m
}

func encoded(s *tracepb.Span) string {
	b, _ := proto.Marshal(s)
	return string(b)
}
