package config

import (
	"time"

	"github.com/tokenhub/tokenhub/internal/valkeyx"
)

// Defaults are filled in before decoding, not after, so that a key written
// with an explicit zero ("timeout: 0s", "weight: 0") reaches Validate and is
// reported, instead of silently turning into the default.

// defaultConfig returns the top-level defaults: a server on loopback with an
// embedded store in ./data.
func defaultConfig() Config {
	return Config{
		Listen:       "127.0.0.1:8080",
		MaxBodyBytes: 16 * MiB,
		Server: Server{
			ReadTimeout:        30 * time.Second,
			IdleTimeout:        120 * time.Second,
			ShutdownTimeout:    30 * time.Second,
			StreamDrainTimeout: 30 * time.Second,
			MaxStreamDrains:    256,
			// Four bodies of the largest default size, or thousands of
			// ordinary prompts, at once; well under what a laptop holds.
			MaxBodyBytesInFlight: 64 * MiB,
		},
		Store: Store{Path: "./data", Journal: Journal{SyncInterval: time.Second, SegmentSize: 32 * MiB},
			Responses: Responses{Retention: 30 * 24 * time.Hour, MaxIDs: 1_000_000}},
		Cache: defaultCache(),
		Log:   Log{Level: "info", Format: "json", Access: AccessLog{Enabled: true, Level: "info", Sample: 1}},
		// Every request traced once an endpoint is set: the export is
		// bounded and off the request path.
		Telemetry: Telemetry{Traces: Traces{Sample: 1}},
	}
}

// defaultCache is the one source of the key cache's defaults: keys takes
// every value explicitly from here (through the node). StaleAfter plus
// StaleIfError, with a second for a message in flight, stays within the
// 5-second revocation promise (TestCacheDefaultsKeepRevocationPromise).
func defaultCache() Cache {
	return Cache{
		MaxKeys:      1_000_000,
		NegativeTTL:  2 * time.Second,
		StaleAfter:   time.Second,
		StaleIfError: 4 * time.Second,
	}
}

func defaultUpstream() Upstream {
	return Upstream{
		Kind:                KindOpenAI,
		ConnectTimeout:      5 * time.Second,
		FirstByteTimeout:    60 * time.Second,
		EventTimeout:        60 * time.Second,
		Timeout:             10 * time.Minute,
		MaxConns:            512,
		MaxIdleConnDuration: 30 * time.Second,
		StaleCheckAfter:     100 * time.Millisecond,
		Health:              defaultHealth(),
	}
}

// defaultHealth ejects a route after 5 failures in a row for 10s, then 20s,
// 40s… up to 5 minutes, honours a retry-after of up to a minute, and lets
// each upstream take 10% extra attempts in failovers, at least 10 in 10s.
func defaultHealth() Health {
	return Health{
		ConsecutiveFailures: 5,
		Ejection:            10 * time.Second,
		MaxEjection:         5 * time.Minute,
		MaxCoolDown:         time.Minute,
		RetryRatio:          0.1,
		MinRetries:          10,
	}
}

func defaultValkey() Valkey {
	return Valkey{Prefix: valkeyx.DefaultPrefix, Timeout: valkeyx.DefaultTimeout}
}

// UnmarshalYAML decodes the valkey block over its defaults; see Upstream.UnmarshalYAML.
func (v *Valkey) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Valkey
	p := plain(defaultValkey())
	if err := unmarshal(&p); err != nil {
		return err
	}
	*v = Valkey(p)
	return nil
}

func defaultModel() Model { return Model{MaxOutputTokens: 4096} }

func defaultRoute() Route { return Route{Weight: 1} }

// UnmarshalYAML decodes an upstream over its defaults. It uses the yaml.v2
// style interface on purpose: the callback decodes with the caller's decoder,
// which keeps that decoder's limits on alias expansion in force.
func (u *Upstream) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Upstream // without the method, so decoding does not recurse
	p := plain(defaultUpstream())
	if err := unmarshal(&p); err != nil {
		return err
	}
	*u = Upstream(p)
	return nil
}

// UnmarshalYAML decodes a model over its defaults; see Upstream.UnmarshalYAML.
func (m *Model) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Model
	p := plain(defaultModel())
	if err := unmarshal(&p); err != nil {
		return err
	}
	*m = Model(p)
	return nil
}

// UnmarshalYAML decodes a route over its defaults; see Upstream.UnmarshalYAML.
func (r *Route) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Route
	p := plain(defaultRoute())
	if err := unmarshal(&p); err != nil {
		return err
	}
	*r = Route(p)
	return nil
}

// deriveDefaults fills the defaults that depend on other fields, once the
// whole file is decoded.
func (c *Config) deriveDefaults() {
	for i := range c.Models {
		m := &c.Models[i]
		for j := range m.Routes {
			if m.Routes[j].Model == "" {
				m.Routes[j].Model = m.Name
			}
		}
		// Taken from the routes as written, before optional upstreams are
		// dropped, so that owned_by does not change with the environment.
		if m.OwnedBy == "" && len(m.Routes) > 0 {
			m.OwnedBy = m.Routes[0].Upstream
		}
	}
}
