package config

import (
	"maps"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenhub/tokenhub/internal/usd"
)

// fieldPaths adds to out the path of every YAML key reachable from t, with
// "[]" for a list element: "upstreams[].max_conns". The keys of a map field
// are the author's, so a map's path ends there.
func fieldPaths(t reflect.Type, prefix string, out map[string]bool) {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice:
		suffix := ""
		if t.Kind() == reflect.Slice {
			suffix = "[]"
		}
		fieldPaths(t.Elem(), prefix+suffix, out)
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			if k := yamlKey(t.Field(i)); k != "" {
				p := joinPath(prefix, k)
				out[p] = true
				fieldPaths(t.Field(i).Type, p, out)
			}
		}
	}
}

// documentedPaths adds to present the path of every key in n, and to
// commented those with a comment. yaml.v3 attaches the comment above a list
// item's first key to the item, so that counts for the first key.
func documentedPaths(n *yaml.Node, prefix string, present, commented map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			documentedPaths(c, prefix, present, commented)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			documentedPaths(c, prefix+"[]", present, commented)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := joinPath(prefix, k.Value)
			present[p] = true
			if k.HeadComment != "" || k.LineComment != "" || v.LineComment != "" || i == 0 && n.HeadComment != "" {
				commented[p] = true
			}
			documentedPaths(v, p, present, commented)
		}
	}
}

