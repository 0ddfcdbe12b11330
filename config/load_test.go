package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid configuration: one mock model.
const minimal = `upstreams: [{name: mock, base_url: "inproc://mock"}]
models: [{name: m, routes: [{upstream: mock}]}]
`

// parseErr parses doc with an empty environment and returns its error text.
func parseErr(t *testing.T, doc string) string {
	t.Helper()
	_, err := Parse([]byte(doc), "test.yaml", env())
	if err == nil {
		t.Fatalf("Parse accepted:\n%s", doc)
	}
	return err.Error()
}

func TestDefaultsApplied(t *testing.T) {
	c, err := Parse([]byte(minimal), "test.yaml", env())
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Listen:       "127.0.0.1:8080",
		MaxBodyBytes: 16777216,
		Server: Server{ReadTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, ShutdownTimeout: 30 * time.Second,
			StreamDrainTimeout: 30 * time.Second, MaxStreamDrains: 256, MaxBodyBytesInFlight: 64 * MiB},
		Store: Store{Path: "./data", Journal: Journal{SyncInterval: time.Second, SegmentSize: 32 << 20},
			Responses: Responses{Retention: 30 * 24 * time.Hour, MaxIDs: 1_000_000}},
		Cache:     Cache{MaxKeys: 1000000, NegativeTTL: 2 * time.Second, StaleAfter: time.Second, StaleIfError: 4 * time.Second},
		Log:       Log{Level: "info", Format: "json", Access: AccessLog{Enabled: true, Level: "info", Sample: 1}},
		Telemetry: Telemetry{Traces: Traces{Sample: 1}},
		Upstreams: []Upstream{{
			Name:                "mock",
			Kind:                KindOpenAI,
			BaseURL:             "inproc://mock",
			ConnectTimeout:      5 * time.Second,
			FirstByteTimeout:    60 * time.Second,
			EventTimeout:        60 * time.Second,
			Timeout:             10 * time.Minute,
			MaxConns:            512,
			MaxIdleConnDuration: 30 * time.Second,
			StaleCheckAfter:     100 * time.Millisecond,
			Health: Health{ConsecutiveFailures: 5, Ejection: 10 * time.Second, MaxEjection: 5 * time.Minute,
				MaxCoolDown: time.Minute, RetryRatio: 0.1, MinRetries: 10},
		}},
		Models: []Model{{
			Name:            "m",
			Routes:          []Route{{Upstream: "mock", Model: "m", Weight: 1}},
			MaxOutputTokens: 4096,
			OwnedBy:         "mock",
		}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", c, want)
	}
}

