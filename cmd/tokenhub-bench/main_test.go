package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/bench/load"
	"github.com/tokenhub/tokenhub/config"
)

func TestCommandLineErrors(t *testing.T) {
	f := func(want string, args ...string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		begin := time.Now()
		code := run(args, &stdout, &stderr)
		if code == 0 || !strings.Contains(stderr.String(), want) || stdout.Len() != 0 {
			t.Fatalf("%q: exit %d, stderr %q, stdout %q; want a failure saying %q", args, code, stderr.String(), stdout.String(), want)
		}
		if took := time.Since(begin); took > 2*time.Second {
			t.Fatalf("%q: failed after %v: a bad command line must fail before anything starts", args, took)
		}
	}
	f("build it with `make tokenhub`", "-tokenhub", filepath.Join(t.TempDir(), "no-such-tokenhub"))
	f(`unknown scenario "nope"`, "-tokenhub=", "-scenario", "nope")
	f("-duration 0s", "-tokenhub=", "-duration", "0")
	f("-max-tokens 0", "-tokenhub=", "-max-tokens", "0")
	f("unexpected arguments", "-tokenhub=", "extra")
	f("flag provided but not defined", "-bogus")
}

// TestDirectAndNginx runs the whole benchmark without tokenhub: the mock
// directly, and nginx when it is installed.
func TestDirectAndNginx(t *testing.T) {
	out := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-tokenhub=", "-duration", "300ms", "-warmup", "50ms", "-conns", "4", "-json", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	_, nginxErr := exec.LookPath("nginx")
	wantTargets := []string{"direct"}
	if nginxErr == nil {
		wantTargets = append(wantTargets, "nginx")
	} else if !strings.Contains(stdout.String(), "nginx: not measured") {
		t.Fatalf("no nginx, and the report does not say so:\n%s", stdout.String())
	}
	for _, name := range wantTargets {
		if !strings.Contains(stdout.String(), "| "+name+" | ") {
			t.Fatalf("no %s row in:\n%s", name, stdout.String())
		}
	}

	var rep struct {
		Scenario string `json:"scenario"`
		Results  []struct {
			load.Result
			VsDirect float64 `json:"throughput_vs_direct"`
		} `json:"results"`
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("json report: %v\n%s", err, b)
	}
	if rep.Scenario != "chat" || len(rep.Results) != len(wantTargets) {
		t.Fatalf("json report: %s", b)
	}
	for i, r := range rep.Results {
		if r.Target != wantTargets[i] || r.OK == 0 || r.Errors != 0 || r.VsDirect <= 0 {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	if rep.Results[0].VsDirect != 1 {
		t.Fatalf("direct vs direct = %v, want 1", rep.Results[0].VsDirect)
	}
}

// TestWithTokenhub runs the whole benchmark with a tokenhub binary named by
// $TOKENHUB_BIN (`make tokenhub` builds bin/tokenhub).
func TestWithTokenhub(t *testing.T) {
	bin := os.Getenv("TOKENHUB_BIN")
	if bin == "" {
		t.Skip("set TOKENHUB_BIN to a tokenhub binary to run the benchmark through it")
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"-tokenhub", bin, "-nginx=", "-duration", "300ms", "-warmup", "50ms", "-conns", "4"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "| tokenhub | ") || strings.Contains(stdout.String(), "errors:") {
		t.Fatalf("report:\n%s\nlog:\n%s", stdout.String(), stderr.String())
	}
}

func TestTokenhubConfigIsValid(t *testing.T) {
	data := tokenhubConfig("127.0.0.1:8123", filepath.Join(t.TempDir(), "store"), "127.0.0.1:9123")
	c, err := config.Parse(data, "bench.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatalf("config rejected: %v\n%s", err, data)
	}
	if c.Listen != "127.0.0.1:8123" || c.AdminKey != "" || len(c.Upstreams) != 1 ||
		c.Upstreams[0].BaseURL != "http://127.0.0.1:9123/v1" || c.Upstreams[0].MaxConns != 1024 ||
		len(c.Models) != 1 || c.Models[0].Name != benchModel || len(c.Plans) != 1 || c.Plans[0].Name != "bench" {
		t.Fatalf("config read back as %+v", c)
	}
}

func TestNginxConfig(t *testing.T) {
	dir := t.TempDir()
	conf := string(nginxConfig(dir, "127.0.0.1:8124", "127.0.0.1:9124"))
	for _, want := range []string{
		"daemon off;", "pid " + dir + "/nginx.pid;", "access_log off;",
		"server 127.0.0.1:9124;", "keepalive 256;", "listen 127.0.0.1:8124;",
		"proxy_http_version 1.1;", `proxy_set_header Connection "";`,
	} {
		if !strings.Contains(conf, want) {
			t.Fatalf("config lacks %q:\n%s", want, conf)
		}
	}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("nginx not installed: config syntax not checked")
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-p", dir, "-c", "nginx.conf").CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

func TestMarkdown(t *testing.T) {
	rep := &report{Scenario: "chat", Conns: 8, Warmup: time.Second, Duration: 10 * time.Second, CPUs: 2}
	lat := load.Latency{P50: 250 * time.Microsecond, P90: 900 * time.Microsecond, P99: 12500 * time.Microsecond, P999: 2 * time.Second, Max: 2500 * time.Millisecond}
	rep.add(&load.Result{Target: "direct", Throughput: 40000, Latency: lat})
	rep.add(&load.Result{Target: "tokenhub", Throughput: 30000.4, Latency: lat, Errors: 3, ErrorsByKind: map[string]uint64{"502": 2, "timeout": 1}})
	rep.Notes = []string{"nginx: not measured"}
	var b bytes.Buffer
	if err := rep.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	want := "scenario chat, 8 connections, 10s per target after a 1s warmup, 2 CPUs, loopback\n\n" +
		"| target | req/s | p50 | p90 | p99 | p99.9 | max | errors | vs direct |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|\n" +
		"| direct | 40000 | 0.250ms | 0.900ms | 12.5ms | 2000ms | 2500ms | 0 | 1.00x |\n" +
		"| tokenhub | 30000 | 0.250ms | 0.900ms | 12.5ms | 2000ms | 2500ms | 3 | 0.75x |\n" +
		"\ntokenhub errors: 502: 2, timeout: 1\nnginx: not measured\n"
	if b.String() != want {
		t.Fatalf("markdown:\n%s\nwant:\n%s", b.String(), want)
	}
}
