// Command tokenhub-bench measures the gateway's overhead. It sends the same
// requests, on loopback and in one run, to the mock upstream directly, through
// tokenhub, and through nginx as a keep-alive reverse proxy when nginx is on
// PATH, then prints throughput and latency percentiles side by side with each
// target's throughput as a fraction of the direct one.
//
//	tokenhub-bench [-tokenhub bin/tokenhub] [-duration 10s] [-conns 64] [-scenario chat] [-json out.json]
//
// With -scenario streaming it measures what the gateway adds to a streamed
// chat completion: to its time to first byte and to each of its events, at
// -conns streams at a time, for the mock directly, tokenhub and nginx; and
// what tokenhub spends on each open stream, from its resident memory with
// -streams slow streams open at once. (-scenario stream, by contrast, sends
// streams like any other request and reports whole-stream throughput.)
//
//	tokenhub-bench -scenario streaming [-streams 10000] [-max-tokens 16] [-chunk-interval 1ms] [-duration 3s] [-json out.json]
//
// With -scenario propagation it measures instead how long a change made on
// one of several tokenhub nodes sharing a Valkey (a revoke, a rotate, a model
// taken out of a plan) takes to hold on the others, against the documented
// promise of 5s; it exits 1 if a change took longer.
//
//	tokenhub-bench -scenario propagation [-nodes 2] [-trials 100] [-valkey valkey-server] [-json out.json]
//
// It starts everything it measures (the mock in its own process, tokenhub,
// nginx and valkey-server as children with configs in a temporary directory)
// and stops them when done, failed or interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/bench/load"
	"github.com/tokenhub/tokenhub/bench/mock"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line's settings.
