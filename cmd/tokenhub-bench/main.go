// Command tokenhub-bench measures the gateway's overhead. It starts
// everything it measures on loopback (the mock upstream in a process of its
// own, tokenhub, nginx as a keep-alive reverse proxy when nginx is on PATH,
// valkey-server when a scenario needs it), each as a child with its config
// in a temporary directory, and stops them when done, failed or interrupted.
//
//	tokenhub-bench [-tokenhub bin/tokenhub] [-scenario chat] [-duration 10s] [-conns 64] [-rate 0] [-json out.json] [-markdown out.md]
//
// -scenario names one scenario, several separated by commas, or a suite:
// quick (what `make bench` runs) or full (every scenario, `make bench-full`).
// Several scenarios print one report each, under a header naming the
// machine, and -json then writes them all in one file.
//
// The throughput scenarios (chat, embeddings, stream, keys, budgets, valkey)
// send the same requests to the mock directly (the ceiling), through
// tokenhub and, for chat, embeddings and stream, through nginx: first in a
// closed loop, -conns connections as fast as each target answers; then in an
// open loop at one fixed rate for every target (-rate, or half tokenhub's
// closed-loop maximum), timing each request from when it was due so that a
// stall is not hidden (no coordinated omission), and subtracting the
// mock's own latencies to give what each target adds. For every target they
// report the CPU seconds its processes spent per 10,000 requests, their peak
// resident memory and, for tokenhub when it serves /metrics, its heap
// allocations per request.
//
//   - chat: buffered chat completions. -limits gives the key's plan every
//     rate limit and budget, set too high to refuse.
//   - embeddings: one embedding per request.
//   - stream: streamed chat completions, each stream one request.
//   - keys: -keys keys created through the Keys API, then traffic spread
//     uniformly over them and Zipf-skewed, with tokenhub's memory per key.
//   - budgets: a plan with a monthly and a per-request budget, too high to
//     refuse.
//   - valkey: -nodes tokenhub nodes sharing one valkey-server, the load split
//     across them.
//   - ratelimit: a plan allowing -limit-rps requests a second, offered twice
//     as many in an open loop: the refusals must be OpenAI's 429s and the
//     admitted rate the limit.
//   - streaming: what the gateway adds to a stream's time to first byte and
//     to each event, at -conns streams at a time; and what it holds per
//     open stream, from its memory with -streams slow streams open.
//   - failover: one model with two routes, one healthy and one degraded in
//     turn (hung, half its answers 500, ten times slower, 429 with a
//     retry-after), in an open loop: success rate and p50/p99 after the
//     first seconds, against the healthy route alone.
//   - propagation: how long a change made on one of -nodes tokenhub nodes
//     sharing a Valkey (a revoke, a rotate, a model taken out of a plan)
//     takes to hold on the others, against the documented 5s; it exits 1 if
//     a change took longer.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tokenhub/tokenhub/bench/load"
)

