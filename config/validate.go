package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tokenhub/tokenhub/internal/name"
	"github.com/tokenhub/tokenhub/internal/usd"
)

// Validate checks c and reports all its problems at once, joined with
// errors.Join, each naming the field's path and the fix. Plans are checked
// by keys.Plan.Compile's rules, so the node's seeding accepts them.
func (c *Config) Validate() error {
	var p problems
	c.validateServer(&p)
	c.validateOperations(&p)
	c.validateUpstreams(&p)
	c.validateModels(&p)
	c.validatePlans(&p)
	return errors.Join(p...)
}

// problems collects validation errors, each prefixed with a field path.
type problems []error

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

func (p *problems) positive(field string, d, def time.Duration) {
	if d <= 0 {
		p.add(field, "must be more than 0 (got %s); write a duration such as 30s, or remove it for the default %s", d, def)
	}
}

// hostPort checks that v, the value of field, is host:port with a port from
// 0 to 65535, and returns the port; hint says how to write one.
func (p *problems) hostPort(field, v, hint string) (port int, ok bool) {
	_, ps, err := net.SplitHostPort(v)
	if err != nil {
		p.add(field, "%q is not host:port; "+hint, v)
		return 0, false
	}
	if port, err = strconv.Atoi(ps); err != nil || port < 0 || port > 65535 {
		p.add(field, "port %q is not a number from 0 to 65535", ps)
		return 0, false
	}
	return port, true
}

// level checks that v, the value of field, is a log level.
func (p *problems) level(field, v string) {
	switch v {
	case "debug", "info", "warn", "error":
	default:
		p.add(field, "%q is not a level; use debug, info, warn or error", v)
	}
}

// minAdminKeyLen keeps a hand-picked admin key out of guessing range.
const minAdminKeyLen = 16

func (c *Config) validateServer(p *problems) {
	def := defaultConfig()
	p.hostPort("listen", c.Listen, "write e.g. 127.0.0.1:8080, or :8080 for every interface")
	if c.AdminKey != "" && (len(c.AdminKey) < minAdminKeyLen || strings.ContainsFunc(c.AdminKey, unicode.IsSpace)) {
		p.add("admin_key", "use at least %d characters and no whitespace, such as ${TOKENHUB_ADMIN_KEY} set from `openssl rand -hex 32`, or remove it to have one generated", minAdminKeyLen)
	}
	if c.MaxBodyBytes < KiB || c.MaxBodyBytes > GiB {
		p.add("max_body_bytes", "%d bytes is out of range; use from 1KiB to 1GiB, or remove it for the default %s", c.MaxBodyBytes, def.MaxBodyBytes)
	}
	p.positive("server.read_timeout", c.Server.ReadTimeout, def.Server.ReadTimeout)
	p.positive("server.idle_timeout", c.Server.IdleTimeout, def.Server.IdleTimeout)
	p.positive("server.shutdown_timeout", c.Server.ShutdownTimeout, def.Server.ShutdownTimeout)
	p.positive("server.stream_drain_timeout", c.Server.StreamDrainTimeout, def.Server.StreamDrainTimeout)
	if c.Server.MaxBodyBytesInFlight < KiB || c.Server.MaxBodyBytesInFlight > 64*GiB {
		p.add("server.max_body_bytes_in_flight", "%d bytes is out of range; use from 1KiB to 64GiB, or remove it for the default %s",
			c.Server.MaxBodyBytesInFlight, def.Server.MaxBodyBytesInFlight)
	}
	if c.Server.MaxStreamDrains < 0 {
		p.add("server.max_stream_drains", "%d is negative; use 0 to never drain, or remove it for the default %d", c.Server.MaxStreamDrains, def.Server.MaxStreamDrains)
	}
	if c.Store.Path == "" {
		p.add("store.path", "empty; name a directory, or remove it for the default %s", def.Store.Path)
	}
	p.positive("store.journal.sync_interval", c.Store.Journal.SyncInterval, def.Store.Journal.SyncInterval)
	if n := c.Store.Journal.SegmentSize; n < 64*KiB || n > GiB {
		p.add("store.journal.segment_size", "%d bytes is out of range; use from 64KiB to 1GiB, or remove it for the default %s", n, def.Store.Journal.SegmentSize)
	}
	p.positive("store.responses.retention", c.Store.Responses.Retention, def.Store.Responses.Retention)
	if n := c.Store.Responses.MaxIDs; n < 1 {
		p.add("store.responses.max_ids", "%d is not a count; use at least 1, or remove it for the default %d", n, def.Store.Responses.MaxIDs)
	}
	if c.Cache.MaxKeys < 1000 {
		p.add("cache.max_keys", "%d is too small to be useful; use at least 1000, or remove it for the default %d", c.Cache.MaxKeys, def.Cache.MaxKeys)
	}
	p.positive("cache.negative_ttl", c.Cache.NegativeTTL, def.Cache.NegativeTTL)
	p.positive("cache.stale_if_error", c.Cache.StaleIfError, def.Cache.StaleIfError)
	if c.Cache.StaleAfter <= 0 || c.Cache.StaleAfter > 3*time.Second {
		p.add("cache.stale_after", "%s is out of range; use from 1ms to 3s so revocations reach every node within 5s, or remove it for the default %s", c.Cache.StaleAfter, def.Cache.StaleAfter)
	}
	if v := c.Store.Valkey; v != nil {
		c.validateValkey(p, v)
		if c.AdminKey == "" {
			p.add("admin_key", "required with store.valkey, so every node accepts the same admin key; set it such as ${TOKENHUB_ADMIN_KEY}")
		}
	}
	p.level("log.level", c.Log.Level)
	p.level("log.access.level", c.Log.Access.Level)
	if s := c.Log.Access.Sample; !(s >= 0 && s <= 1) {
		p.add("log.access.sample", "%v is not a fraction; use a number from 0 (no successes) to 1 (every request)", s)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		p.add("log.format", "%q is not a format; use json or text", c.Log.Format)
	}
	c.validateTraces(p)
}

