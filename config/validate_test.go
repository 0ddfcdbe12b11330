package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
)

// validDoc exercises every list: two upstreams, two models, one plan.
const validDoc = `upstreams:
  - name: mock
    base_url: inproc://mock
  - name: openai
    base_url: https://api.openai.com/v1
    api_key: sk-test
    headers: {OpenAI-Project: proj_1}
models:
  - name: m
    routes: [{upstream: mock}]
  - name: gpt-4o
    routes: [{upstream: openai}]
    price: {input_per_mtok: 2.50, output_per_mtok: 10}
plans:
  - {name: free, models: [m], rpm: 60}
`

func TestValidConfigPasses(t *testing.T) {
	c, err := Parse([]byte(validDoc), "test.yaml", env())
	if err != nil {
		t.Fatal(err)
	}
	if c.Plans[0].Name != "free" || c.Plans[0].RPM != 60 {
		t.Fatalf("plans[0] = %+v, want free at 60 rpm", c.Plans[0])
	}
	for _, listen := range []string{":8080", "127.0.0.1:0", "[::1]:443", "localhost:65535"} {
		c.Listen = listen
		if err := c.Validate(); err != nil {
			t.Fatalf("listen %q: %v", listen, err)
		}
	}
}

func TestValidateRules(t *testing.T) {
	f := func(mutate func(c *Config), want string) {
		t.Helper()
		c, err := Parse([]byte(validDoc), "test.yaml", env())
		if err != nil {
			t.Fatal(err)
		}
		mutate(c)
		err = c.Validate()
		if err == nil {
			t.Fatalf("Validate accepted, want %q", want)
		}
		if err.Error() != want {
			t.Fatalf("Validate error\n%s\nwant\n%s", err, want)
		}
	}

	f(func(c *Config) { c.Listen = "localhost" },
		`listen: "localhost" is not host:port; write e.g. 127.0.0.1:8080, or :8080 for every interface`)
	f(func(c *Config) { c.Listen = "127.0.0.1:http" },
		`listen: port "http" is not a number from 0 to 65535`)
	f(func(c *Config) { c.Listen = ":65536" },
		`listen: port "65536" is not a number from 0 to 65535`)
	f(func(c *Config) { c.AdminKey = "secret" },
		"admin_key: use at least 16 characters and no whitespace, such as ${TOKENHUB_ADMIN_KEY} set from `openssl rand -hex 32`, or remove it to have one generated")
	f(func(c *Config) { c.AdminKey = "0123456789abcdef 0123" },
		"admin_key: use at least 16 characters and no whitespace, such as ${TOKENHUB_ADMIN_KEY} set from `openssl rand -hex 32`, or remove it to have one generated")
	f(func(c *Config) { c.MaxBodyBytes = KiB - 1 },
		"max_body_bytes: 1023 bytes is out of range; use from 1KiB to 1GiB, or remove it for the default 16MiB")
	f(func(c *Config) { c.MaxBodyBytes = GiB + 1 },
		"max_body_bytes: 1073741825 bytes is out of range; use from 1KiB to 1GiB, or remove it for the default 16MiB")
	f(func(c *Config) { c.Server.MaxBodyBytesInFlight = 0 },
		"server.max_body_bytes_in_flight: 0 bytes is out of range; use from 1KiB to 64GiB, or remove it for the default 64MiB")
	f(func(c *Config) { c.Server.ReadTimeout = 0 },
		"server.read_timeout: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 30s")
	f(func(c *Config) { c.Server.IdleTimeout = -time.Second },
		"server.idle_timeout: must be more than 0 (got -1s); write a duration such as 30s, or remove it for the default 2m0s")
	f(func(c *Config) { c.Server.ShutdownTimeout = 0 },
		"server.shutdown_timeout: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 30s")
	f(func(c *Config) { c.Store.Path = "" },
		"store.path: empty; name a directory, or remove it for the default ./data")
	f(func(c *Config) { c.Store.Journal.SyncInterval = 0 },
		"store.journal.sync_interval: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 1s")
	f(func(c *Config) { c.Store.Journal.SegmentSize = 1000 },
		"store.journal.segment_size: 1000 bytes is out of range; use from 64KiB to 1GiB, or remove it for the default 32MiB")
	f(func(c *Config) { c.Store.Responses.Retention = 0 },
		"store.responses.retention: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 720h0m0s")
	f(func(c *Config) { c.Store.Responses.MaxIDs = 0 },
		"store.responses.max_ids: 0 is not a count; use at least 1, or remove it for the default 1000000")
	f(func(c *Config) { c.Cache.MaxKeys = 999 },
		"cache.max_keys: 999 is too small to be useful; use at least 1000, or remove it for the default 1000000")
	f(func(c *Config) { c.Cache.NegativeTTL = 0 },
		"cache.negative_ttl: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 2s")
	f(func(c *Config) { c.Log.Level = "INFO" },
		`log.level: "INFO" is not a level; use debug, info, warn or error`)
	f(func(c *Config) { c.Log.Format = "xml" },
		`log.format: "xml" is not a format; use json or text`)
	f(func(c *Config) { c.Telemetry.Traces.Sample = 1.5 },
		"telemetry.traces.sample: 1.5 is not a fraction; use a number from 0 (only requests whose client's traceparent is sampled) to 1 (every request)")
	f(func(c *Config) { c.Telemetry.Traces.Headers = map[string]string{"authorization": "Bearer x"} },
		"telemetry.traces.headers: set, but telemetry.traces.endpoint is empty and nothing is exported; set the endpoint or remove the headers")
	f(func(c *Config) { c.Telemetry.Traces.Endpoint = "grpc://127.0.0.1:4317" },
		"telemetry.traces.endpoint: the scheme must be http or https; write the collector's OTLP/HTTP base URL, such as http://127.0.0.1:4318")
	f(func(c *Config) { c.Telemetry.Traces.Endpoint = "https://user:otlp-secret@collector" },
		`telemetry.traces.endpoint: "https://user:xxxxx@collector" has credentials in it; put them in telemetry.traces.headers instead`)
	f(func(c *Config) { c.Telemetry.Traces.Endpoint = "http://collector:4318/?token=x" },
		"telemetry.traces.endpoint: remove the query or fragment, which may hold a secret and which this message does not quote; /v1/traces is appended to the endpoint")
	f(func(c *Config) {
		c.Telemetry.Traces.Endpoint = "http://collector:4318"
		c.Telemetry.Traces.Headers = map[string]string{"x-token": "otlp-secret\nInjected: 1", "bad name": "v", "content-type": "text/plain"}
	}, "telemetry.traces.headers.bad name: \"bad name\" is not a valid header name; use letters, digits and '-'\n"+
		"telemetry.traces.headers.content-type: the exporter sets this header itself; remove it\n"+
		"telemetry.traces.headers.x-token: the value contains a line break or NUL; remove it")

	f(func(c *Config) { c.Upstreams[1].Name = "open ai" },
		`upstreams[1].name: "open ai" is not a valid name; use 1-64 letters, digits, '-', '_' or '.'`+"\n"+
			`models[1].routes[0].upstream: no upstream named "openai"; declare it under upstreams or fix the name`)
	f(func(c *Config) { c.Upstreams[1].Name = "mock" },
		`upstreams[1].name: "mock" is also the name of upstreams[0]; give each upstream its own name`+"\n"+
			`models[1].routes[0].upstream: no upstream named "openai"; declare it under upstreams or fix the name`)
	base := func(url, want string) {
		t.Helper()
		f(func(c *Config) { c.Upstreams[1].BaseURL = url }, "upstreams[1].base_url: "+want)
	}
	const fix = "write the provider's API root such as https://api.openai.com/v1, or inproc://mock for the built-in mock"
	base("", "missing; "+fix)
	base("api.openai.com/v1", `"api.openai.com/v1": the scheme must be http or https; `+fix)
	base("ftp://example.com", `"ftp://example.com": the scheme must be http or https; `+fix)
	base("https:///v1", `"https:///v1" has no host; `+fix)
	base("http://%zz", `"http://%zz" is not a URL; `+fix)
	base("inproc://other", `"inproc://other": the only in-process upstream is inproc://mock`)
	base("https://user:secret@example.com/v1", `"https://user:xxxxx@example.com/v1" has credentials in it; put them in api_key or headers instead`)
	base("https://example.com/v1?key=1", `"https://example.com/v1?key=1": remove the query or fragment; endpoint paths such as /chat/completions are appended to base_url`)
	header := func(name, value, want string) {
		t.Helper()
		f(func(c *Config) { c.Upstreams[1].Headers = map[string]string{name: value} }, "upstreams[1].headers."+name+": "+want)
	}
	header("X Bad", "v", `"X Bad" is not a valid header name; use letters, digits and '-'`)
	header("", "v", `"" is not a valid header name; use letters, digits and '-'`)
	header("content-length", "1", "the gateway sets this header itself; remove it")
	header("Host", "example.com", "the gateway sets this header itself; remove it")
	header("Authorization", "Bearer x", "api_key already sets Authorization; remove one of them")
	header("X-Ok", "a\r\nX-Injected: 1", "the value contains a line break or NUL; remove it")
	f(func(c *Config) { c.Upstreams[1].ConnectTimeout = 0 },
		"upstreams[1].connect_timeout: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 5s")
	f(func(c *Config) { c.Upstreams[1].FirstByteTimeout = 0 },
		"upstreams[1].first_byte_timeout: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 1m0s")
	f(func(c *Config) { c.Upstreams[1].EventTimeout = 0 },
		"upstreams[1].event_timeout: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 1m0s")
	f(func(c *Config) { c.Upstreams[1].Timeout = 0 },
		"upstreams[1].timeout: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 10m0s")
	f(func(c *Config) { c.Upstreams[1].MaxIdleConnDuration = 0 },
		"upstreams[1].max_idle_conn_duration: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 30s")
	f(func(c *Config) { c.Upstreams[1].MaxConns = 0 },
		"upstreams[1].max_conns: must be at least 1 (got 0); remove it for the default 512")
	health := func(edit func(h *Health), want string) {
		t.Helper()
		f(func(c *Config) { edit(&c.Upstreams[1].Health) }, "upstreams[1].health."+want)
	}
	health(func(h *Health) { h.ConsecutiveFailures = 0 }, "consecutive_failures: must be at least 1 (got 0); remove it for the default 5")
	health(func(h *Health) { h.Ejection = 0 }, "ejection: must be more than 0 (got 0s); write a duration such as 30s, or remove it for the default 10s")
	health(func(h *Health) { h.MaxEjection = time.Second },
		"max_ejection: 1s is shorter than ejection (10s); make it at least as long")
	health(func(h *Health) { h.MaxCoolDown = -time.Second },
		"max_cool_down: must not be negative (got -1s); 0s ignores retry-after, or remove it for the default 1m0s")
	health(func(h *Health) { h.RetryRatio = 1.5 }, "retry_ratio: must be from 0 to 1 (got 1.5); remove it for the default 0.1")
	health(func(h *Health) { h.RetryRatio = math.NaN() }, "retry_ratio: must be from 0 to 1 (got NaN); remove it for the default 0.1")
	health(func(h *Health) { h.MinRetries = -1 }, "min_retries: must not be negative (got -1); remove it for the default 10")
	f(func(c *Config) {
		for range MaxRoutes {
			c.Models[1].Routes = append(c.Models[1].Routes, c.Models[1].Routes[0])
		}
	}, "models[1].routes: 65 routes; a model may have at most 64")

	f(func(c *Config) { c.Models = nil },
		"models: none declared; declare at least one, such as {name: mock, routes: [{upstream: mock}]} with an upstream whose base_url is inproc://mock")
	f(func(c *Config) { c.Models[1].Name = "" },
		"models[1].name: missing; write the name clients will ask for")
	f(func(c *Config) { c.Models[1].Name = strings.Repeat("x", 257) },
		"models[1].name: 257 bytes long; use at most 256")
	f(func(c *Config) { c.Models[1].Name = "gpt 4o" },
		`models[1].name: "gpt 4o" contains whitespace or control characters; remove them`)
	f(func(c *Config) { c.Models[1].Name = "gpt-4o\x00" },
		`models[1].name: "gpt-4o\x00" contains whitespace or control characters; remove them`)
	f(func(c *Config) { c.Models[1].Name = "m" },
		`models[1].name: "m" is also the name of models[0]; merge their routes into one model`)
	f(func(c *Config) { c.Models[1].Routes = nil },
		"models[1].routes: none; add at least one, such as [{upstream: NAME}] with NAME one of the upstreams (mock, openai)")
	f(func(c *Config) { c.Models[1].Routes[0].Upstream = "" },
		"models[1].routes[0].upstream: missing; name one of the upstreams (mock, openai)")
	f(func(c *Config) { c.Models[1].Routes[0].Upstream = "foo" },
		`models[1].routes[0].upstream: no upstream named "foo"; declare it under upstreams or fix the name`)
	f(func(c *Config) { c.Models[1].Routes[0].Model = "" },
		`models[1].routes[0].model: empty; write the upstream's name for the model, or remove it to use "gpt-4o"`)
	f(func(c *Config) { c.Models[1].Routes[0].Weight = -1 },
		"models[1].routes[0].weight: must be at least 1 (got -1); remove the route to send it no traffic")
	f(func(c *Config) { c.Models[1].Price.InputPerMTok = -1 },
		"models[1].price.input_per_mtok: must be from 0 to 1000 dollars (got -0.000001)")
	f(func(c *Config) { c.Models[1].Price.CachedInputPerMTok = ptr(usd.Micro(1_000_000_001)) },
		"models[1].price.cached_input_per_mtok: must be from 0 to 1000 dollars (got 1000.000001); remove it to charge the input price")
	f(func(c *Config) { c.Models[1].Price.CachedInputPerMTok = ptr(usd.Micro(-1)) },
		"models[1].price.cached_input_per_mtok: must be from 0 to 1000 dollars (got -0.000001); remove it to charge the input price")
	f(func(c *Config) { c.Models[1].Price.CacheWritePerMTok = ptr(usd.Micro(-1)) },
		"models[1].price.cache_write_per_mtok: must be from 0 to 1000 dollars (got -0.000001); remove it to charge the input price")
	f(func(c *Config) { c.Upstreams[1].Kind = "bedrock" },
		`upstreams[1].kind: "bedrock" is not a kind; use openai or anthropic`)
	f(func(c *Config) { c.Upstreams[1].AnthropicVersion = "2023-06-01" },
		"upstreams[1].anthropic_version: is only for upstreams of kind anthropic; remove it, or set kind: anthropic")
	f(func(c *Config) { c.Upstreams[1].Kind, c.Upstreams[1].AnthropicVersion = KindAnthropic, "latest" },
		`upstreams[1].anthropic_version: "latest" is not an API version; use a date such as 2023-06-01, or remove it for the current one`)
	f(func(c *Config) {
		c.Upstreams[1].Kind, c.Upstreams[1].APIKey = KindAnthropic, "k"
		c.Upstreams[1].Headers = map[string]string{"X-Api-Key": "other"}
	}, "upstreams[1].headers.X-Api-Key: api_key already sets x-api-key; remove one of them")
	f(func(c *Config) {
		c.Upstreams[1].Kind = KindAnthropic
		c.Upstreams[1].Headers = map[string]string{"anthropic-version": "2023-06-01"}
	}, "upstreams[1].headers.anthropic-version: set anthropic_version instead; the gateway sends the client's own version on /v1/messages")
	f(func(c *Config) { c.Models[1].Price.OutputPerMTok = -2_500_000 },
		"models[1].price.output_per_mtok: must be from 0 to 1000 dollars (got -2.5)")
	f(func(c *Config) { c.Models[1].MaxOutputTokens = 0 },
		"models[1].max_output_tokens: must be from 1 to 10000000 (got 0); remove it for the default 4096")
	f(func(c *Config) { c.Models[1].ContextWindowTokens = -1 },
		"models[1].context_window_tokens: must be from 1 to 100000000 (got -1); remove it if the model's is unknown")
	f(func(c *Config) { c.Models[1].ContextWindowTokens = 100_000_001 },
		"models[1].context_window_tokens: must be from 1 to 100000000 (got 100000001); remove it if the model's is unknown")

	f(func(c *Config) { c.Plans = append(c.Plans, nil) },
		"plans[1]: empty entry; remove it")
	f(func(c *Config) { c.Plans[0].Name = "free plan" },
		`plans[0]: invalid plan: name "free plan": use 1-64 characters of letters, digits, '-', '_' or '.'`)
	f(func(c *Config) { c.Plans[0].RPM = -1 },
		`plans[0]: invalid plan: plan "free": rpm, tpm, max_request_usd and monthly_usd must not be negative`)
	f(func(c *Config) { c.Plans = append(c.Plans, &Plan{Name: "free"}) },
		`plans[1].name: "free" is also the name of plans[0]; give each plan its own name`)
}