func main() {
	if os.Getenv(mockEnv) == "1" {
		os.Exit(serveMock(os.Args[1:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line's settings.
type options struct {
	tokenhub  string
	nginx     string
	valkey    string
	scenario  string
	conns     int
	warmup    time.Duration
	duration  time.Duration
	timeout   time.Duration
	maxTokens int
	jsonOut   string
	mdOut     string
	limits    bool
	// For the throughput scenarios.
	rate        float64
	openConns   int
	mockLatency time.Duration
	// For the keys scenario.
	keys int
	// For the ratelimit scenario.
	limitRPS int
	// For the streaming scenario.
	streams       int
	chunkInterval time.Duration
	// For the propagation and valkey scenarios.
	nodes  int
	trials int
	// given holds the flags set on the command line: some scenarios and
	// suites have defaults of their own for the others.
	given map[string]bool
}

// Bounds of the command line.
const (
	maxKeys     = 1_000_000
	maxLimitRPS = 100_000
)

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tokenhub-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.tokenhub, "tokenhub", "bin/tokenhub", "tokenhub `binary` to measure; empty to measure only the mock and nginx")
	fs.StringVar(&o.nginx, "nginx", "nginx", "nginx `binary` for the reverse-proxy baseline, looked up in PATH; skipped if missing; empty to skip")
	fs.StringVar(&o.valkey, "valkey", "valkey-server", "valkey-server `binary` for the "+valkeyScenario+" and "+propagationScenario+" scenarios, looked up in PATH")
	fs.StringVar(&o.scenario, "scenario", "chat", "scenarios to run, separated by commas: "+strings.Join(scenarioNames(), ", ")+
		"; or a suite: "+strings.Join(suiteNames(), ", "))
	fs.IntVar(&o.conns, "conns", 64, fmt.Sprintf("concurrent connections of the closed loops (%d in the %s scenario unless given)", streamingConns, streamingScenario))
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unrecorded warmup per target and loop")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, fmt.Sprintf("recorded time per target and loop (%v in the %s scenario unless given)", streamingDuration, streamingScenario))
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "timeout of one request")
	fs.IntVar(&o.maxTokens, "max-tokens", 16, "max_tokens of each request: words per answer, one event each when streamed")
	fs.StringVar(&o.jsonOut, "json", "", "also write the results to this `file` as JSON")
	fs.StringVar(&o.mdOut, "markdown", "", "also write the report to this `file`")
	fs.BoolVar(&o.limits, "limits", false, "give the key's plan every rate limit and budget (too high to refuse), to measure what enforcing them costs")
	fs.Float64Var(&o.rate, "rate", 0, "requests per second of the open loops; 0 for half tokenhub's closed-loop maximum in each scenario")
	fs.IntVar(&o.openConns, "open-conns", 128, "most requests in flight in the open loops, each on a connection of its own")
	fs.DurationVar(&o.mockLatency, "mock-latency", 0, "the mock's delay before each answer in the throughput scenarios, as a real upstream's; "+
		"the closed loops then measure how many requests a target keeps in flight rather than its speed")
	fs.IntVar(&o.keys, "keys", 100000, fmt.Sprintf("keys created in the %s scenario, at most %d", keysScenario, maxKeys))
	fs.IntVar(&o.limitRPS, "limit-rps", 200, fmt.Sprintf("requests per second the plan allows in the %s scenario (its rpm is 60 times as many); twice as many are offered", rateLimitScenario))
	fs.IntVar(&o.streams, "streams", 10000, fmt.Sprintf("streams held open at once through tokenhub in the %s scenario, to weigh each; 0 to skip; at most %d", streamingScenario, maxStreams))
	fs.DurationVar(&o.chunkInterval, "chunk-interval", time.Millisecond, "gap between the mock's events in the "+streamingScenario+" scenario")
	fs.IntVar(&o.nodes, "nodes", 2, fmt.Sprintf("tokenhub nodes in the %s and %s scenarios, 2 to %d", valkeyScenario, propagationScenario, maxNodes))
	fs.IntVar(&o.trials, "trials", 100, "changes made in the "+propagationScenario+" scenario, alternately revokes and rotates, each with a plan change")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tokenhub-bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	o.given = make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { o.given[f.Name] = true })
	plan, err := planScenarios(o.scenario)
	if err == nil {
		err = o.check()
	}
	if err != nil {
		fmt.Fprintln(stderr, "tokenhub-bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rep output
	if len(plan.runs) == 1 && plan.suite == "" {
		rep, err = plan.runs[0].run(ctx, &o, stderr)
	} else {
		rep, err = runSuite(ctx, &o, plan, args, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "tokenhub-bench:", err)
		return 1
	}
	var md bytes.Buffer
	if err := rep.writeMarkdown(&md); err != nil {
		fmt.Fprintln(stderr, "tokenhub-bench:", err)
		return 1
	}
	if _, err := stdout.Write(md.Bytes()); err != nil {
		fmt.Fprintln(stderr, "tokenhub-bench:", err)
		return 1
	}
	if o.mdOut != "" {
		if err := os.WriteFile(o.mdOut, md.Bytes(), 0o644); err != nil {
			fmt.Fprintln(stderr, "tokenhub-bench: markdown report:", err)
			return 1
		}
	}
	if o.jsonOut != "" {
		if err := writeJSON(o.jsonOut, rep); err != nil {
			fmt.Fprintln(stderr, "tokenhub-bench:", err)
			return 1
		}
	}
	if err := rep.verdict(); err != nil {
		fmt.Fprintln(stderr, "tokenhub-bench:", err)
		return 1
	}
	return 0
}

// check rejects settings no scenario can use, before anything starts.
// Settings only some scenarios use are checked by those.
func (o *options) check() error {
	switch {
	case o.warmup < 0 || o.warmup > load.MaxDuration:
		return fmt.Errorf("-warmup %v: want 0 to %v", o.warmup, load.MaxDuration)
	case o.timeout <= 0:
		return fmt.Errorf("-timeout %v: want more than 0", o.timeout)
	case o.rate < 0 || o.rate > load.MaxRate:
		return fmt.Errorf("-rate %v: want 0 to %d", o.rate, load.MaxRate)
	case o.openConns < 1 || o.openConns > load.MaxConns:
		return fmt.Errorf("-open-conns %d: want 1 to %d", o.openConns, load.MaxConns)
	case o.keys < 1 || o.keys > maxKeys:
		return fmt.Errorf("-keys %d: want 1 to %d", o.keys, maxKeys)
	case o.limitRPS < 1 || o.limitRPS > maxLimitRPS:
		return fmt.Errorf("-limit-rps %d: want 1 to %d", o.limitRPS, maxLimitRPS)
	case o.mockLatency < 0 || o.mockLatency > time.Minute:
		return fmt.Errorf("-mock-latency %v: want 0 to 1m", o.mockLatency)
	}
	return nil
}

// output is what a scenario reports.
type output interface {
	// writeMarkdown prints the results for a reader.
	writeMarkdown(w io.Writer) error
	// verdict is an error when the results break a promise.
	verdict() error
}