// validateTraces checks telemetry.traces. The headers' values are secrets:
// no message quotes them.
func (c *Config) validateTraces(p *problems) {
	t := c.Telemetry.Traces
	if s := t.Sample; !(s >= 0 && s <= 1) {
		p.add("telemetry.traces.sample", "%v is not a fraction; use a number from 0 (only requests whose client's traceparent is sampled) to 1 (every request)", s)
	}
	if t.Endpoint == "" {
		if len(t.Headers) > 0 {
			p.add("telemetry.traces.headers", "set, but telemetry.traces.endpoint is empty and nothing is exported; set the endpoint or remove the headers")
		}
		return
	}
	if err := checkTracesEndpoint(t.Endpoint); err != nil {
		p.add("telemetry.traces.endpoint", "%v", err)
	}
	for _, k := range slices.Sorted(maps.Keys(t.Headers)) {
		field := "telemetry.traces.headers." + k
		if !validHeaderName(k) {
			p.add(field, "%q is not a valid header name; use letters, digits and '-'", k)
			continue
		}
		switch http.CanonicalHeaderKey(k) {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Content-Type", "Content-Encoding":
			p.add(field, "the exporter sets this header itself; remove it")
		}
		if strings.ContainsAny(t.Headers[k], "\r\n\x00") {
			p.add(field, "the value contains a line break or NUL; remove it")
		}
	}
}

// checkTracesEndpoint checks an OTLP/HTTP base URL; /v1/traces is appended.
func checkTracesEndpoint(s string) error {
	const fix = "write the collector's OTLP/HTTP base URL, such as http://127.0.0.1:4318"
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("not a URL; %s", fix)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("the scheme must be http or https; %s", fix)
	case u.Host == "":
		return fmt.Errorf("no host; %s", fix)
	case u.User != nil:
		return fmt.Errorf("%q has credentials in it; put them in telemetry.traces.headers instead", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "":
		return errors.New("remove the query or fragment, which may hold a secret and which this message does not quote; /v1/traces is appended to the endpoint")
	}
	return nil
}

