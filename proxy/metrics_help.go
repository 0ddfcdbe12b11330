package proxy

import (
	"bytes"
	"io"
	"sync"
)

// metricHelp is the # HELP text of every series family tokenhub defines;
// VictoriaMetrics/metrics writes the # HELP and # TYPE lines (once
// ExposeMetadata is on) but has no place for the text, so withHelp adds it.
// TestMetricsHaveHelpAndType fails on a family missing here.
var metricHelp = map[string]string{
	"tokenhub_requests_total":             "Requests answered (a stream when it ends), by endpoint, model, plan and status.",
	"tokenhub_gateway_duration_seconds":   "Time tokenhub itself added to a request: all of it but the upstream's.",
	"tokenhub_upstream_duration_seconds":  "Upstream's time to its answer (a stream's: to its headers).",
	"tokenhub_stream_ttfb_seconds":        "A stream's time to its first event at the client.",
	"tokenhub_tokens_total":               "Tokens billed, by model, plan and type (prompt, completion).",
	"tokenhub_cached_tokens_total":        "Prompt tokens billed at the cached-input price, by model and plan: part of tokenhub_tokens_total{type=\"prompt\"}, not on top.",
	"tokenhub_cache_write_tokens_total":   "Prompt tokens billed at the cache-write price, by model and plan: part of tokenhub_tokens_total{type=\"prompt\"}, not on top.",
	"tokenhub_usage_cached_clamped_total": "Requests whose upstream reported more cache tokens, read and written, than prompt tokens; billed no more cache tokens than prompt tokens (reads first).",
	"tokenhub_spend_usd_total":            "Dollars billed, by model and plan.",
	"tokenhub_usage_estimated_total":      "Requests billed an estimate because the upstream sent no usage.",
	"tokenhub_usage_over_bound_total":     "Requests whose upstream-reported usage cost more than admission's worst case.",
	"tokenhub_open_streams":               "Streams being relayed now.",
	"tokenhub_upstream_events_total":      "Upstream failures and failovers, by upstream and event.",
	"tokenhub_route_state":                "A route's (an upstream serving a model) health state on this node: 1 for the state it is in.",
	"tokenhub_route_latency_seconds":      "A route's peak-EWMA latency to its answer (a stream's: to its headers); a failure counts as 5s.",
	"tokenhub_route_in_flight":            "Requests waiting on a route for their answer (a stream: for its headers).",
	"tokenhub_route_ejections_total":      "Times a route was ejected or cooled down by a retry-after, since the configuration was loaded.",
	"tokenhub_key_cache_lookups_total":    "Key cache lookups, by result.",
	"tokenhub_valkey_duration_seconds":    "Duration of every Valkey command and pipeline.",
	"tokenhub_valkey_errors_total":        "Valkey commands and pipelines that failed.",
	"tokenhub_access_log_dropped_total":   "Access log lines dropped because the writer fell behind.",
	"tokenhub_trace_spans_dropped_total":  "Spans not exported, by reason: queue_full (the exporter fell behind) or export_failed (the collector did not take them).",
}

var (
	helpPrefix = []byte("# HELP ")
	scrapeBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

// withHelp copies a rendering to w, completing each bare "# HELP name" line
// with the family's text. A scrape is a cold path: clarity over speed.
func withHelp(w io.Writer, render func(io.Writer)) {
	b := scrapeBufs.Get().(*bytes.Buffer)
	defer scrapeBufs.Put(b)
	b.Reset()
	render(b)
	out := make([]byte, 0, b.Len()+4096)
	for rest := b.Bytes(); len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i+1], rest[i+1:]
		} else {
			rest = nil
		}
		if name, ok := bytes.CutPrefix(bytes.TrimSuffix(line, []byte("\n")), helpPrefix); ok && bytes.IndexByte(name, ' ') < 0 {
			if text, known := metricHelp[string(name)]; known {
				out = append(out, line[:len(line)-1]...)
				out = append(out, ' ')
				out = append(out, text...)
				out = append(out, '\n')
				continue
			}
		}
		out = append(out, line...)
	}
	w.Write(out) //nolint:errcheck // a scrape the client abandoned
}
