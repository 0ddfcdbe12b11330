package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub/bench/load"
)

// report is one benchmark run: its settings and a result per target, the
// mock directly first.
type report struct {
	Scenario string        `json:"scenario"`
	Conns    int           `json:"conns"`
	Warmup   time.Duration `json:"warmup_ns"`
	Duration time.Duration `json:"duration_ns"`
	CPUs     int           `json:"cpus"`
	Started  time.Time     `json:"started"`
	Results  []result      `json:"results"`
	Notes    []string      `json:"notes,omitempty"`
}

// result is one target's measurements and its throughput relative to the
// mock's own.
type result struct {
	*load.Result
	VsDirect float64 `json:"throughput_vs_direct"`
}

// add appends a target's result, computing its ratio to the first (direct).
func (r *report) add(res *load.Result) {
	ratio := 1.0
	if len(r.Results) > 0 {
		ratio = 0
		if direct := r.Results[0].Throughput; direct > 0 {
			ratio = res.Throughput / direct
		}
	}
	r.Results = append(r.Results, result{Result: res, VsDirect: ratio})
}

// writeMarkdown prints the report as a markdown table with a short preamble
// and the error breakdown, if any.
func (r *report) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s, %d connections, %v per target after a %v warmup, %d CPUs, loopback\n\n",
		r.Scenario, r.Conns, r.Duration, r.Warmup, r.CPUs)
	b.WriteString("| target | req/s | p50 | p90 | p99 | p99.9 | max | errors | vs direct |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, res := range r.Results {
		l := res.Latency
		fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %s | %s | %d | %.2fx |\n",
			res.Target, res.Throughput, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), res.Errors, res.VsDirect)
	}
	for _, res := range r.Results {
		if len(res.ErrorsByKind) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s errors: %s", res.Target, errorKinds(res.ErrorsByKind))
	}
	for _, n := range r.Notes {
		b.WriteString("\n" + n)
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// ms formats a latency in milliseconds, with enough digits for loopback
// latencies of tens of microseconds.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v < 10:
		return fmt.Sprintf("%.3fms", v)
	case v < 1000:
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.0fms", v)
}

// verdict is nil: the throughput benchmark makes no promise.
func (r *report) verdict() error { return nil }

// writeJSON writes a report to path, indented.
func writeJSON(path string, r any) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("json report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("json report: %w", err)
	}
	return nil
}
