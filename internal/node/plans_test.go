package node

import (
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/keys"
)

// TestConfigPlansCheckedLikeKeys: config checks plans by keys.Plan.Compile's
// rules without importing keys, so check-config reports every bad plan.
// Each plan here goes both ways, config.Parse and KeyPlans + Compile: both
// accept it, or both refuse it with the same message.
func TestConfigPlansCheckedLikeKeys(t *testing.T) {
	f := func(plan string) {
		t.Helper()
		doc := "models: [{name: m, routes: [{upstream: u}]}]\n" +
			"upstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1'}]\n" +
			"plans: [" + plan + "]\n"
		c, cfgErr := config.Parse([]byte(doc), "t.yaml", func(string) string { return "" })
		var keysErr error
		if cfgErr == nil {
			keysErr = KeyPlans(c.Plans)[0].Compile()
			if keysErr != nil {
				t.Fatalf("%s: config accepts it, keys refuses it: %v", plan, keysErr)
			}
			return
		}
		// Decode the plan as config would, without config's checks, to
		// ask keys about the same values.
		lenient := "plans: [" + plan + "]\n"
		var raw struct {
			Plans []*config.Plan `yaml:"plans"`
		}
		if err := yaml.Unmarshal([]byte(lenient), &raw); err != nil {
			t.Fatalf("%s: %v", plan, err)
		}
		keysErr = KeyPlans(raw.Plans)[0].Compile()
		if keysErr == nil {
			t.Fatalf("%s: config refuses it (%v), keys accepts it", plan, cfgErr)
		}
		if !errors.Is(keysErr, keys.ErrInvalidPlan) {
			t.Fatalf("%s: keys' error %v is not ErrInvalidPlan", plan, keysErr)
		}
		if want := "plans[0]: " + keysErr.Error(); !strings.HasSuffix(cfgErr.Error(), want) {
			t.Fatalf("%s: config says\n%v\nwant it to end with keys' message\n%s", plan, cfgErr, want)
		}
	}
	f("{name: free, models: ['*'], rpm: 60}")
	f("{name: p, models: [m, 'gpt-4o*'], rpm: 1000000000, tpm: 1000000000, max_request_usd: 1000000, monthly_usd: 1000000}")
	f("{name: p}")
	f("{name: '', models: ['*']}")
	f("{name: 'free plan', models: ['*']}")
	f("{name: p, models: ['*'], rpm: -1}")
	f("{name: p, models: ['*'], tpm: -1}")
	f("{name: p, models: ['*'], rpm: 1000000001}")
	f("{name: p, models: ['*'], tpm: 1000000001}")
	f("{name: p, models: ['*'], monthly_usd: 1000000.000001}")
	f("{name: p, models: ['*'], max_request_usd: 1000001}")
	f("{name: p, models: ['']}")
	f("{name: p, models: ['" + strings.Repeat("x", 257) + "']}")
}

// TestDefaultPlansAllow: the built-in configuration's plans, seeded as a
// node seeds them, admit the models they name and no others.
func TestDefaultPlansAllow(t *testing.T) {
	c, err := config.Parse(config.Default(), "default.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	plans := KeyPlans(c.Plans)
	if len(plans) != 2 || plans[1].Name != "free" {
		t.Fatalf("default plans %+v, want default and free", plans)
	}
	free := plans[1]
	if err := free.Compile(); err != nil {
		t.Fatal(err)
	}
	f := func(model string, want bool) {
		t.Helper()
		if got := free.Allows([]byte(model)); got != want {
			t.Fatalf("free.Allows(%q) = %v, want %v", model, got, want)
		}
	}
	f("mock", true)
	f("text-embedding-3-small", true)
	f("gpt-4o", false)
	f("claude-sonnet-4-6", false)
}