// TestValidateReportsEverything checks that one run lists every problem, in
// file order, so a config is fixed in one edit rather than one per start.
func TestValidateReportsEverything(t *testing.T) {
	doc := `listen: nowhere
log: {level: loud}
upstreams:
  - {name: mock, base_url: "inproc://mock", max_conns: -1}
models:
  - {name: m, routes: [{upstream: nope}]}
  - {name: m, routes: [{upstream: mock}]}
plans:
  - {name: "", models: ["*"]}
`
	want := `config: test.yaml: 6 problems:
listen: "nowhere" is not host:port; write e.g. 127.0.0.1:8080, or :8080 for every interface
log.level: "loud" is not a level; use debug, info, warn or error
upstreams[0].max_conns: must be at least 1 (got -1); remove it for the default 512
models[0].routes[0].upstream: no upstream named "nope"; declare it under upstreams or fix the name
models[1].name: "m" is also the name of models[0]; merge their routes into one model
plans[0]: invalid plan: name "": use 1-64 characters of letters, digits, '-', '_' or '.'`
	if got := parseErr(t, doc); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// TestPricesInYAML checks that prices are read as exact dollars, and that a
// negative price is refused where it is read.
func TestPricesInYAML(t *testing.T) {
	c, err := Parse([]byte(validDoc), "test.yaml", env())
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Models[1].Price; p.InputPerMTok != 2_500_000 || p.OutputPerMTok != 10_000_000 {
		t.Fatalf("price = %+v, want 2.5 and 10 dollars", p)
	}
	f := func(from, to, want string) {
		t.Helper()
		if got := parseErr(t, strings.Replace(validDoc, from, to, 1)); got != want {
			t.Fatalf("got\n%s\nwant\n%s", got, want)
		}
	}
	f("input_per_mtok: 2.50", "input_per_mtok: -1",
		`config: test.yaml: line 13: models[1].price.input_per_mtok: amount "-1" is negative; write US dollars such as 2.50`)
	f("output_per_mtok: 10}", "output_per_mtok: 10, cached_input_per_mtok: -1.25}",
		`config: test.yaml: line 13: models[1].price.cached_input_per_mtok: amount "-1.25" is negative; write US dollars such as 2.50`)
	f("output_per_mtok: 10", "output_per_mtok: 0.0000001",
		`config: test.yaml: line 13: models[1].price.output_per_mtok: amount "0.0000001" has more than 6 decimals (micro-dollar precision); write US dollars such as 2.50`)
	f("rpm: 60", "monthly_usd: $5",
		`config: test.yaml: line 15: plans[0].monthly_usd: amount "$5" is not a decimal number; write US dollars such as 2.50`)
}

func TestValidateValkey(t *testing.T) {
	f := func(block, wantField string) {
		t.Helper()
		_, err := Parse([]byte("admin_key: 0123456789abcdef0123\nstore:\n  valkey: "+block+"\nupstreams: [{name: m, base_url: \"inproc://mock\"}]\nmodels: [{name: mock, routes: [{upstream: m}]}]\n"), "t.yaml", env())
		if wantField == "" {
			if err != nil {
				t.Fatalf("valkey %s: %v", block, err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), wantField) {
			t.Fatalf("valkey %s: error %v, want one naming %s", block, err, wantField)
		}
	}
	f(`{addrs: ["127.0.0.1:6379"]}`, "")
	f(`{addrs: ["a:1", "b:2"], prefix: prod-1, timeout: 1s, db: 2}`, "")
	f(`{addrs: []}`, "store.valkey.addrs")
	f(`{addrs: ["no-port"]}`, "store.valkey.addrs[0]")
	f(`{addrs: ["a:1"], prefix: "has space"}`, "store.valkey.prefix")
	f(`{addrs: ["a:1"], timeout: 0s}`, "store.valkey.timeout")
	f(`{addrs: ["a:1"], db: -1}`, "store.valkey.db")
	_, err := Parse([]byte("store: {valkey: {addrs: [\"a:1\"]}}\nupstreams: [{name: m, base_url: \"inproc://mock\"}]\nmodels: [{name: mock, routes: [{upstream: m}]}]\n"), "t.yaml", env())
	if err == nil || !strings.Contains(err.Error(), "admin_key: required with store.valkey") {
		t.Fatalf("valkey without admin_key: %v", err)
	}
}

// TestValidateOperations covers the admin listener and the TLS pair, which
// is loaded so that a wrong path or a mismatched key is caught at load time.
func TestValidateOperations(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir, "a")
	otherCert, _ := writePair(t, dir, "b")
	f := func(mutate func(c *Config), want string) {
		t.Helper()
		c, err := Parse([]byte(validDoc), "test.yaml", env())
		if err != nil {
			t.Fatal(err)
		}
		mutate(c)
		err = c.Validate()
		switch {
		case want == "" && err != nil:
			t.Fatalf("Validate: %v", err)
		case want == "":
		case err == nil:
			t.Fatalf("Validate accepted, want %q", want)
		case !strings.HasPrefix(err.Error(), want):
			t.Fatalf("Validate error\n%s\nwant it to start with\n%s", err, want)
		}
	}
	f(func(c *Config) { c.Admin.Listen = "127.0.0.1:9090" }, "")
	f(func(c *Config) { c.Admin.Listen, c.Listen = "127.0.0.1:0", "127.0.0.1:0" }, "") // two free ports
	f(func(c *Config) { c.Admin.Listen = "localhost" },
		`admin.listen: "localhost" is not host:port; write e.g. 127.0.0.1:9090, or remove it to serve the admin API on listen`)
	f(func(c *Config) { c.Admin.Listen = ":99999" },
		`admin.listen: port "99999" is not a number from 0 to 65535`)
	f(func(c *Config) { c.Admin.Listen = c.Listen },
		`admin.listen: "127.0.0.1:8080" is also listen; give the admin API its own port, or remove it to serve the admin API on listen`)

	f(func(c *Config) { c.TLS = TLS{CertFile: cert, KeyFile: key} }, "")
	f(func(c *Config) { c.TLS = TLS{CertFile: cert} },
		"tls.key_file: missing while tls.cert_file is set; set both to PEM files, or neither to serve plain HTTP")
	f(func(c *Config) { c.TLS = TLS{KeyFile: key} },
		"tls.cert_file: missing while tls.key_file is set; set both to PEM files, or neither to serve plain HTTP")
	f(func(c *Config) { c.TLS = TLS{CertFile: dir + "/missing.pem", KeyFile: key} },
		"tls.cert_file: open "+dir+"/missing.pem: no such file or directory; name a readable PEM certificate file")
	f(func(c *Config) { c.TLS = TLS{CertFile: cert, KeyFile: dir + "/missing.pem"} },
		"tls.key_file: open "+dir+"/missing.pem: no such file or directory; name a readable PEM private key file")
	f(func(c *Config) { c.TLS = TLS{CertFile: otherCert, KeyFile: key} },
		"tls: cert_file and key_file are not a certificate and its key: tls: private key does not match public key; check that both are PEM and that the key is the certificate's")
	f(func(c *Config) { c.TLS = TLS{CertFile: key, KeyFile: key} },
		"tls: cert_file and key_file are not a certificate and its key:")
}

// writePair writes a self-signed ECDSA certificate and its key as PEM files
// named after name into dir and returns their paths.
func writePair(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestMoneyBounds: amounts that would overflow pico-dollar spend are
// refused with the field and the bound.
func TestMoneyBounds(t *testing.T) {
	for _, tc := range []struct{ yaml, field string }{
		{"plans: [{name: p, models: ['*'], monthly_usd: 1000000000}]", "plans[0]"},
		{"plans: [{name: p, models: ['*'], max_request_usd: 1000001}]", "plans[0]"},
		{"models: [{name: m, routes: [{upstream: mock}], price: {input_per_mtok: 1000.000001}}]", "models[0].price.input_per_mtok"},
		{"models: [{name: m, routes: [{upstream: mock}], price: {output_per_mtok: 5000}}]", "models[0].price.output_per_mtok"},
		{"models: [{name: m, routes: [{upstream: mock}], max_output_tokens: 10000001}]", "models[0].max_output_tokens"},
	} {
		_, err := Parse([]byte(tc.yaml), "t.yaml", func(string) string { return "" })
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: got %v, want an error naming %s", tc.yaml, err, tc.field)
		}
	}
	if _, err := Parse([]byte("plans: [{name: p, models: ['*'], monthly_usd: 1000000}]\nmodels: [{name: m, routes: [{upstream: u}], price: {input_per_mtok: 1000}, max_output_tokens: 10000000}]\nupstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1'}]"), "t.yaml", func(string) string { return "" }); err != nil {
		t.Errorf("the bounds themselves are refused: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
