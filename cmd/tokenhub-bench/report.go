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

// report is one throughput scenario: its settings, a closed-loop result per
// target, the mock directly first, and the open loop at one rate for all.
type report struct {
	Scenario string `json:"scenario"`
	// What says what was sent, for a reader.
	What     string        `json:"what"`
	Conns    int           `json:"conns"`
	Warmup   time.Duration `json:"warmup_ns"`
	Duration time.Duration `json:"duration_ns"`
	CPUs     int           `json:"cpus"`
	Started  time.Time     `json:"started"`
	// IdleRSS is tokenhub's resident memory once started, before the load.
	IdleRSS int64 `json:"tokenhub_idle_rss_bytes,omitempty"`
	// Results are the closed loop's.
	Results []result `json:"results"`
	// Open is nil when the open loop was not run.
	Open  *openReport `json:"open,omitempty"`
	Notes []string    `json:"notes,omitempty"`
}

// result is one target's closed loop: its measurements, its throughput
// relative to the mock's own, and what it spent.
type result struct {
	*load.Result
	VsDirect float64 `json:"throughput_vs_direct"`
	cost
}

// openReport is the open loop of a throughput scenario: every target at the
// same rate.
type openReport struct {
	Rate float64 `json:"rate_rps"`
	// RateFrom says how the rate was chosen.
	RateFrom string       `json:"rate_from"`
	Conns    int          `json:"conns"`
	Results  []openResult `json:"results"`
}

// openResult is one target's open loop, and the latency it adds to the
// mock's at the same rate, percentile by percentile.
type openResult struct {
	*load.OpenResult
	Added *latencyAdded `json:"added,omitempty"`
	cost
}

// latencyAdded is a target's latency less the mock's.
type latencyAdded struct {
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p99_9_ns"`
}

func addedTo(l, direct load.Latency) *latencyAdded {
	return &latencyAdded{P50: l.P50 - direct.P50, P90: l.P90 - direct.P90, P99: l.P99 - direct.P99, P999: l.P999 - direct.P999}
}

// add appends a target's closed-loop result, computing its ratio to the
// first (direct).
func (r *report) add(res *load.Result, c cost) {
	ratio := 1.0
	if len(r.Results) > 0 {
		ratio = 0
		if direct := r.Results[0].Throughput; direct > 0 {
			ratio = res.Throughput / direct
		}
	}
	r.Results = append(r.Results, result{Result: res, VsDirect: ratio, cost: c})
}

// addOpen appends a target's open-loop result, computing what it adds to
// the first's (direct).
func (o *openReport) add(res *load.OpenResult, c cost) {
	or := openResult{OpenResult: res, cost: c}
	if len(o.Results) > 0 {
		or.Added = addedTo(res.Latency, o.Results[0].Latency)
	}
	o.Results = append(o.Results, or)
}

// writeMarkdown prints the report as two markdown tables, the closed loop
// and the open loop, with a preamble and the error breakdown, if any.
func (r *report) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s: %s; %d CPUs, loopback\n\n", r.Scenario, r.What, r.CPUs)
	fmt.Fprintf(&b, "Closed loop: %d connections, each sending its next request when the last is answered, %v per target after a %v warmup.\n\n",
		r.Conns, r.Duration, r.Warmup)
	b.WriteString("| target | req/s | p50 | p90 | p99 | p99.9 | max | errors | vs direct | CPU s/10k req | peak RSS | allocs/req |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, res := range r.Results {
		l := res.Latency
		fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %s | %s | %d | %.2fx | %s | %s | %s |\n",
			res.Target, res.Throughput, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), res.Errors, res.VsDirect,
			cpuPer10k(res.CPUPer10k), peak(res.PeakRSS), allocs(res.AllocsPerRequest))
	}
	if o := r.Open; o != nil {
		fmt.Fprintf(&b, "\nOpen loop: %.0f req/s (%s) for every target, at most %d in flight, %v after a %v warmup; "+
			"latency from each request's due time, so a stall counts against every request it held up; "+
			"added is the target's latency less the mock's.\n\n",
			o.Rate, o.RateFrom, o.Conns, r.Duration, r.Warmup)
		b.WriteString("| target | req/s | late | unsent | p50 | p90 | p99 | p99.9 | max | added p50 | added p99 | added p99.9 | errors | CPU s/10k req | allocs/req |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for i, res := range o.Results {
			l := res.Latency
			var a latencyAdded
			if res.Added != nil {
				a = *res.Added
			}
			fmt.Fprintf(&b, "| %s | %.0f | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s |\n",
				res.Target, res.Throughput, res.Late, res.Unsent, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max),
				added(i, a.P50), added(i, a.P99), added(i, a.P999), res.Errors,
				cpuPer10k(res.CPUPer10k), allocs(res.AllocsPerRequest))
		}
		for _, res := range o.Results {
			if !res.Valid() {
				fmt.Fprintf(&b, "\n%s: %d of %d requests (%.2f%%) found all %d connections busy when due and were sent late, their wait counted in their latency; %d never sent",
					res.Target, res.Late, res.Scheduled, 100*float64(res.Late)/float64(max(res.Scheduled, 1)), o.Conns, res.Unsent)
			}
		}
		if len(o.Results) > 0 {
			lag := o.Results[0].SendLag
			fmt.Fprintf(&b, "\nopen loop: the generator sent the mock's requests p50 %s, p99 %s after they were due (its timers' precision, part of every latency above)",
				ms(lag.P50), ms(lag.P99))
		}
		b.WriteString("\n")
	}
	if r.IdleRSS > 0 {
		name := "tokenhub"
		for _, res := range r.Results {
			if strings.HasPrefix(res.Target, "tokenhub") {
				name = res.Target
				break
			}
		}
		fmt.Fprintf(&b, "\n%s: %s resident once started, before any load\n", name, mib(r.IdleRSS))
	}
	var errs []string
	for _, res := range r.Results {
		if len(res.ErrorsByKind) > 0 {
			errs = append(errs, fmt.Sprintf("%s errors: %s", res.Target, errorKinds(res.ErrorsByKind)))
		}
	}
	if r.Open != nil {
		for _, res := range r.Open.Results {
			if len(res.ErrorsByKind) > 0 {
				errs = append(errs, fmt.Sprintf("%s open-loop errors: %s", res.Target, errorKinds(res.ErrorsByKind)))
			}
		}
	}
	writeBlock(&b, errs)
	writeBlock(&b, r.Notes)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeBlock writes lines to b as a paragraph of their own, if there are
// any.
func writeBlock(b *strings.Builder, lines []string) {
	if len(lines) > 0 {
		b.WriteString("\n" + strings.Join(lines, "\n") + "\n")
	}
}

// ms formats a latency in milliseconds, with enough digits for loopback
// latencies of tens of microseconds.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch a := max(v, -v); {
	case a < 10:
		return fmt.Sprintf("%.3fms", v)
	case a < 1000:
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.0fms", v)
}

// cpuPer10k formats CPU seconds per 10,000 requests.
func cpuPer10k(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *v)
}

// peak formats a peak resident set size.
func peak(b int64) string {
	if b <= 0 {
		return "n/a"
	}
	return mib(b)
}

// allocs formats allocations per request; "n/a" where the target has no
// /metrics to count them.
func allocs(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", *v)
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