type options struct {
	tokenhub  string
	nginx     string
	scenario  string
	conns     int
	warmup    time.Duration
	duration  time.Duration
	timeout   time.Duration
	maxTokens int
	jsonOut   string
	limits    bool
	// For the streaming scenario.
	streams       int
	chunkInterval time.Duration
	// given holds the flags set on the command line: the streaming
	// scenario has defaults of its own for the others.
	given map[string]bool
	// For the propagation scenario.
	valkey string
	nodes  int
	trials int
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tokenhub-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.tokenhub, "tokenhub", "bin/tokenhub", "tokenhub `binary` to measure; empty to measure only the mock and nginx")
	fs.StringVar(&o.nginx, "nginx", "nginx", "nginx `binary` for the reverse-proxy baseline, looked up in PATH; skipped if missing; empty to skip")
	fs.StringVar(&o.scenario, "scenario", "chat", "requests to send: "+strings.Join(load.ScenarioNames(), ", ")+
		"; or "+streamingScenario+" for streams' time to first byte, cost per event and memory per open stream"+
		"; or "+propagationScenario+" to time changes across nodes sharing a Valkey")
	fs.IntVar(&o.conns, "conns", 64, fmt.Sprintf("concurrent connections, each a closed loop (%d in the %s scenario unless given)", streamingConns, streamingScenario))
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unrecorded warmup per target")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, fmt.Sprintf("recorded time per target (%v in the %s scenario unless given)", streamingDuration, streamingScenario))
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "timeout of one request")
	fs.IntVar(&o.maxTokens, "max-tokens", 16, "max_tokens of each request: words per answer, one event each when streamed")
	fs.StringVar(&o.jsonOut, "json", "", "also write the results to this `file` as JSON")
	fs.BoolVar(&o.limits, "limits", false, "give the key's plan every rate limit and budget (too high to refuse), to measure what enforcing them costs")
	fs.IntVar(&o.streams, "streams", 10000, fmt.Sprintf("streams held open at once through tokenhub in the %s scenario, to weigh each; 0 to skip; at most %d", streamingScenario, maxStreams))
	fs.DurationVar(&o.chunkInterval, "chunk-interval", time.Millisecond, "gap between the mock's events in the "+streamingScenario+" scenario")
	fs.StringVar(&o.valkey, "valkey", "valkey-server", "valkey-server `binary` for the "+propagationScenario+" scenario, looked up in PATH")
	fs.IntVar(&o.nodes, "nodes", 2, fmt.Sprintf("tokenhub nodes in the %s scenario, 2 to %d", propagationScenario, maxNodes))
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var rep output
	var err error
	switch o.scenario {
	case propagationScenario:
		rep, err = propagation(ctx, &o, stderr)
	case streamingScenario:
		rep, err = streaming(ctx, &o, stderr)
	default:
		rep, err = bench(ctx, &o, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "tokenhub-bench:", err)
		return 1
	}
	if err := rep.writeMarkdown(stdout); err != nil {
		fmt.Fprintln(stderr, "tokenhub-bench:", err)
		return 1
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

// output is what a scenario reports.
type output interface {
	// writeMarkdown prints the results for a reader.
	writeMarkdown(w io.Writer) error
	// verdict is an error when the results break a promise.
	verdict() error
}

// target is one thing the load is driven at.
type target struct {
	name string
	addr string
}

// bench starts the mock, tokenhub and nginx, measures each in turn and
// stops what it started. Progress goes to logw.
func bench(ctx context.Context, o *options, logw io.Writer) (*report, error) {
	// Everything that can be wrong with the command line fails here, before
	// anything is started.
	if o.duration <= 0 || o.duration > load.MaxDuration {
		return nil, fmt.Errorf("-duration %v: want more than 0 and at most %v", o.duration, load.MaxDuration)
	}
	if o.maxTokens < 1 {
		return nil, fmt.Errorf("-max-tokens %d: want at least 1", o.maxTokens)
	}
	sc, err := load.NewScenario(o.scenario, benchModel, o.maxTokens)
	if err != nil {
		return nil, err
	}
	tokenhubBin, nginxBin, notes, err := findBinaries(o)
	if err != nil {
		return nil, err
	}
	rep := &report{Scenario: sc.Name, Conns: o.conns, Warmup: o.warmup, Duration: o.duration, CPUs: runtime.NumCPU(), Started: time.Now(), Notes: notes}

	dir, err := os.MkdirTemp("", "tokenhub-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	mockAddr, stopMock, err := serveMock(mock.Options{})
	if err != nil {
		return nil, err
	}
	defer stopMock()
	fmt.Fprintf(logw, "mock serving on %s\n", mockAddr)
	targets := []target{{"direct", mockAddr}}

	// The mock ignores Authorization, but every target gets the same request,
	// header included, so that they compare.
	auth := "Bearer sk-bench-direct"
	if tokenhubBin != "" {
		th, err := startTokenhub(ctx, tokenhubBin, dir, func(addr, store string) []byte {
			return tokenhubConfig(addr, store, mockAddr, o.limits)
		})
		if err != nil {
			return nil, err
		}
		defer th.proc.stop(10 * time.Second)
		fmt.Fprintf(logw, "tokenhub serving on %s\n", th.addr)
		auth = "Bearer " + th.key
		targets = append(targets, target{"tokenhub", th.addr})
	}
	if nginxBin != "" {
		proc, addr, err := startNginx(ctx, nginxBin, dir, mockAddr)
		if err != nil {
			return nil, err
		}
		defer proc.stop(10 * time.Second)
		fmt.Fprintf(logw, "nginx serving on %s\n", addr)
		targets = append(targets, target{"nginx", addr})
	}
	sc.Request.Headers = append(sc.Request.Headers, load.Header{Name: "Authorization", Value: auth})

	for _, t := range targets {
		fmt.Fprintf(logw, "%s: %v warmup, %v with %d connections...\n", t.name, o.warmup, o.duration, o.conns)
		res, err := load.Run(ctx, load.Config{
			Addr: t.addr, Request: sc.Request, Conns: o.conns,
			Warmup: o.warmup, Duration: o.duration, Timeout: o.timeout,
		})
		if err == nil && ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
		res.Target = t.name
		rep.add(res)
		fmt.Fprintf(logw, "%s: %.0f req/s, p50 %s, p99 %s, %d errors\n",
			t.name, res.Throughput, ms(res.Latency.P50), ms(res.Latency.P99), res.Errors)
	}
	return rep, nil
}

// findBinaries looks up the tokenhub and nginx binaries o names, "" for one
// not to be measured. A missing tokenhub is an error; a missing nginx is a
// note for the report.
func findBinaries(o *options) (tokenhubBin, nginxBin string, notes []string, err error) {
	if o.tokenhub != "" {
		if tokenhubBin, err = exec.LookPath(o.tokenhub); err != nil {
			return "", "", nil, fmt.Errorf("tokenhub binary %q: %w; build it with `make tokenhub`, point -tokenhub at it, or pass -tokenhub= to measure only the mock and nginx", o.tokenhub, err)
		}
	}
	if o.nginx != "" {
		var lookErr error
		if nginxBin, lookErr = exec.LookPath(o.nginx); lookErr != nil {
			notes = append(notes, fmt.Sprintf("nginx: not measured (%q not found on PATH)", o.nginx))
		}
	}
	return tokenhubBin, nginxBin, notes, nil
}

// serveMock serves the mock upstream, answering as o says, in this process on
// a free loopback port.
func serveMock(o mock.Options) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("mock: listen: %w", err)
	}
	srv := &fasthttp.Server{
		Handler:               mock.New(o).Handler,
		NoDefaultServerHeader: true,
		ReadBufferSize:        16 << 10,
		IdleTimeout:           2 * time.Minute,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Shutdown closes the listener first, so Serve returns at once; the
		// deadline only bounds waiting for connections to go idle.
		_ = srv.ShutdownWithContext(ctx)
		<-served
	}, nil
}
