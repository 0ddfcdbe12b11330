package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub/bench/load"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// proxiedRunner runs the throughput scenario of load's scenario name (chat,
// embeddings or stream) through every target.
func proxiedRunner(name string) runner {
	return func(ctx context.Context, o *options, logw io.Writer) (output, error) {
		about := "the key's plan has no limits"
		if o.limits {
			about = "the key's plan has every rate limit and budget, too high to refuse"
		}
		return proxied(ctx, o, logw, name, name, benchPlan(o.limits), about, true)
	}
}

// budgetsScenario measures what enforcing budgets costs.
const budgetsScenario = "budgets"

// budgets runs chat completions through a plan with a monthly and a
// per-request budget, and reads the key's spend back.
func budgets(ctx context.Context, o *options, logw io.Writer) (*report, error) {
	return proxied(ctx, o, logw, budgetsScenario, "chat", planBudgets,
		"the key's plan has a monthly budget ($1,000,000) and a per-request one ($1,000), too high to refuse; "+
			"compare tokenhub's row with the chat scenario's", false)
}

// proxied starts the mock, tokenhub with plan and, with viaNginx, nginx, and
// measures the throughput of load's scenario name through each, reported as
// scenario. about says what the plan is, for the report.
func proxied(ctx context.Context, o *options, logw io.Writer, scenario, name, plan, about string, viaNginx bool) (*report, error) {
	if err := o.checkThroughput(); err != nil {
		return nil, err
	}
	sc, err := load.NewScenario(name, benchModel, o.maxTokens)
	if err != nil {
		return nil, err
	}
	tokenhubBin, nginxBin, notes, err := findBinaries(o)
	if err != nil {
		return nil, err
	}
	if !viaNginx {
		nginxBin = ""
	}
	st, err := startStack(ctx, logw, stackSpec{tokenhubBin: tokenhubBin, nginxBin: nginxBin,
		gw: gateway{plan: plan}, mock: mock.Options{Latency: o.mockLatency}})
	if err != nil {
		return nil, err
	}
	defer st.close()
	what := map[string]string{
		"chat":       fmt.Sprintf("buffered chat completions of %d words", o.maxTokens),
		"embeddings": fmt.Sprintf("one embedding of %d dimensions per request", mock.DefaultEmbeddingDims),
		"stream":     fmt.Sprintf("streamed chat completions of %d words, each stream one request, timed to its end", o.maxTokens),
	}[name]
	if o.mockLatency > 0 {
		what += fmt.Sprintf(", the mock answering after %v", o.mockLatency)
	}
	if st.th != nil {
		what += "; " + about
	}
	sc.Request.Headers = append(sc.Request.Headers, load.Header{Name: "Authorization", Value: "Bearer " + st.key()})
	rep, err := runThroughput(ctx, o, logw, scenario, what, sc.Request, st.targets)
	if err != nil {
		return nil, err
	}
	rep.IdleRSS = st.idleRSS
	rep.Notes = append(rep.Notes, notes...)
	if st.th != nil && plan == planBudgets {
		rep.Notes = append(rep.Notes, st.th.usageNote(st.th.keyID))
	}
	return rep, nil
}

// checkThroughput checks the settings of a throughput scenario.
func (o *options) checkThroughput() error {
	if o.duration <= 0 || o.duration > load.MaxDuration {
		return fmt.Errorf("-duration %v: want more than 0 and at most %v", o.duration, load.MaxDuration)
	}
	if o.conns < 1 || o.conns > load.MaxConns {
		return fmt.Errorf("-conns %d: want 1 to %d", o.conns, load.MaxConns)
	}
	if o.maxTokens < 1 {
		return fmt.Errorf("-max-tokens %d: want at least 1", o.maxTokens)
	}
	return nil
}