// validateOperations checks the admin listener and the TLS pair. The pair is
// loaded, so that check-config catches a wrong path or a key that is not the
// certificate's before a start or a reload does.
func (c *Config) validateOperations(p *problems) {
	if a := c.Admin.Listen; a != "" {
		if n, ok := p.hostPort("admin.listen", a, "write e.g. 127.0.0.1:9090, or remove it to serve the admin API on listen"); ok && a == c.Listen && n != 0 {
			p.add("admin.listen", "%q is also listen; give the admin API its own port, or remove it to serve the admin API on listen", a)
		}
	}
	t := c.TLS
	switch {
	case t.CertFile == "" && t.KeyFile == "":
		return
	case t.CertFile == "":
		p.add("tls.cert_file", "missing while tls.key_file is set; set both to PEM files, or neither to serve plain HTTP")
		return
	case t.KeyFile == "":
		p.add("tls.key_file", "missing while tls.cert_file is set; set both to PEM files, or neither to serve plain HTTP")
		return
	}
	certPEM, err := os.ReadFile(t.CertFile)
	if err != nil {
		p.add("tls.cert_file", "%v; name a readable PEM certificate file", err)
	}
	keyPEM, kerr := os.ReadFile(t.KeyFile)
	if kerr != nil {
		p.add("tls.key_file", "%v; name a readable PEM private key file", kerr)
	}
	if err != nil || kerr != nil {
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		p.add("tls", "cert_file and key_file are not a certificate and its key: %v; check that both are PEM and that the key is the certificate's", err)
	}
}

func (c *Config) validateValkey(p *problems, v *Valkey) {
	def := defaultValkey()
	if len(v.Addrs) == 0 {
		p.add("store.valkey.addrs", "empty; list at least one host:port such as 127.0.0.1:6379")
	}
	for i, a := range v.Addrs {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			p.add(fmt.Sprintf("store.valkey.addrs[%d]", i), "%q is not host:port; write it like 127.0.0.1:6379", a)
		}
	}
	if v.DB < 0 {
		p.add("store.valkey.db", "%d is negative; use 0 or a database number", v.DB)
	}
	if !name.Valid(v.Prefix) {
		p.add("store.valkey.prefix", "%q is not a valid prefix; use %s", v.Prefix, name.Rule)
	}
	p.positive("store.valkey.timeout", v.Timeout, def.Timeout)
}

func (c *Config) validateUpstreams(p *problems) {
	def := defaultUpstream()
	seen := make(map[string]int)
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		at := fmt.Sprintf("upstreams[%d]", i)
		if !name.Valid(u.Name) {
			p.add(at+".name", "%q is not a valid name; use %s", u.Name, name.Rule)
		} else if j, dup := seen[u.Name]; dup {
			p.add(at+".name", "%q is also the name of upstreams[%d]; give each upstream its own name", u.Name, j)
		} else {
			seen[u.Name] = i
		}
		if err := checkBaseURL(u.BaseURL); err != nil {
			p.add(at+".base_url", "%v", err)
		}
		switch u.Kind {
		case KindOpenAI:
			if u.AnthropicVersion != "" {
				p.add(at+".anthropic_version", "is only for upstreams of kind %s; remove it, or set kind: %s", KindAnthropic, KindAnthropic)
			}
		case KindAnthropic:
			if u.AnthropicVersion != "" && !isDate(u.AnthropicVersion) {
				p.add(at+".anthropic_version", "%q is not an API version; use a date such as 2023-06-01, or remove it for the current one", u.AnthropicVersion)
			}
		default:
			p.add(at+".kind", "%q is not a kind; use %s or %s", u.Kind, KindOpenAI, KindAnthropic)
		}
		for _, k := range slices.Sorted(maps.Keys(u.Headers)) {
			checkHeader(p, at+".headers."+k, k, u.Headers[k], u.APIKey != "", u.Kind == KindAnthropic)
		}
		p.positive(at+".connect_timeout", u.ConnectTimeout, def.ConnectTimeout)
		p.positive(at+".first_byte_timeout", u.FirstByteTimeout, def.FirstByteTimeout)
		p.positive(at+".event_timeout", u.EventTimeout, def.EventTimeout)
		p.positive(at+".timeout", u.Timeout, def.Timeout)
		p.positive(at+".max_idle_conn_duration", u.MaxIdleConnDuration, def.MaxIdleConnDuration)
		if u.StaleCheckAfter < 0 {
			p.add(at+".stale_check_after", "must not be negative (got %s); 0 checks every reuse, or remove it for the default %s", u.StaleCheckAfter, def.StaleCheckAfter)
		}
		if u.MaxConns < 1 {
			p.add(at+".max_conns", "must be at least 1 (got %d); remove it for the default %d", u.MaxConns, def.MaxConns)
		}
		validateHealth(p, at+".health", &u.Health)
	}
}

