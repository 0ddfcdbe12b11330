package tracing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/encoding/protowire"
)

// otlpExporter is the SDK's span exporter for OTLP/HTTP protobuf, written
// against the OTLP protocol rather than taken from otlptracehttp: that
// package's configuration imports gRPC, and with protobuf's reflection it
// took the stripped binary from 14 MB to 34 MB; it also converts every
// span through generated structs, some 50 allocations a span. This one
// writes the ExportTraceServiceRequest's wire format into reused buffers
// (protowire: the encoding primitives alone), and its output is checked by
// decoding with the generated types (otlptest, TestSpanReachesCollector).
// Only the tracer's goroutine calls it.
type otlpExporter struct {
	url     string
	headers map[string]string
	client  *http.Client
	// body is the request being built; span and value hold a nested
	// message while it is written, for its length to precede it.
	body, scope, span, value []byte
}

func newOTLPExporter(url string, headers map[string]string) *otlpExporter {
	// A transport of its own (the default's settings, proxies from the
	// environment among them), so that Shutdown closes only its connections.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	return &otlpExporter{url: url, headers: headers, client: &http.Client{Timeout: exportTimeout, Transport: transport}}
}

// Retries of an export the collector did not take: a refused connection or
// 429/502/503/504, as OTLP/HTTP asks, within the export's context.
const (
	exportAttempts = 3
	retryBackoff   = 500 * time.Millisecond
)

var errRetryable = errors.New("retryable")

// ExportSpans POSTs spans to <endpoint>/v1/traces.
func (e *otlpExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if len(spans) == 0 {
		return nil
	}
	e.encode(spans)
	var err error
	for attempt := range exportAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("tracing: export: %w (after %w)", ctx.Err(), err)
			case <-time.After(retryBackoff << (attempt - 1)):
			}
		}
		if err = e.post(ctx); err == nil || !errors.Is(err, errRetryable) {
			return err
		}
	}
	return err
}

func (e *otlpExporter) post(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(e.body))
	if err != nil {
		return fmt.Errorf("tracing: export: %w", err)
	}
	for k, v := range e.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := e.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("tracing: export: %w", err)
		}
		return fmt.Errorf("tracing: export: %w: %w", errRetryable, err)
	}
	// Read to the end (bounded), so the connection is reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // only for the connection's reuse
	resp.Body.Close()                                      //nolint:errcheck // read to its end already; nothing to do on failure
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusBadGateway ||
		resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
		return fmt.Errorf("tracing: export: %w: collector answered %d", errRetryable, resp.StatusCode)
	}
	return fmt.Errorf("tracing: export: collector answered %d", resp.StatusCode)
}

// Shutdown closes the exporter's idle connections.
func (e *otlpExporter) Shutdown(context.Context) error {
	e.client.CloseIdleConnections()
	return nil
}

// The field numbers of opentelemetry/proto's collector/trace/v1 and
// trace/v1, common/v1, resource/v1 messages.
const (
	fieldResourceSpans = 1 // ExportTraceServiceRequest
	fieldResource      = 1 // ResourceSpans
	fieldScopeSpans    = 2 // ResourceSpans
	fieldResourceAttrs = 1 // Resource
	fieldScope         = 1 // ScopeSpans
	fieldSpans         = 2 // ScopeSpans
	fieldScopeName     = 1 // InstrumentationScope
	fieldTraceID       = 1 // Span
	fieldSpanID        = 2
	fieldParentSpanID  = 4
	fieldName          = 5
	fieldKind          = 6
	fieldStartTime     = 7
	fieldEndTime       = 8
	fieldAttributes    = 9
	fieldStatus        = 15
	fieldStatusMessage = 2 // Status
	fieldStatusCode    = 3
	fieldKey           = 1 // KeyValue
	fieldValue         = 2
	fieldStringValue   = 1 // AnyValue
	fieldBoolValue     = 2
	fieldIntValue      = 3
	fieldDoubleValue   = 4
	statusCodeOK       = 1 // Status.StatusCode
	statusCodeError    = 2
)