// cutShort is err, or ctx's cause when a run returned no error because ctx
// ended: a run cut short must not pass for a whole one.
func cutShort(ctx context.Context, err error) error {
	if err == nil && ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// runThroughput drives req at each target in a closed loop, then at all of
// them in an open loop at one rate, and reports what it measured. The first
// target is the mock directly, the baseline.
func runThroughput(ctx context.Context, o *options, logw io.Writer, name, what string, req load.Request, targets []*target) (*report, error) {
	rep := &report{Scenario: name, What: what, Conns: o.conns, Warmup: o.warmup, Duration: o.duration,
		CPUs: runtime.NumCPU(), Started: time.Now()}
	for _, t := range targets {
		fmt.Fprintf(logw, "%s: closed loop, %v warmup, %v with %d connections...\n", t.name, o.warmup, o.duration, o.conns)
		m := &meter{t: t}
		res, err := load.Run(ctx, load.Config{
			Addr: t.addr, Addrs: t.addrs, Request: req, Conns: o.conns,
			Warmup: o.warmup, Duration: o.duration, Timeout: o.timeout,
			OnRecord: m.begin, OnRecordEnd: m.end,
		})
		if err = cutShort(ctx, err); err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
		res.Target = t.name
		rep.add(res, m.cost(res.Requests))
		fmt.Fprintf(logw, "%s: %.0f req/s, p50 %s, p99 %s, %d errors\n",
			t.name, res.Throughput, ms(res.Latency.P50), ms(res.Latency.P99), res.Errors)
	}

	rate, from := o.rate, "set by -rate"
	if rate == 0 {
		basis := rep.Results[0]
		for _, r := range rep.Results {
			if strings.HasPrefix(r.Target, "tokenhub") {
				basis = r
				break
			}
		}
		rate, from = math.Round(basis.Throughput/2), "half "+basis.Target+"'s closed-loop maximum"
	}
	if rate < 1 {
		rep.Notes = append(rep.Notes, "open loop: not run, for want of a rate (no target answered in the closed loop)")
		return rep, nil
	}
	rep.Open = &openReport{Rate: rate, RateFrom: from, Conns: o.openConns}
	for _, t := range targets {
		fmt.Fprintf(logw, "%s: open loop, %v warmup, %v at %.0f req/s...\n", t.name, o.warmup, o.duration, rate)
		m := &meter{t: t}
		res, err := load.RunOpen(ctx, load.Config{
			Addr: t.addr, Addrs: t.addrs, Request: req, Conns: o.openConns, Rate: rate,
			Warmup: o.warmup, Duration: o.duration, Timeout: o.timeout,
			OnRecord: m.begin, OnRecordEnd: m.end,
		})
		if err = cutShort(ctx, err); err != nil {
			return nil, fmt.Errorf("%s: open loop: %w", t.name, err)
		}
		res.Target = t.name
		rep.Open.add(res, m.cost(res.Requests))
		fmt.Fprintf(logw, "%s: p50 %s, p99 %s, p99.9 %s, %d late, %d unsent, %d errors\n",
			t.name, ms(res.Latency.P50), ms(res.Latency.P99), ms(res.Latency.P999), res.Late, res.Unsent, res.Errors)
	}
	return rep, nil
}

// stackSpec says what startStack starts.
type stackSpec struct {
	// tokenhubBin and nginxBin are the binaries, "" for a target not to
	// start.
	tokenhubBin, nginxBin string
	// valkeyBin, when set, starts a valkey-server after the mock, for
	// tokenhub nodes the caller starts to share.
	valkeyBin string
	// gw is tokenhub's config but for its address, store and routes.
	gw gateway
	// mock shapes the mock's answers.
	mock mock.Options
	// anthropic makes tokenhub's upstream an anthropic one (the mock's
	// Messages API), its model translated from chat (claude.go).
	anthropic bool
}

// stack is what a throughput scenario started: the mock, and tokenhub and
// nginx in front of it, with a target for each, the mock first; or the mock
// and a valkey-server, for nodes the scenario starts itself.
type stack struct {
	dir      string
	mockAddr string
	// valkey and valkeyAddr are the valkey-server's, when spec.valkeyBin
	// was set.
	valkey     *process
	valkeyAddr string
	th         *tokenhub
	// idleRSS is tokenhub's resident memory once started.
	idleRSS int64
	targets []*target
	stops   []func()
}

// startStack starts what spec says in a new temporary directory. On error
// it stops what it started; otherwise close does.
func startStack(ctx context.Context, logw io.Writer, spec stackSpec) (st *stack, err error) {
	st = &stack{}
	defer func() {
		if err != nil {
			st.close()
		}
	}()
	if st.dir, err = tempDir(); err != nil {
		return nil, err
	}
	st.stops = append(st.stops, func() { os.RemoveAll(st.dir) }) //nolint:errcheck // a temporary directory: nothing to do if it lingers
	mockProc, mockAddr, err := startMock(ctx, st.dir, "mock", spec.mock)
	if err != nil {
		return nil, err
	}
	st.onClose(mockProc)
	st.mockAddr = mockAddr
	fmt.Fprintf(logw, "mock serving on %s\n", mockAddr)
	st.targets = append(st.targets, &target{name: "direct", addr: mockAddr, procs: pids(mockProc)})

	if spec.valkeyBin != "" {
		proc, addr, err := startValkey(ctx, spec.valkeyBin, st.dir)
		if err != nil {
			return nil, err
		}
		st.stops = append(st.stops, func() { proc.stop(5 * time.Second) })
		st.valkey, st.valkeyAddr = proc, addr
		fmt.Fprintf(logw, "valkey-server serving on %s\n", addr)
	}
	if spec.tokenhubBin != "" {
		gw := spec.gw
		gw.routes = []mockRoute{{upstream: "bench", model: benchModel, mockAddr: mockAddr, maxConns: 1024, anthropic: spec.anthropic}}
		th, err := startTokenhub(ctx, spec.tokenhubBin, st.dir, "tokenhub", gw)
		if err != nil {
			return nil, err
		}
		st.onClose(th.proc)
		st.th = th
		if m, err := readMemory(th.proc.pid()); err == nil {
			st.idleRSS = m.RSS
		}
		fmt.Fprintf(logw, "tokenhub serving on %s\n", th.addr)
		st.targets = append(st.targets, th.target("tokenhub"))
	}
	if spec.nginxBin != "" {
		proc, addr, err := startNginx(ctx, spec.nginxBin, st.dir, mockAddr)
		if err != nil {
			return nil, err
		}
		st.onClose(proc)
		fmt.Fprintf(logw, "nginx serving on %s\n", addr)
		st.targets = append(st.targets, &target{name: "nginx", addr: addr, procs: withChildren(proc)})
	}
	return st, nil
}

// onClose has close stop p.
func (st *stack) onClose(p *process) {
	st.stops = append(st.stops, func() { p.stop(10 * time.Second) })
}

// close stops what the stack started, last first.
func (st *stack) close() {
	for i := len(st.stops) - 1; i >= 0; i-- {
		st.stops[i]()
	}
	st.stops = nil
}

// key is the client key every target is sent: tokenhub's, or a dummy the
// mock and nginx ignore. Every target gets the same header so that they
// compare.
func (st *stack) key() string {
	if st.th != nil {
		return st.th.key
	}
	return "sk-bench-direct"
}

// tempDir makes a scenario's working directory: under /dev/shm when it
// exists, so that tokenhub's embedded store writes to memory. It fsyncs
// every write, which would otherwise make creating keys a benchmark of the
// disk: on a cloud VM's disk about 2,200 keys a second, on tmpfs 14,000.
func tempDir() (string, error) {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "tokenhub-bench-"); err == nil {
			return dir, nil
		}
	}
	return os.MkdirTemp("", "tokenhub-bench-")
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

// needTokenhub looks up the tokenhub binary of a scenario that measures
// tokenhub alone, which -tokenhub must then name.
func needTokenhub(o *options, scenario string) (string, error) {
	if o.tokenhub == "" {
		return "", fmt.Errorf("the %s scenario measures tokenhub: give -tokenhub a binary (`make tokenhub` builds bin/tokenhub)", scenario)
	}
	bin, err := exec.LookPath(o.tokenhub)
	if err != nil {
		return "", fmt.Errorf("tokenhub binary %q: %w; build it with `make tokenhub` or point -tokenhub at it", o.tokenhub, err)
	}
	return bin, nil
}

// clusterBinaries looks up the binaries of a scenario of tokenhub nodes
// sharing a valkey-server: valkey-server first, then tokenhub.
func clusterBinaries(o *options, scenario string) (tokenhubBin, valkeyBin string, err error) {
	if valkeyBin, err = exec.LookPath(o.valkey); err != nil {
		return "", "", fmt.Errorf("the %s scenario needs valkey-server: %w; %s", scenario, err, valkeyHint)
	}
	if tokenhubBin, err = needTokenhub(o, scenario); err != nil {
		return "", "", err
	}
	return tokenhubBin, valkeyBin, nil
}