func TestFieldsOverrideDefaults(t *testing.T) {
	doc := `listen: ":9000"
server: {read_timeout: 5s}
upstreams:
  - name: a
    base_url: http://127.0.0.1:11434/v1
    max_conns: 8
  - name: b
    base_url: inproc://mock
models:
  - name: m
    owned_by: me
    max_output_tokens: 100
    routes:
      - {upstream: a, model: upstream-name, weight: 3}
      - {upstream: b}
`
	c, err := Parse([]byte(doc), "test.yaml", env())
	if err != nil {
		t.Fatal(err)
	}
	f := func(what string, got, want any) {
		t.Helper()
		if got != want {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
	}
	f("listen", c.Listen, ":9000")
	f("server.read_timeout", c.Server.ReadTimeout, 5*time.Second)
	f("server.idle_timeout (a sibling keeps its default)", c.Server.IdleTimeout, 120*time.Second)
	f("upstreams[0].max_conns", c.Upstreams[0].MaxConns, 8)
	f("upstreams[0].timeout", c.Upstreams[0].Timeout, 10*time.Minute)
	f("upstreams[1].max_conns", c.Upstreams[1].MaxConns, 512)
	f("models[0].owned_by", c.Models[0].OwnedBy, "me")
	f("models[0].max_output_tokens", c.Models[0].MaxOutputTokens, int64(100))
	f("routes[0]", c.Models[0].Routes[0], Route{Upstream: "a", Model: "upstream-name", Weight: 3})
	f("routes[1]", c.Models[0].Routes[1], Route{Upstream: "b", Model: "m", Weight: 1})
}

// TestExplicitZeroIsReported checks that defaults fill absent keys only: a
// zero written out is the author's mistake to hear about, not a default.
func TestExplicitZeroIsReported(t *testing.T) {
	doc := `upstreams: [{name: mock, base_url: "inproc://mock", timeout: 0s, max_conns: 0}]
models: [{name: m, routes: [{upstream: mock, weight: 0}], max_output_tokens: 0}]
cache: {negative_ttl: 0s}
`
	want := `config: test.yaml: 5 problems:
cache.negative_ttl: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 2s
upstreams[0].timeout: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 10m0s
upstreams[0].max_conns: must be at least 1 (got 0); remove it for the default 512
models[0].routes[0].weight: must be at least 1 (got 0); remove the route to send it no traffic
models[0].max_output_tokens: must be from 1 to 10000000 (got 0); remove it for the default 4096`
	if got := parseErr(t, doc); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestDurations(t *testing.T) {
	f := func(value string, want time.Duration) {
		t.Helper()
		doc := strings.Replace(minimal, `base_url: "inproc://mock"`, `base_url: "inproc://mock", connect_timeout: `+value, 1)
		c, err := Parse([]byte(doc), "test.yaml", env())
		if err != nil {
			t.Fatalf("connect_timeout: %s: %v", value, err)
		}
		if got := c.Upstreams[0].ConnectTimeout; got != want {
			t.Fatalf("connect_timeout: %s gave %s, want %s", value, got, want)
		}
	}
	f("5s", 5*time.Second)
	f("250ms", 250*time.Millisecond)
	f("1m30s", 90*time.Second)
	f("1h", time.Hour)
	f(`"2s"`, 2*time.Second)

	g := func(value, want string) {
		t.Helper()
		doc := strings.Replace(minimal, `base_url: "inproc://mock"`, `base_url: "inproc://mock", connect_timeout: `+value, 1)
		if got := parseErr(t, doc); got != want {
			t.Fatalf("connect_timeout: %s gave error\n%s\nwant\n%s", value, got, want)
		}
	}
	// A bare number has no unit, and yaml.v3 refuses it rather than guess nanoseconds.
	g("5", "config: test.yaml: line 1: cannot unmarshal !!int `5` into time.Duration")
	g("5 seconds", "config: test.yaml: line 1: cannot unmarshal !!str `5 seconds` into time.Duration")
	g("-1s", "config: test.yaml: upstreams[0].connect_timeout: must be more than 0 (got -1s); write a duration such as 30s, or remove it for the default 5s")
}

func TestUnknownKeyRejected(t *testing.T) {
	f := func(doc, want string) {
		t.Helper()
		if got := parseErr(t, doc); got != want {
			t.Fatalf("got\n%s\nwant\n%s", got, want)
		}
	}
	f(minimal+"lisen: :80\n",
		"config: test.yaml: line 3: lisen: unknown key; the keys allowed here are listen, admin_key, max_body_bytes, server, store, cache, log, admin, tls, telemetry, upstreams, models, plans")
	f(minimal+"server:\n  read_timout: 1s\n",
		"config: test.yaml: line 4: server.read_timout: unknown key; the keys allowed here are read_timeout, idle_timeout, shutdown_timeout, stream_drain_timeout, max_stream_drains, max_body_bytes_in_flight")
	f(`upstreams:
  - {name: mock, base_url: "inproc://mock"}
  - {name: b, base_url: "inproc://mock", maxconns: 1}
models: [{name: m, routes: [{upstream: mock, wieght: 2}]}]
`, `config: test.yaml: 2 problems:
line 3: upstreams[1].maxconns: unknown key; the keys allowed here are name, kind, base_url, api_key, anthropic_version, optional, headers, connect_timeout, first_byte_timeout, event_timeout, timeout, max_conns, max_idle_conn_duration, stale_check_after, health
line 4: models[0].routes[0].wieght: unknown key; the keys allowed here are upstream, model, weight`)
	f(minimal+"plans: [{name: p, models: ['*'], monthly: 1}]\n",
		"config: test.yaml: line 3: plans[0].monthly: unknown key; the keys allowed here are name, models, rpm, tpm, max_request_usd, monthly_usd")
	f(minimal+"models_: []\ndropped_upstreams: [x]\nDroppedUpstreams: [x]\n",
		"config: test.yaml: 3 problems:\n"+
			"line 3: models_: unknown key; the keys allowed here are listen, admin_key, max_body_bytes, server, store, cache, log, admin, tls, telemetry, upstreams, models, plans\n"+
			"line 4: dropped_upstreams: unknown key; the keys allowed here are listen, admin_key, max_body_bytes, server, store, cache, log, admin, tls, telemetry, upstreams, models, plans\n"+
			"line 5: DroppedUpstreams: unknown key; the keys allowed here are listen, admin_key, max_body_bytes, server, store, cache, log, admin, tls, telemetry, upstreams, models, plans")
}

func TestMergeKeysAreChecked(t *testing.T) {
	doc := `upstreams:
  - &base {name: mock, base_url: "inproc://mock", max_conns: 4}
  - <<: *base
    name: second
models: [{name: m, routes: [{upstream: second}]}]
`
	c, err := Parse([]byte(doc), "test.yaml", env())
	if err != nil {
		t.Fatal(err)
	}
	if u := c.Upstream("second"); u == nil || u.MaxConns != 4 || u.BaseURL != InprocMock {
		t.Fatalf("merged upstream = %+v", u)
	}
	bad := strings.Replace(doc, "<<: *base", "<<: {nme: x}", 1)
	want := "config: test.yaml: line 3: upstreams[1].nme: unknown key; the keys allowed here are name, kind, base_url, api_key, anthropic_version, optional, headers, connect_timeout, first_byte_timeout, event_timeout, timeout, max_conns, max_idle_conn_duration, stale_check_after, health"
	if got := parseErr(t, bad); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestMalformedDocuments(t *testing.T) {
	f := func(doc, want string) {
		t.Helper()
		if got := parseErr(t, doc); got != want {
			t.Fatalf("got\n%s\nwant\n%s", got, want)
		}
	}
	f("", "config: test.yaml: models: none declared; declare at least one, such as {name: mock, routes: [{upstream: mock}]} with an upstream whose base_url is inproc://mock")
	f("listen: [\n", "config: test.yaml: yaml: line 1: did not find expected node content")
	f(minimal+"---\nlisten: :80\n", "config: test.yaml: line 3: a second YAML document; put the whole configuration in one")
	f("- 1\n", "config: test.yaml: line 1: cannot unmarshal !!seq into config.Config")
	f(minimal+"listen: a\nlisten: b\n", `config: test.yaml: line 4: mapping key "listen" already defined at line 3`)
	f(minimal+"plans: {}\nlisten: [a]\n", "config: test.yaml: 2 problems:\nline 3: cannot unmarshal !!map into []*config.Plan\nline 4: cannot unmarshal !!seq into string")
}

func TestOptionalUpstreams(t *testing.T) {
	doc := `upstreams:
  - {name: mock, base_url: "inproc://mock"}
  - {name: openai, base_url: "https://api.openai.com/v1", api_key: "${OPENAI_API_KEY}", optional: true}
  - {name: local, base_url: "http://127.0.0.1:11434/v1"}
models:
  - {name: only-openai, routes: [{upstream: openai}]}
  - {name: both, routes: [{upstream: openai}, {upstream: mock, weight: 2}]}
  - {name: local-model, routes: [{upstream: local}]}
`
	c, err := Parse([]byte(doc), "test.yaml", env())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range c.Upstreams {
		names = append(names, u.Name)
	}
	f := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
	}
	// local has no api_key but is not optional: a local server needs none.
	f("upstreams", names, []string{"mock", "local"})
	f("models", len(c.Models), 2)
	f("models[0]", c.Models[0].Name, "both")
	f("models[0].routes", c.Models[0].Routes, []Route{{Upstream: "mock", Model: "both", Weight: 2}})
	f("models[0].owned_by (from the routes as written)", c.Models[0].OwnedBy, "openai")
	f("models[1]", c.Models[1].Name, "local-model")
	f("DroppedUpstreams", c.DroppedUpstreams, []string{"openai"})
	f("DroppedModels", c.DroppedModels, []string{"only-openai"})

	c, err = Parse([]byte(doc), "test.yaml", env("OPENAI_API_KEY", "sk-test"))
	if err != nil {
		t.Fatal(err)
	}
	f("upstreams with the key set", len(c.Upstreams), 3)
	f("models with the key set", len(c.Models), 3)
	f("routes of both with the key set", len(c.Models[1].Routes), 2)
	f("DroppedUpstreams with the key set", c.DroppedUpstreams, []string(nil))
	f("api_key", c.Upstream("openai").APIKey, "sk-test")
}

func TestOptionalUpstreamsLeaveNoModel(t *testing.T) {
	doc := `upstreams:
  - {name: openai, base_url: "https://api.openai.com/v1", api_key: "${OPENAI_API_KEY}", optional: true}
  - {name: anthropic, base_url: "https://api.anthropic.com/v1", api_key: "${ANTHROPIC_API_KEY}", optional: true}
models:
  - {name: gpt-4o, routes: [{upstream: openai}]}
  - {name: claude, routes: [{upstream: anthropic}]}
`
	want := "config: test.yaml: models: none left after leaving out the optional upstreams openai, anthropic, whose api_key is empty; set one of their keys, or add a model routed to an upstream that is not optional"
	if got := parseErr(t, doc); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// TestDroppedUpstreamIsStillValidated checks that a mistake in an optional
// upstream is reported even while its key is unset.
func TestDroppedUpstreamIsStillValidated(t *testing.T) {
	doc := `upstreams:
  - {name: openai, base_url: "ftp://example.com", optional: true}
  - {name: mock, base_url: "inproc://mock"}
models:
  - {name: gpt-4o, routes: [{upstream: openai}]}
  - {name: m, routes: [{upstream: mock}]}
`
	want := `config: test.yaml: upstreams[0].base_url: "ftp://example.com": the scheme must be http or https; write the provider's API root such as https://api.openai.com/v1, or inproc://mock for the built-in mock`
	if got := parseErr(t, doc); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokenhub.yaml")
	if err := os.WriteFile(path, []byte(minimal+"listen: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:0" || c.File != path {
		t.Fatalf("listen = %q, file = %q; want the file's listen and its path (reloads read it again)", c.Listen, c.File)
	}

	if err := os.WriteFile(path, []byte("lisen: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), "config: "+path+": line 1: lisen: unknown key") {
		t.Fatalf("Load of a bad file: %v, want an error naming the file, line and key", err)
	}

	missing := filepath.Join(t.TempDir(), "missing.yaml")
	if _, err := Load(missing); err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing file: %v, want a not-exist error naming it", err)
	}

	c, err = Load("")
	if err != nil {
		t.Fatalf("Load(\"\") of the built-in config: %v", err)
	}
	if c.Upstream("mock") == nil {
		t.Fatal("the built-in config has no mock upstream")
	}
}

func TestUpstreamLookup(t *testing.T) {
	c := &Config{Upstreams: []Upstream{{Name: "a"}, {Name: "b"}}}
	if u := c.Upstream("b"); u != &c.Upstreams[1] {
		t.Fatalf("Upstream(b) = %p, want %p", u, &c.Upstreams[1])
	}
	if u := c.Upstream("c"); u != nil {
		t.Fatalf("Upstream(c) = %+v, want nil", u)
	}
}