// encode writes spans, which share one resource and scope (one tracer's),
// as one ExportTraceServiceRequest into e.body.
func (e *otlpExporter) encode(spans []sdktrace.ReadOnlySpan) {
	scopeName := spans[0].InstrumentationScope().Name
	e.scope = protowire.AppendTag(e.scope[:0], fieldScope, protowire.BytesType)
	e.scope = protowire.AppendVarint(e.scope, uint64(protowire.SizeTag(fieldScopeName)+protowire.SizeBytes(len(scopeName))))
	e.scope = protowire.AppendTag(e.scope, fieldScopeName, protowire.BytesType)
	e.scope = protowire.AppendString(e.scope, scopeName)
	for _, s := range spans {
		e.span = e.appendSpan(e.span[:0], s)
		e.scope = protowire.AppendTag(e.scope, fieldSpans, protowire.BytesType)
		e.scope = protowire.AppendBytes(e.scope, e.span)
	}
	// ResourceSpans: the resource's attributes, then the scope's spans. The
	// resource is built in e.span, free again.
	e.span = e.span[:0]
	for _, kv := range spans[0].Resource().Attributes() {
		e.span = e.appendKeyValue(e.span, fieldResourceAttrs, kv)
	}
	resourceLen := protowire.SizeTag(fieldResource) + protowire.SizeBytes(len(e.span)) +
		protowire.SizeTag(fieldScopeSpans) + protowire.SizeBytes(len(e.scope))
	b := e.body[:0]
	b = protowire.AppendTag(b, fieldResourceSpans, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(resourceLen))
	b = protowire.AppendTag(b, fieldResource, protowire.BytesType)
	b = protowire.AppendBytes(b, e.span)
	b = protowire.AppendTag(b, fieldScopeSpans, protowire.BytesType)
	b = protowire.AppendBytes(b, e.scope)
	e.body = b
}

func (e *otlpExporter) appendSpan(b []byte, s sdktrace.ReadOnlySpan) []byte {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	b = protowire.AppendTag(b, fieldTraceID, protowire.BytesType)
	b = protowire.AppendBytes(b, tid[:])
	b = protowire.AppendTag(b, fieldSpanID, protowire.BytesType)
	b = protowire.AppendBytes(b, sid[:])
	if p := s.Parent(); p.IsValid() {
		pid := p.SpanID()
		b = protowire.AppendTag(b, fieldParentSpanID, protowire.BytesType)
		b = protowire.AppendBytes(b, pid[:])
	}
	b = protowire.AppendTag(b, fieldName, protowire.BytesType)
	b = protowire.AppendString(b, s.Name())
	// OTLP's SpanKind counts from UNSPECIFIED = 0; the API's from
	// SpanKindUnspecified = 0 too, INTERNAL = 1, SERVER = 2, alike.
	b = protowire.AppendTag(b, fieldKind, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(s.SpanKind()))
	b = protowire.AppendTag(b, fieldStartTime, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(s.StartTime().UnixNano()))
	b = protowire.AppendTag(b, fieldEndTime, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(s.EndTime().UnixNano()))
	for _, kv := range s.Attributes() {
		b = e.appendKeyValue(b, fieldAttributes, kv)
	}
	if st := s.Status(); st.Code != codes.Unset {
		code := uint64(statusCodeOK)
		if st.Code == codes.Error {
			code = statusCodeError
		}
		size := protowire.SizeTag(fieldStatusCode) + protowire.SizeVarint(code)
		if st.Description != "" {
			size += protowire.SizeTag(fieldStatusMessage) + protowire.SizeBytes(len(st.Description))
		}
		b = protowire.AppendTag(b, fieldStatus, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(size))
		if st.Description != "" {
			b = protowire.AppendTag(b, fieldStatusMessage, protowire.BytesType)
			b = protowire.AppendString(b, st.Description)
		}
		b = protowire.AppendTag(b, fieldStatusCode, protowire.VarintType)
		b = protowire.AppendVarint(b, code)
	}
	return b
}

// appendKeyValue appends kv as the KeyValue field of its message.
func (e *otlpExporter) appendKeyValue(b []byte, field protowire.Number, kv attribute.KeyValue) []byte {
	v := e.value[:0]
	switch kv.Value.Type() {
	case attribute.BOOL:
		v = protowire.AppendTag(v, fieldBoolValue, protowire.VarintType)
		v = protowire.AppendVarint(v, protowire.EncodeBool(kv.Value.AsBool()))
	case attribute.INT64:
		v = protowire.AppendTag(v, fieldIntValue, protowire.VarintType)
		v = protowire.AppendVarint(v, uint64(kv.Value.AsInt64()))
	case attribute.FLOAT64:
		v = protowire.AppendTag(v, fieldDoubleValue, protowire.Fixed64Type)
		v = protowire.AppendFixed64(v, math.Float64bits(kv.Value.AsFloat64()))
	case attribute.STRING:
		v = protowire.AppendTag(v, fieldStringValue, protowire.BytesType)
		v = protowire.AppendString(v, kv.Value.AsString())
	default:
		// The gateway sets no slices; were one set, its text stands in.
		v = protowire.AppendTag(v, fieldStringValue, protowire.BytesType)
		v = protowire.AppendString(v, kv.Value.String())
	}
	e.value = v
	size := protowire.SizeTag(fieldKey) + protowire.SizeBytes(len(kv.Key)) + protowire.SizeTag(fieldValue) + protowire.SizeBytes(len(v))
	b = protowire.AppendTag(b, field, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b = protowire.AppendTag(b, fieldKey, protowire.BytesType)
	b = protowire.AppendString(b, string(kv.Key))
	b = protowire.AppendTag(b, fieldValue, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}
