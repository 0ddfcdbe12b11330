package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// runner runs one scenario, its progress going to logw.
type runner func(ctx context.Context, o *options, logw io.Writer) (output, error)

// scenario is one of the scenarios -scenario names.
type scenario struct {
	name string
	run  runner
	// needsValkey scenarios are skipped by a suite when valkey-server is
	// missing; run alone, they fail saying how to get it.
	needsValkey bool
}

// scenarios lists every scenario, in the order the full suite runs them.
var scenarios = []scenario{
	{name: "chat", run: proxiedRunner("chat")},
	{name: "embeddings", run: proxiedRunner("embeddings")},
	{name: "stream", run: proxiedRunner("stream")},
	{name: claudeScenario, run: func(ctx context.Context, o *options, logw io.Writer) (output, error) {
		return claudeChat(ctx, o, logw)
	}},
	{name: streamingScenario, run: func(ctx context.Context, o *options, logw io.Writer) (output, error) {
		return streaming(ctx, o, logw)
	}},
	{name: keysScenario, run: func(ctx context.Context, o *options, logw io.Writer) (output, error) {
		return manyKeys(ctx, o, logw)
	}},
	{name: budgetsScenario, run: func(ctx context.Context, o *options, logw io.Writer) (output, error) {
		return budgets(ctx, o, logw)
	}},
	{name: rateLimitScenario, run: func(ctx context.Context, o *options, logw io.Writer) (output, error) {
		return rateLimit(ctx, o, logw)
	}},
	{name: failoverScenario, run: func(ctx context.Context, o *options, logw io.Writer) (output, error) {
		return failover(ctx, o, logw)
	}},
	{name: valkeyScenario, needsValkey: true, run: func(ctx context.Context, o *options, logw io.Writer) (output, error) {
		return valkeyNodes(ctx, o, logw)
	}},
	{name: propagationScenario, needsValkey: true, run: func(ctx context.Context, o *options, logw io.Writer) (output, error) {
		return propagation(ctx, o, logw)
	}},
}

func scenarioNames() []string {
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.name
	}
	return names
}

// suite is a named list of scenarios, with the settings it changes for
// some of them unless the command line sets those itself.
type suite struct {
	name  string
	about string
	runs  []string
	// tweak adjusts the settings of one scenario of the suite.
	tweak func(scenario string, o *options)
}

// suites are the -scenario values that name several scenarios.
var suites = []suite{
	{
		name:  "quick",
		about: "a representative subset in about two minutes: chat through every target in a closed and an open loop, streams' time to first byte, a rate limit, and propagation across nodes",
		runs:  []string{"chat", streamingScenario, rateLimitScenario, propagationScenario},
		tweak: func(name string, o *options) {
			// Holding 10,000 streams to weigh them takes the held
			// streams' length, 11s, and more memory than a laptop spares.
			if name == streamingScenario && !o.given["streams"] {
				o.streams = 0
			}
		},
	},
	{
		name:  "full",
		about: "every scenario",
		runs:  scenarioNames(),
	},
}

func suiteNames() []string {
	names := make([]string, len(suites))
	for i, s := range suites {
		names[i] = s.name
	}
	return names
}

// scenarioPlan is what -scenario asks for.
type scenarioPlan struct {
	suite string // "" unless a suite was named
	runs  []plannedRun
}

// plannedRun is one scenario to run, with its suite's tweak if any.
type plannedRun struct {
	scenario
	tweak func(scenario string, o *options)
}

// planScenarios reads -scenario: a suite's name, or scenario names separated
// by commas.
func planScenarios(arg string) (scenarioPlan, error) {
	if i := slices.IndexFunc(suites, func(s suite) bool { return s.name == arg }); i >= 0 {
		s := suites[i]
		p := scenarioPlan{suite: s.name}
		for _, name := range s.runs {
			sc, _ := findScenario(name)
			p.runs = append(p.runs, plannedRun{scenario: sc, tweak: s.tweak})
		}
		return p, nil
	}
	var p scenarioPlan
	for name := range strings.SplitSeq(arg, ",") {
		sc, ok := findScenario(strings.TrimSpace(name))
		if !ok {
			return p, fmt.Errorf("unknown scenario %q (want %s; or a suite: %s)", name,
				strings.Join(scenarioNames(), ", "), strings.Join(suiteNames(), ", "))
		}
		p.runs = append(p.runs, plannedRun{scenario: sc})
	}
	return p, nil
}

func findScenario(name string) (scenario, bool) {
	i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == name })
	if i < 0 {
		return scenario{}, false
	}
	return scenarios[i], true
}