func validateHealth(p *problems, at string, h *Health) {
	def := defaultHealth()
	if h.ConsecutiveFailures < 1 {
		p.add(at+".consecutive_failures", "must be at least 1 (got %d); remove it for the default %d", h.ConsecutiveFailures, def.ConsecutiveFailures)
	}
	p.positive(at+".ejection", h.Ejection, def.Ejection)
	p.positive(at+".max_ejection", h.MaxEjection, def.MaxEjection)
	if h.MaxEjection > 0 && h.MaxEjection < h.Ejection {
		p.add(at+".max_ejection", "%s is shorter than ejection (%s); make it at least as long", h.MaxEjection, h.Ejection)
	}
	if h.MaxCoolDown < 0 {
		p.add(at+".max_cool_down", "must not be negative (got %s); 0s ignores retry-after, or remove it for the default %s", h.MaxCoolDown, def.MaxCoolDown)
	}
	if !(h.RetryRatio >= 0 && h.RetryRatio <= 1) {
		p.add(at+".retry_ratio", "must be from 0 to 1 (got %v); remove it for the default %v", h.RetryRatio, def.RetryRatio)
	}
	if h.MinRetries < 0 {
		p.add(at+".min_retries", "must not be negative (got %d); remove it for the default %d", h.MinRetries, def.MinRetries)
	}
}

