package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/bench/load"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// The failover scenario: one model with two routes of equal weight, each to
// a mock upstream of its own, one healthy and one degraded in turn: hung
// (reads requests, never answers), half its answers 500, ten times slower,
// or 429 with a retry-after. An open loop offers chat completions at a
// fixed rate; the report gives the success rate and latency after the
// first seconds, against the healthy route alone.
const (
	failoverScenario = "failover"
	// failoverLatency is the healthy upstream's time to answer, a fast
	// provider's; the slow one takes ten times as long.
	failoverLatency = 20 * time.Millisecond
	// failoverTimeout is both upstreams' timeout: what a request on the
	// hung route waits before its 504.
	failoverTimeout = 2 * time.Second
	// failoverRetryAfter is the 429s' retry-after.
	failoverRetryAfter = 5 * time.Second
	// failoverRate is the offered load, well within what two busy cores
	// serve at these latencies.
	failoverRate = 200
	// failoverConns bounds the requests in flight: enough for the rate
	// with every request held for the whole timeout on the hung route.
	failoverConns = 512
)

// failoverFaults are the degradations the scenario runs, in order.
var failoverFaults = []struct {
	name   string
	mock   mock.Options
	status int // the status every answer of the degraded route has, when set
}{
	{"none (the healthy route alone)", mock.Options{}, 0},
	{"hung", mock.Options{Hang: true}, 0},
	{"50% 500s", mock.Options{Latency: failoverLatency, ErrorRate: 0.5}, 0},
	{"10x latency", mock.Options{Latency: 10 * failoverLatency}, 0},
	// The status goes in a header from the gateway (see mockRoute), so the
	// mock's /v1/models answers its readiness probe.
	{"429 + retry-after 5s", mock.Options{Latency: failoverLatency, RetryAfter: failoverRetryAfter}, fasthttp.StatusTooManyRequests},
}

// failoverReport is one run of the failover scenario.
type failoverReport struct {
	Scenario string        `json:"scenario"`
	Rate     float64       `json:"rate_rps"`
	Warmup   time.Duration `json:"warmup_ns"`
	Duration time.Duration `json:"duration_ns"`
	CPUs     int           `json:"cpus"`
	Started  time.Time     `json:"started"`
	Runs     []failoverRun `json:"runs"`
}

// failoverRun is one degradation.
type failoverRun struct {
	Fault string           `json:"fault"`
	Open  *load.OpenResult `json:"open"`
	// Success is the share of the recorded requests answered 200.
	Success float64 `json:"success"`
	// BadRoute is the degraded route as GET /admin/upstreams shows it at
	// the end, when tokenhub serves that route.
	BadRoute string `json:"bad_route,omitempty"`
}