// TestExampleDocumentsEveryField keeps example.yaml from drifting: every key
// of every type reachable from Config must appear there with a comment.
func TestExampleDocumentsEveryField(t *testing.T) {
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	fields := make(map[string]bool)
	fieldPaths(reflect.TypeFor[Config](), "", fields)
	present, commented := make(map[string]bool), make(map[string]bool)
	documentedPaths(&root, "", present, commented)

	// The reflection must see through Plan and the nested lists, or the
	// check below would pass vacuously.
	for _, p := range []string{"plans[].monthly_usd", "models[].routes[].weight", "upstreams[].headers", "cache.negative_ttl"} {
		if !fields[p] {
			t.Fatalf("fieldPaths missed %s", p)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(fields)) {
		switch {
		case !present[p]:
			t.Errorf("example.yaml does not show %s; add it with a comment saying what it does, its default and its units", p)
		case !commented[p]:
			t.Errorf("example.yaml shows %s without a comment", p)
		}
	}
}

// TestExampleShowsDefaults checks that where example.yaml writes out a
// default, it writes the real one.
func TestExampleShowsDefaults(t *testing.T) {
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(data, "example.yaml", env("OPENAI_API_KEY", "sk-test", "TOKENHUB_ADMIN_KEY", "0123456789abcdef0123"))
	if err != nil {
		t.Fatal(err)
	}
	def := defaultConfig()
	got := *c
	got.AdminKey, got.Upstreams, got.Models, got.Plans, got.DroppedUpstreams, got.DroppedModels = "", nil, nil, nil, nil, nil
	v := *got.Store.Valkey
	got.Store.Valkey = nil
	if !reflect.DeepEqual(got, def) {
		t.Fatalf("example.yaml's top-level values\n%+v\ndiffer from the defaults\n%+v", got, def)
	}
	v.Addrs, v.Password = nil, ""
	if !reflect.DeepEqual(v, defaultValkey()) {
		t.Fatalf("example.yaml's store.valkey values\n%+v\ndiffer from the defaults\n%+v", v, defaultValkey())
	}
	u := *c.Upstream("openai")
	u.Name, u.BaseURL, u.APIKey, u.Optional, u.Headers = "", "", "", false, nil
	if !reflect.DeepEqual(u, defaultUpstream()) {
		t.Fatalf("example.yaml's openai upstream\n%+v\ndiffers from the defaults\n%+v", u, defaultUpstream())
	}
}

// TestShippedConfigsLoad loads default.yaml and example.yaml with neither,
// one or both provider keys set, and checks which models each offers.
func TestShippedConfigsLoad(t *testing.T) {
	example, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f := func(name string, data []byte, getenv func(string) string, wantModels ...string) {
		t.Helper()
		c, err := Parse(data, name, getenv)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got []string
		for _, m := range c.Models {
			got = append(got, m.Name)
		}
		if !slices.Equal(got, wantModels) {
			t.Fatalf("%s offers %q, want %q", name, got, wantModels)
		}
	}
	openai, anthropic, both := env("OPENAI_API_KEY", "sk-o"), env("ANTHROPIC_API_KEY", "sk-a"), env("OPENAI_API_KEY", "sk-o", "ANTHROPIC_API_KEY", "sk-a")
	f("default.yaml", Default(), env(), "mock")
	f("default.yaml", Default(), openai, "mock", "gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
	f("default.yaml", Default(), anthropic, "mock", "claude-sonnet-4-6")
	f("default.yaml", Default(), both, "mock", "gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-sonnet-4-6")
	// example.yaml uses store.valkey, which needs the admin key from the environment.
	admin := func(kv ...string) func(string) string {
		return env(append(kv, "TOKENHUB_ADMIN_KEY", "0123456789abcdef0123")...)
	}
	f("example.yaml", example, admin(), "mock")
	f("example.yaml", example, admin("OPENAI_API_KEY", "sk-o"), "gpt-4o-mini", "mock")
	f("example.yaml", example, admin("OPENAI_API_KEY", "sk-o", "ANTHROPIC_API_KEY", "sk-a"), "gpt-4o-mini", "claude-sonnet-4-6", "mock")
}

// TestDefaultContents pins what the built-in configuration promises.
func TestDefaultContents(t *testing.T) {
	c, err := Parse(Default(), "default.yaml", env("OPENAI_API_KEY", "sk-o", "ANTHROPIC_API_KEY", "sk-a"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8080" || c.Store.Path != "./data" || c.AdminKey != "" {
		t.Fatalf("listen %q, store.path %q, admin_key %q", c.Listen, c.Store.Path, c.AdminKey)
	}
	price := func(model string, in, out usd.Micro) {
		t.Helper()
		for _, m := range c.Models {
			if m.Name == model {
				if m.Price.InputPerMTok != in || m.Price.OutputPerMTok != out {
					t.Fatalf("%s price = %s/%s, want %s/%s", model, m.Price.InputPerMTok, m.Price.OutputPerMTok, in, out)
				}
				return
			}
		}
		t.Fatalf("no model %s", model)
	}
	price("mock", 100_000, 400_000)
	price("gpt-4o-mini", 150_000, 600_000)
	price("gpt-4o", 2_500_000, 10_000_000)
	price("text-embedding-3-small", 20_000, 0)
	price("claude-sonnet-4-6", 3_000_000, 15_000_000)
	if u := c.Upstream("openai"); u.BaseURL != "https://api.openai.com/v1" || u.APIKey != "sk-o" || !u.Optional {
		t.Fatalf("openai upstream = %+v", u)
	}
	if u := c.Upstream("anthropic"); u.BaseURL != "https://api.anthropic.com/v1" || u.APIKey != "sk-a" || !u.Optional {
		t.Fatalf("anthropic upstream = %+v", u)
	}

	if len(c.Plans) != 2 {
		t.Fatalf("%d plans, want default and free", len(c.Plans))
	}
	def, free := c.Plans[0], c.Plans[1]
	if def.Name != "default" || !slices.Equal(def.Models, []string{"*"}) || def.RPM != 0 || def.TPM != 0 || def.MaxRequestUSD != 0 || def.MonthlyUSD != 0 {
		t.Fatalf("default plan = %+v", def)
	}
	if free.Name != "free" || !slices.Equal(free.Models, []string{"mock", "gpt-4o-mini", "text-embedding-*"}) ||
		free.RPM != 60 || free.TPM != 100000 || free.MaxRequestUSD != 500_000 || free.MonthlyUSD != 10_000_000 {
		t.Fatalf("free plan = %+v", free)
	}
	// Which models the free plan's globs admit is keys' rule, checked where
	// the node turns these plans into keys' (proxy's TestDefaultPlansAllow).
}

// TestCacheDefaultsKeepRevocationPromise: the cache's defaults are the
// config's alone (keys takes them explicitly), so the 5-second revocation
// promise is checked here: a node cut off from the store serves a key for
// StaleIfError after it last knew it current, and a revocation message
// needs up to a second to arrive.
func TestCacheDefaultsKeepRevocationPromise(t *testing.T) {
	def := defaultConfig().Cache
	if def.StaleIfError+time.Second > 5*time.Second {
		t.Fatalf("cache.stale_if_error %v leaves no room for a message's delay within the 5s promise", def.StaleIfError)
	}
	// 3 heartbeats of 500ms plus StaleAfter bound a change's spread while
	// pub/sub is down (keys.Invalidator); validate allows at most 3s.
	if def.StaleAfter <= 0 || 1500*time.Millisecond+def.StaleAfter > 5*time.Second {
		t.Fatalf("cache.stale_after %v breaks the 5s promise", def.StaleAfter)
	}
}