// runSuite runs the planned scenarios one after the other. A scenario that
// fails does not stop the others: its error is reported with them.
// Interrupting stops the suite.
func runSuite(ctx context.Context, o *options, p scenarioPlan, args []string, logw io.Writer) (*suiteReport, error) {
	rep := &suiteReport{Suite: p.suite, Command: "tokenhub-bench " + strings.Join(args, " "), Started: time.Now(), Machine: describeMachine(ctx, o)}
	if p.suite == "" {
		rep.Suite = "custom"
	}
	_, valkeyErr := exec.LookPath(o.valkey)
	for _, r := range p.runs {
		so := *o
		if r.tweak != nil {
			r.tweak(r.name, &so)
		}
		res := scenarioResult{Name: r.name}
		fmt.Fprintf(logw, "== %s\n", r.name)
		begin := time.Now()
		switch {
		case r.needsValkey && valkeyErr != nil:
			res.Skipped = fmt.Sprintf("valkey-server not found (%q): %s", o.valkey, valkeyHint)
		default:
			out, err := r.run(ctx, &so, logw)
			if err != nil {
				res.Error = err.Error()
				fmt.Fprintf(logw, "%s: %v\n", r.name, err)
			} else {
				res.Report = out
			}
		}
		res.Took = time.Since(begin).Round(time.Millisecond)
		rep.Scenarios = append(rep.Scenarios, res)
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
	}
	rep.Took = time.Since(rep.Started).Round(time.Millisecond)
	return rep, nil
}

// suiteReport is the report of several scenarios.
type suiteReport struct {
	Suite     string           `json:"suite"`
	Command   string           `json:"command"`
	Machine   machine          `json:"machine"`
	Started   time.Time        `json:"started"`
	Took      time.Duration    `json:"took_ns"`
	Scenarios []scenarioResult `json:"scenarios"`
}

// scenarioResult is one scenario of a suite: its report, or why there is
// none.
type scenarioResult struct {
	Name    string        `json:"name"`
	Took    time.Duration `json:"took_ns"`
	Report  output        `json:"report,omitempty"`
	Skipped string        `json:"skipped,omitempty"`
	Error   string        `json:"error,omitempty"`
}

func (r *suiteReport) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# tokenhub-bench: %s\n\n", r.Suite)
	m := r.Machine
	fmt.Fprintf(&b, "- command: `%s`\n- machine: %s, %d CPUs, Linux %s\n- software: %s, %s, %s, tokenhub-bench built with %s\n- started %s, took %s\n",
		r.Command, m.CPU, m.CPUs, m.Kernel, m.Tokenhub, m.Nginx, m.Valkey, m.Go,
		r.Started.UTC().Format(time.RFC3339), r.Took.Round(time.Second))
	for _, s := range r.Scenarios {
		fmt.Fprintf(&b, "\n## %s\n\n", s.Name)
		switch {
		case s.Skipped != "":
			fmt.Fprintf(&b, "skipped: %s\n", s.Skipped)
		case s.Error != "":
			fmt.Fprintf(&b, "FAILED after %s: %s\n", s.Took.Round(time.Second), s.Error)
		default:
			if err := s.Report.writeMarkdown(&b); err != nil {
				return err
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// verdict names every scenario that failed or broke a promise.
func (r *suiteReport) verdict() error {
	var errs []error
	for _, s := range r.Scenarios {
		switch {
		case s.Error != "":
			errs = append(errs, fmt.Errorf("%s: %s", s.Name, s.Error))
		case s.Report != nil:
			if err := s.Report.verdict(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// machine describes where a suite ran, for reading its numbers.
type machine struct {
	CPU      string `json:"cpu"`
	CPUs     int    `json:"cpus"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	Tokenhub string `json:"tokenhub"`
	Nginx    string `json:"nginx"`
	Valkey   string `json:"valkey"`
}

func describeMachine(ctx context.Context, o *options) machine {
	m := machine{CPU: "unknown CPU", CPUs: runtime.NumCPU(), Kernel: "unknown", Go: runtime.Version(),
		Tokenhub: "tokenhub not measured", Nginx: "nginx not found", Valkey: "valkey-server not found"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range bytes.Lines(b) {
			if k, v, ok := bytes.Cut(line, []byte(":")); ok && string(bytes.TrimSpace(k)) == "model name" {
				m.CPU = string(bytes.TrimSpace(v))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = string(bytes.TrimSpace(b))
	}
	version := func(bin string, args ...string) string {
		path, err := exec.LookPath(bin)
		if err != nil {
			return ""
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, path, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	if o.tokenhub != "" {
		if v := version(o.tokenhub, "version"); v != "" {
			m.Tokenhub = v
		}
	}
	if o.nginx != "" {
		if v := version(o.nginx, "-v"); v != "" {
			m.Nginx = strings.TrimPrefix(v, "nginx version: ")
		}
	}
	if v := version(o.valkey, "--version"); v != "" {
		m.Valkey = v
	}
	return m
}
