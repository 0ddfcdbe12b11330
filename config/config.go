// Package config loads tokenhub's one YAML configuration file: it expands
// ${ENV} references (so secrets stay out of the file), fills in defaults that
// work on a laptop, and validates everything at load time with messages that
// name the field and say how to fix it. Every field is documented, with its
// default, in example.yaml.
package config

import (
	"path/filepath"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/internal/valkeyx"
)

// InprocMock is the base_url of the built-in mock provider, which runs in the
// gateway's own process.
const InprocMock = "inproc://mock"

// Config is the whole configuration file. Its field names are the YAML keys.
type Config struct {
	// Listen is the host:port the gateway serves on.
	Listen string `yaml:"listen"`
	// AdminKey authenticates the admin API. Empty means one is generated into
	// <store.path>/admin.key on first start.
	AdminKey string `yaml:"admin_key"`
	// MaxBodyBytes is the largest request body accepted.
	MaxBodyBytes ByteSize `yaml:"max_body_bytes"`
	// Server holds the gateway's own HTTP server timeouts.
	Server Server `yaml:"server"`
	// Store says where keys, plans and spend are kept.
	Store Store `yaml:"store"`
	// Cache sizes the key cache in front of the store.
	Cache Cache `yaml:"cache"`
	// Log configures the process log.
	Log Log `yaml:"log"`
	// Admin configures the operators' endpoints: where the admin API is
	// served, and profiling.
	Admin Admin `yaml:"admin"`
	// TLS, when both files are set, serves HTTPS instead of HTTP.
	TLS TLS `yaml:"tls"`
	// Telemetry is what the gateway exports to the operators' observability
	// systems besides /metrics: traces.
	Telemetry Telemetry `yaml:"telemetry"`
	// Upstreams are the providers requests are forwarded to.
	Upstreams []Upstream `yaml:"upstreams"`
	// Models are the names clients may ask for, each routed to upstreams.
	Models []Model `yaml:"models"`
	// Plans are the plans declared in the file; keys reference them by name.
	Plans []*Plan `yaml:"plans"`

	// File is the path Load read this configuration from, which a reload
	// reads again; empty for the built-in default and for Parse.
	File string `yaml:"-"`

	// DroppedUpstreams names the optional upstreams Parse left out because
	// their api_key was empty, so that startup can log why models are missing.
	DroppedUpstreams []string `yaml:"-"`
	// DroppedModels names the models Parse left out because all their routes
	// went to dropped upstreams.
	DroppedModels []string `yaml:"-"`
}

// Server holds the timeouts of the gateway's own HTTP server.
type Server struct {
	// ReadTimeout bounds reading one request, headers and body.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// IdleTimeout bounds how long a keep-alive connection may wait for its
	// next request.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// ShutdownTimeout is how long in-flight requests and streams may run on
	// after a shutdown signal.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// StreamDrainTimeout is how long a stream is read on after its client
	// left, to bill the upstream's real usage.
	StreamDrainTimeout time.Duration `yaml:"stream_drain_timeout"`
	// MaxStreamDrains caps the streams drained at once; past it, a stream
	// whose client left is cut and billed an estimate.
	MaxStreamDrains int `yaml:"max_stream_drains"`
	// MaxBodyBytesInFlight bounds the request body bytes the node holds at
	// once, all requests together: from its headers, each keyed request
	// reserves the buffer its body will be read into (its declared length
	// rounded up to a power of two; for a chunked body, MaxBodyBytes so
	// rounded), and one that finds the budget spent gets 503 unread. It is
	// never less than one chunked body's reservation, so any body can be read.
	MaxBodyBytesInFlight ByteSize `yaml:"max_body_bytes_in_flight"`
}

// Admin configures the operators' endpoints.
type Admin struct {
	// Listen, when set, is the host:port that alone serves the Keys and
	// Plans APIs, POST /admin/reload, the dashboard, /metrics and
	// /debug/pprof/; Listen then serves only inference, models, usage and
	// health. Empty serves everything on Listen.
	Listen string `yaml:"listen"`
	// Pprof serves Go's profiler at /debug/pprof/ (on Listen when it is
	// set). It has no authentication: it is protected by being off unless
	// asked for, and by binding the admin listener to a private address.
	Pprof bool `yaml:"pprof"`
}