// checkBaseURL accepts an absolute http(s) URL that endpoint paths can be
// appended to, or InprocMock.
func checkBaseURL(s string) error {
	const fix = "write the provider's API root such as https://api.openai.com/v1, or " + InprocMock + " for the built-in mock"
	if s == InprocMock {
		return nil
	}
	if s == "" {
		return errors.New("missing; " + fix)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL; %s", s, fix)
	case u.Scheme == "inproc":
		return fmt.Errorf("%q: the only in-process upstream is %s", s, InprocMock)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: the scheme must be http or https; %s", s, fix)
	case u.Host == "":
		return fmt.Errorf("%q has no host; %s", s, fix)
	case u.User != nil:
		return fmt.Errorf("%q has credentials in it; put them in api_key or headers instead", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%q: remove the query or fragment; endpoint paths such as /chat/completions are appended to base_url", s)
	}
	return nil
}

// checkHeader validates one extra upstream header. Headers that frame the
// request are the client library's to set, and a second Authorization would
// conflict with the one api_key produces.
func checkHeader(p *problems, field, name, value string, hasAPIKey, anthropic bool) {
	if !validHeaderName(name) {
		p.add(field, "%q is not a valid header name; use letters, digits and '-'", name)
		return
	}
	switch http.CanonicalHeaderKey(name) {
	case "Host", "Content-Length", "Transfer-Encoding", "Connection":
		p.add(field, "the gateway sets this header itself; remove it")
	case "Authorization":
		if hasAPIKey && !anthropic {
			p.add(field, "api_key already sets Authorization; remove one of them")
		}
	case "X-Api-Key":
		if hasAPIKey && anthropic {
			p.add(field, "api_key already sets x-api-key; remove one of them")
		}
	case "Anthropic-Version":
		if anthropic {
			p.add(field, "set anthropic_version instead; the gateway sends the client's own version on /v1/messages")
		}
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		p.add(field, "the value contains a line break or NUL; remove it")
	}
}

// validHeaderName reports whether s is an HTTP token (RFC 9110, section 5.6.2).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func (c *Config) validateModels(p *problems) {
	if len(c.Models) == 0 {
		p.add("models", "none declared; declare at least one, such as {name: mock, routes: [{upstream: mock}]} with an upstream whose base_url is %s", InprocMock)
	}
	var upstreams []string
	for _, u := range c.Upstreams {
		upstreams = append(upstreams, u.Name)
	}
	seen := make(map[string]int)
	for i := range c.Models {
		m := &c.Models[i]
		at := fmt.Sprintf("models[%d]", i)
		switch {
		case m.Name == "":
			p.add(at+".name", "missing; write the name clients will ask for")
		case len(m.Name) > 256:
			p.add(at+".name", "%d bytes long; use at most 256", len(m.Name))
		case strings.ContainsFunc(m.Name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
			p.add(at+".name", "%q contains whitespace or control characters; remove them", m.Name)
		default:
			if j, dup := seen[m.Name]; dup {
				p.add(at+".name", "%q is also the name of models[%d]; merge their routes into one model", m.Name, j)
			} else {
				seen[m.Name] = i
			}
		}
		if len(m.Routes) == 0 {
			p.add(at+".routes", "none; add at least one, such as [{upstream: NAME}] with NAME one of the upstreams (%s)", strings.Join(upstreams, ", "))
		}
		if len(m.Routes) > MaxRoutes {
			p.add(at+".routes", "%d routes; a model may have at most %d", len(m.Routes), MaxRoutes)
		}
		for j, r := range m.Routes {
			rat := fmt.Sprintf("%s.routes[%d]", at, j)
			if r.Upstream == "" {
				p.add(rat+".upstream", "missing; name one of the upstreams (%s)", strings.Join(upstreams, ", "))
			} else if c.Upstream(r.Upstream) == nil {
				p.add(rat+".upstream", "no upstream named %q; declare it under upstreams or fix the name", r.Upstream)
			}
			if r.Model == "" {
				p.add(rat+".model", "empty; write the upstream's name for the model, or remove it to use %q", m.Name)
			}
			if r.Weight < 1 {
				p.add(rat+".weight", "must be at least 1 (got %d); remove the route to send it no traffic", r.Weight)
			}
		}
		// The bounds keep every cost (price × tokens, in pico-dollars) in an int64.
		if m.Price.InputPerMTok < 0 || m.Price.InputPerMTok > usd.MaxPricePerMTok {
			p.add(at+".price.input_per_mtok", "must be from 0 to %s dollars (got %s)", usd.MaxPricePerMTok, m.Price.InputPerMTok)
		}
		if c := m.Price.CachedInputPerMTok; c != nil && (*c < 0 || *c > usd.MaxPricePerMTok) {
			p.add(at+".price.cached_input_per_mtok", "must be from 0 to %s dollars (got %s); remove it to charge the input price", usd.MaxPricePerMTok, *c)
		}
		if c := m.Price.CacheWritePerMTok; c != nil && (*c < 0 || *c > usd.MaxPricePerMTok) {
			p.add(at+".price.cache_write_per_mtok", "must be from 0 to %s dollars (got %s); remove it to charge the input price", usd.MaxPricePerMTok, *c)
		}
		if m.Price.OutputPerMTok < 0 || m.Price.OutputPerMTok > usd.MaxPricePerMTok {
			p.add(at+".price.output_per_mtok", "must be from 0 to %s dollars (got %s)", usd.MaxPricePerMTok, m.Price.OutputPerMTok)
		}
		if m.MaxOutputTokens < 1 || m.MaxOutputTokens > maxOutputTokens {
			p.add(at+".max_output_tokens", "must be from 1 to %d (got %d); remove it for the default %d", maxOutputTokens, m.MaxOutputTokens, defaultModel().MaxOutputTokens)
		}
		if m.ContextWindowTokens < 0 || m.ContextWindowTokens > maxContextWindowTokens {
			p.add(at+".context_window_tokens", "must be from 1 to %d (got %d); remove it if the model's is unknown", maxContextWindowTokens, m.ContextWindowTokens)
		}
	}
}

// maxOutputTokens bounds a model's max_output_tokens (see usd.MaxPricePerMTok).
const maxOutputTokens = 10_000_000

// maxContextWindowTokens bounds a model's context_window_tokens, as
// maxOutputTokens bounds its output.
const maxContextWindowTokens = 100_000_000

func (c *Config) validatePlans(p *problems) {
	seen := make(map[string]int)
	for i, pl := range c.Plans {
		at := fmt.Sprintf("plans[%d]", i)
		if pl == nil {
			p.add(at, "empty entry; remove it")
			continue
		}
		if err := pl.check(); err != nil {
			p.add(at, "%v", err)
			continue
		}
		if j, dup := seen[pl.Name]; dup {
			p.add(at+".name", "%q is also the name of plans[%d]; give each plan its own name", pl.Name, j)
		} else {
			seen[pl.Name] = i
		}
	}
}

// isDate reports whether s is a date as YYYY-MM-DD, the shape of
// Anthropic's API versions.
func isDate(s string) bool {
	_, err := time.Parse(time.DateOnly, s)
	return err == nil
}