// failover runs the failover scenario.
func failover(ctx context.Context, o *options, logw io.Writer) (*failoverReport, error) {
	bin, err := needTokenhub(o, failoverScenario)
	if err != nil {
		return nil, err
	}
	rep := &failoverReport{Scenario: failoverScenario, Rate: failoverRate, Warmup: o.warmup, Duration: o.duration,
		CPUs: runtime.NumCPU(), Started: time.Now()}
	for i, f := range failoverFaults {
		fmt.Fprintf(logw, "failover: degraded route %s...\n", f.name)
		run, err := failoverOnce(ctx, o, bin, f.mock, f.status, i == 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		run.Fault = f.name
		rep.Runs = append(rep.Runs, *run)
	}
	return rep, nil
}

// failoverOnce measures one degradation: the healthy mock and, unless
// alone, a degraded one with bad, behind one tokenhub.
func failoverOnce(ctx context.Context, o *options, bin string, bad mock.Options, badStatus int, alone bool) (_ *failoverRun, err error) {
	dir, err := tempDir()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir) //nolint:errcheck // a temporary directory
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()
	goodProc, goodAddr, err := startMock(ctx, dir, "mock-good", mock.Options{Latency: failoverLatency})
	if err != nil {
		return nil, err
	}
	stops = append(stops, func() { goodProc.stop(10 * time.Second) })
	gw := gateway{routes: []mockRoute{{upstream: "good", model: benchModel, mockAddr: goodAddr, maxConns: 1024, timeout: failoverTimeout}}}
	if !alone {
		badProc, badAddr, err := startMock(ctx, dir, "mock-bad", bad)
		if err != nil {
			return nil, err
		}
		stops = append(stops, func() { badProc.stop(10 * time.Second) })
		// The degraded route first: where a tie goes, it goes.
		gw.routes = append([]mockRoute{{upstream: "bad", model: benchModel, mockAddr: badAddr, maxConns: 1024, timeout: failoverTimeout,
			mockStatus: badStatus}}, gw.routes...)
	}
	th, err := startTokenhub(ctx, bin, dir, "tokenhub", gw)
	if err != nil {
		return nil, err
	}
	stops = append(stops, func() { th.proc.stop(10 * time.Second) })

	sc, err := load.NewScenario("chat", benchModel, o.maxTokens)
	if err != nil {
		return nil, err
	}
	req := sc.Request
	req.Headers = append(req.Headers, load.Header{Name: "Authorization", Value: "Bearer " + th.key})
	res, err := load.RunOpen(ctx, load.Config{Addr: th.addr, Request: req, Conns: failoverConns, Rate: failoverRate,
		Warmup: o.warmup, Duration: o.duration, Timeout: 2 * failoverTimeout})
	if err = cutShort(ctx, err); err != nil {
		return nil, err
	}
	run := &failoverRun{Open: res}
	if res.Requests > 0 {
		run.Success = float64(res.OK) / float64(res.Requests)
	}
	if !alone {
		run.BadRoute = badRouteState(th)
	}
	return run, nil
}

// badRouteState is the degraded route's line of GET /admin/upstreams, or
// why there is none (a tokenhub before routes had a health).
func badRouteState(th *tokenhub) string {
	var list struct {
		Data []struct {
			Upstream  string   `json:"upstream"`
			State     string   `json:"state"`
			Ejections int64    `json:"ejections"`
			LatencyMS *float64 `json:"latency_ms"`
		} `json:"data"`
	}
	if err := adminCall(th.addr, th.adminKey, fasthttp.MethodGet, "/admin/upstreams", nil, fasthttp.StatusOK, &list); err != nil {
		return "no GET /admin/upstreams"
	}
	for _, r := range list.Data {
		if r.Upstream == "bad" {
			l := "—"
			if r.LatencyMS != nil {
				l = fmt.Sprintf("%.0f ms", *r.LatencyMS)
			}
			return fmt.Sprintf("%s, %d ejections, latency %s", r.State, r.Ejections, l)
		}
	}
	return "not listed"
}

func (r *failoverReport) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s: chat completions at %.0f req/s in an open loop to one model with two routes of equal weight, "+
		"one healthy (answers in %v) and one degraded as the row says; both upstreams time out at %v; recorded for %v after a %v warmup "+
		"(with none, the first requests, which meet the degraded route before anything is known of it, count too); "+
		"latencies from when each request was due; %d CPUs, loopback\n\n",
		r.Scenario, r.Rate, failoverLatency, failoverTimeout, r.Duration, r.Warmup, r.CPUs)
	b.WriteString("| degraded route | requests | success | p50 | p99 | errors | the degraded route at the end |\n")
	b.WriteString("|---|---:|---:|---:|---:|---|---|\n")
	for _, run := range r.Runs {
		o := run.Open
		errs := "none"
		if o.Errors > 0 {
			errs = errorKinds(o.ErrorsByKind)
		}
		fmt.Fprintf(&b, "| %s | %d | %.2f%% | %s | %s | %s | %s |\n", run.Fault, o.Requests, 100*run.Success,
			ms(o.Latency.P50), ms(o.Latency.P99), errs, run.BadRoute)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// verdict: the scenario measures; the targets are read from its table
// (a tokenhub from before route health is measured with it too).
func (r *failoverReport) verdict() error { return nil }