// TLS is the certificate the gateway serves HTTPS with. Both files are read
// again on every reload, so a renewed certificate needs no restart.
type TLS struct {
	// CertFile is the PEM certificate chain, leaf first.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of the certificate.
	KeyFile string `yaml:"key_file"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Store says where keys, plans and spend are kept.
type Store struct {
	// Path is the directory of the embedded store (and of the generated
	// admin key file).
	Path string `yaml:"path"`
	// Valkey, when set, replaces the embedded store: every node pointed at
	// the same Valkey shares keys, plans and spend.
	Valkey *Valkey `yaml:"valkey"`
	// Journal is this node's usage journal, which every answered request
	// reaches before its answer is released, so that a node killed between
	// two flushes to the store loses no usage.
	Journal Journal `yaml:"journal"`
	// Responses bounds what the store remembers of the responses created
	// through the gateway (id -> upstream, route, key), which their
	// follow-ups need.
	Responses Responses `yaml:"responses"`
}

// Responses bounds the memory of created responses' ids.
type Responses struct {
	// Retention is how long an id is remembered: its follow-ups answer 404
	// after it (OpenAI keeps a stored response 30 days).
	Retention time.Duration `yaml:"retention"`
	// MaxIDs is how many ids are remembered at most; remembering one more
	// forgets the oldest.
	MaxIDs int64 `yaml:"max_ids"`
}

// Journal configures a node's usage journal.
type Journal struct {
	// Dir is the journal's directory; empty means <store.path>/journal. It
	// holds the node's id: with Valkey, a node started on another node's
	// directory applies what that node journaled.
	Dir string `yaml:"dir"`
	// SyncInterval is how often the journal is written to disk: what a
	// power loss or kernel crash can lose (a killed process loses nothing).
	SyncInterval time.Duration `yaml:"sync_interval"`
	// SegmentSize is the size of one journal file; files are removed once
	// their usage is in the store.
	SegmentSize ByteSize `yaml:"segment_size"`
}

// JournalDir is the journal's directory.
func (s *Store) JournalDir() string {
	if s.Journal.Dir != "" {
		return s.Journal.Dir
	}
	return filepath.Join(s.Path, "journal")
}

// Valkey is the shared store of a multi-node deployment.
type Valkey struct {
	// Addrs are host:port addresses; several, or a cluster endpoint, select
	// Valkey Cluster (detected automatically).
	Addrs []string `yaml:"addrs"`
	// Username and Password authenticate (ACL user, or just a password).
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// DB is the database number (standalone servers only).
	DB int `yaml:"db"`
	// TLS connects with TLS 1.2 or later.
	TLS bool `yaml:"tls"`
	// Prefix namespaces every key and the invalidation channel, so several
	// deployments can share one server.
	Prefix string `yaml:"prefix"`
	// Timeout bounds every call to Valkey.
	Timeout time.Duration `yaml:"timeout"`
}

// StoreOptions are the options of the Valkey store this block describes,
// the same for a node and for `tokenhub migrate`.
func (v *Valkey) StoreOptions() valkeyx.Options {
	return valkeyx.Options{Addrs: v.Addrs, Username: v.Username, Password: v.Password, DB: v.DB, TLS: v.TLS,
		Prefix: v.Prefix, Timeout: v.Timeout}
}

// Cache sizes the in-memory cache of key records in front of the store.
type Cache struct {
	// MaxKeys is how many key records the cache holds at most.
	MaxKeys int64 `yaml:"max_keys"`
	// NegativeTTL is how long an unknown key is remembered as unknown, so
	// that a flood of bad keys does not reach the store.
	NegativeTTL time.Duration `yaml:"negative_ttl"`
	// StaleAfter is the age past which cached entries are re-read while
	// invalidations from other nodes may be missed (Valkey only).
	StaleAfter time.Duration `yaml:"stale_after"`
	// StaleIfError is how long after this node last knew a cached key
	// current (its last read, or the last invalidation message) the key is
	// still served while the store is unreachable; the default keeps the
	// 5-second revocation promise (see keys.RegistryOptions.StaleIfError).
	StaleIfError time.Duration `yaml:"stale_if_error"`
}

// Log configures the process log.
type Log struct {
	// Level is one of debug, info, warn, error.
	Level string `yaml:"level"`
	// Format is json or text.
	Format string `yaml:"format"`
	// Access is the access log: a line per request.
	Access AccessLog `yaml:"access"`
}

// AccessLog is the one line per request tokenhub writes, off the request
// path, into the same log.
type AccessLog struct {
	// Enabled turns the access log on.
	Enabled bool `yaml:"enabled"`
	// Level is the level the lines are written at: debug, info, warn or error.
	Level string `yaml:"level"`
	// Sample is the fraction of successful requests logged, from 0 to 1;
	// errors (status 400 and up) are always logged.
	Sample float64 `yaml:"sample"`
}

// Telemetry is what the gateway exports besides /metrics.
type Telemetry struct {
	// Traces are OpenTelemetry spans, one per inference request.
	Traces Traces `yaml:"traces"`
}

// Traces configures the OpenTelemetry trace export: one span per inference
// request, POSTed as OTLP/HTTP protobuf, off the request path.
type Traces struct {
	// Endpoint is the collector's OTLP/HTTP base URL; spans are POSTed to
	// <endpoint>/v1/traces. Empty turns tracing off.
	Endpoint string `yaml:"endpoint"`
	// Headers are sent with every export, for the collector's
	// authentication; usually ${SOME_ENV_VAR}. Never logged.
	Headers map[string]string `yaml:"headers"`
	// Sample is the fraction of requests traced, from 0 to 1, for requests
	// whose client sent no traceparent; a client's traceparent decides for
	// its own requests (its sampled flag).
	Sample float64 `yaml:"sample"`
}

// Enabled reports whether spans are exported.
func (t Traces) Enabled() bool { return t.Endpoint != "" }

// The upstream kinds: the wire protocol an upstream speaks.
const (
	// KindOpenAI is an OpenAI-compatible API (chat/completions, completions,
	// embeddings, responses), authenticated with a bearer token.
	KindOpenAI = "openai"
	// KindAnthropic is Anthropic's native Messages API (<base_url>/messages),
	// authenticated with x-api-key and versioned by anthropic-version.
	KindAnthropic = "anthropic"
)

// Upstream is one provider.
type Upstream struct {
	// Name is how routes refer to this upstream.
	Name string `yaml:"name"`
	// Kind is the protocol the upstream speaks: KindOpenAI (the default) or
	// KindAnthropic.
	Kind string `yaml:"kind"`
	// BaseURL is the absolute http(s) URL that endpoint paths such as
	// /chat/completions (or, for an anthropic upstream, /messages) are
	// appended to, or InprocMock.
	BaseURL string `yaml:"base_url"`
	// APIKey is sent upstream as a bearer token (an anthropic upstream: as
	// x-api-key); usually ${SOME_ENV_VAR}.
	APIKey string `yaml:"api_key"`
	// AnthropicVersion is the anthropic-version header sent to an anthropic
	// upstream with the requests the gateway writes (a chat completion
	// translated to Messages), and with /v1/messages requests whose client
	// sent none. Empty means 2023-06-01 for translated chat completions
	// (that version takes temperature and top_p) and the current version
	// the SDKs send for /v1/messages.
	AnthropicVersion string `yaml:"anthropic_version"`
	// Optional upstreams are left out, with their routes, when APIKey is
	// empty, so a config can route to a provider only when its key is set.
	Optional bool `yaml:"optional"`
	// Headers are extra headers sent with every upstream request.
	Headers map[string]string `yaml:"headers"`
	// ConnectTimeout bounds establishing a connection.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// FirstByteTimeout bounds the wait for a stream's response headers.
	FirstByteTimeout time.Duration `yaml:"first_byte_timeout"`
	// EventTimeout bounds the gap between two reads of a stream.
	EventTimeout time.Duration `yaml:"event_timeout"`
	// Timeout bounds a whole request, streams included.
	Timeout time.Duration `yaml:"timeout"`
	// MaxConns caps open connections to this upstream.
	MaxConns int `yaml:"max_conns"`
	// MaxIdleConnDuration closes connections idle for longer.
	MaxIdleConnDuration time.Duration `yaml:"max_idle_conn_duration"`
	// StaleCheckAfter is how long a pooled connection may have idled before
	// a request on it first checks, with a system call, that the upstream
	// has not closed it (then the request is retried on a fresh connection,
	// provably unsent). Connections reused sooner skip the check; 0 checks
	// every reuse.
	StaleCheckAfter time.Duration `yaml:"stale_check_after"`
	// Health is how the gateway judges, from the answers alone, whether the
	// upstream's routes can take traffic, and how many retries it may take.
	Health Health `yaml:"health"`
}

// Health is passive health checking of an upstream's routes (a route is the
// upstream serving one model), in the style of Envoy's outlier detection,
// and the retry budget that bounds the failovers sent to the upstream.
type Health struct {
	// ConsecutiveFailures in a row (connect failures, timeouts, drops, 5xx,
	// 429) eject a route.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// Ejection is how long a first ejection lasts; each ejection that
	// follows without a stable healthy spell between lasts twice as long
	// as the one before, up to MaxEjection. Then one trial request decides.
	Ejection time.Duration `yaml:"ejection"`
	// MaxEjection bounds an ejection.
	MaxEjection time.Duration `yaml:"max_ejection"`
	// MaxCoolDown bounds how long a retry-after on a 429 or 503 keeps the
	// route out of the choice.
	MaxCoolDown time.Duration `yaml:"max_cool_down"`
	// RetryRatio is how many failovers the upstream may take per request it
	// gets first, over the last 10 to 20 seconds.
	RetryRatio float64 `yaml:"retry_ratio"`
	// MinRetries are failovers allowed in each 10-second window whatever the
	// ratio allows, so a quiet upstream can still take some.
	MinRetries int `yaml:"min_retries"`
}

// Model is a model name clients may request, and where it is served.
type Model struct {
	// Name is what clients put in the request's "model" field.
	Name string `yaml:"name"`
	// Routes are the upstreams serving the model, picked by health, latency
	// and load with the weights as a prior; at most MaxRoutes.
	Routes []Route `yaml:"routes"`
	// Price is what the model costs, for budgets and spend.
	Price Price `yaml:"price"`
	// MaxOutputTokens is the most output tokens one request may produce.
	MaxOutputTokens int64 `yaml:"max_output_tokens"`
	// ContextWindowTokens is the most tokens, input and output, the model
	// takes in one request; 0 when not given. It bounds the input of a
	// Responses API request that continues an earlier response or a
	// conversation, which the request's body does not bound.
	ContextWindowTokens int64 `yaml:"context_window_tokens"`
	// OwnedBy is shown in GET /v1/models; by default the first route's upstream.
	OwnedBy string `yaml:"owned_by"`
}

// MaxRoutes is the most routes a model may have: a request's attempts keep
// the routes they tried in one 64-bit word.
const MaxRoutes = 64

// Route sends a model's requests to one upstream.
type Route struct {
	// Upstream is the name of an entry of Config.Upstreams.
	Upstream string `yaml:"upstream"`
	// Model is the model name the upstream knows; by default the model's own name.
	Model string `yaml:"model"`
	// Weight is this route's share of the model's traffic, relative to its
	// other routes, when they are alike in latency and load.
	Weight int `yaml:"weight"`
}

// Price is a model's price in micro-dollars per million tokens.
type Price struct {
	// InputPerMTok is the price of a million prompt tokens.
	InputPerMTok usd.Micro `yaml:"input_per_mtok"`
	// CachedInputPerMTok is the price of a million prompt tokens the
	// provider read from its prompt cache (usage's cached_tokens, which are
	// part of the prompt tokens); nil means InputPerMTok. It may be above
	// InputPerMTok: admission's worst case takes the higher of the two.
	CachedInputPerMTok *usd.Micro `yaml:"cached_input_per_mtok"`
	// CacheWritePerMTok is the price of a million prompt tokens the provider
	// wrote to its prompt cache (Anthropic's cache_creation_input_tokens,
	// part of the prompt); nil means InputPerMTok. Admission's worst case
	// takes the highest of the three input prices.
	CacheWritePerMTok *usd.Micro `yaml:"cache_write_per_mtok"`
	// OutputPerMTok is the price of a million completion tokens.
	OutputPerMTok usd.Micro `yaml:"output_per_mtok"`
}

// USD returns p as the gateway bills it, with the cached-input and
// cache-write prices defaulted to the input price.
func (p *Price) USD() usd.Price {
	cached, write := p.InputPerMTok, p.InputPerMTok
	if p.CachedInputPerMTok != nil {
		cached = *p.CachedInputPerMTok
	}
	if p.CacheWritePerMTok != nil {
		write = *p.CacheWritePerMTok
	}
	return usd.Price{InputPerMTok: p.InputPerMTok, CachedInputPerMTok: cached, CacheWritePerMTok: write, OutputPerMTok: p.OutputPerMTok}
}

// Upstream returns the upstream called name, or nil.
func (c *Config) Upstream(name string) *Upstream {
	for i := range c.Upstreams {
		if c.Upstreams[i].Name == name {
			return &c.Upstreams[i]
		}
	}
	return nil
}
