package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
	"github.com/tokenhub/tokenhub/limits"
	"github.com/tokenhub/tokenhub/proxy/openai"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// writeUsage is GET /v1/keys/{id}/usage with what cache-write billing
// shows: cache reads and writes apart, and spend exact.
type writeUsage struct {
	Requests   int64       `json:"requests"`
	Prompt     int64       `json:"prompt_tokens"`
	Cached     int64       `json:"cached_tokens"`
	CacheWrite int64       `json:"cache_write_tokens"`
	Completion int64       `json:"completion_tokens"`
	SpendUSD   json.Number `json:"spend_usd"`
	Models     []struct {
		Model      string      `json:"model"`
		Requests   int64       `json:"requests"`
		Prompt     int64       `json:"prompt_tokens"`
		Cached     int64       `json:"cached_tokens"`
		CacheWrite int64       `json:"cache_write_tokens"`
		Completion int64       `json:"completion_tokens"`
		SpendUSD   json.Number `json:"spend_usd"`
	} `json:"models"`
}

// sonnetPriceYAML has four distinct prices, Claude Sonnet's: $3 input,
// $0.30 a cache read, $3.75 a cache write, $15 output per million tokens.
const sonnetPriceYAML = "{input_per_mtok: 3, cached_input_per_mtok: 0.30, cache_write_per_mtok: 3.75, output_per_mtok: 15}"

// settleAsHandler does what an inference handler does with a request whose
// upstream reported used (no handler on this branch reads cache writes from
// an upstream yet: the Anthropic ones will): admission for the model at its
// price, the gate's ticket, settle with the usage, and the request's finish
// (metrics, access line).
func settleAsHandler(t *testing.T, g *gateway, k apiKey, modelName string, used usd.Tokens, known bool) {
	t.Helper()
	s := g.srv
	m := s.routing.Load().models.lookup([]byte(modelName))
	if m == nil {
		t.Fatalf("no model %q", modelName)
	}
	var c claim
	c.rec = requestRecord{start: time.Now(), ep: upstream.Chat, keyID: k.ID, plan: k.Plan, model: m.name, upstream: "up"}
	a := limits.Admission{KeyID: k.ID, Model: m.name, Worst: m.price.Bound(10_000, 1_000)}
	c.model, c.prompt, c.maxOutput, c.worst = m, 2_000, 1_000, a.Worst
	s.gate.Admit(context.Background(), &a, time.Now(), &c.ticket)
	if c.ticket.Refusal != limits.Admitted {
		t.Fatalf("refused: %v", c.ticket.Refusal)
	}
	s.settle(&c, used, known, []byte("req-cache-write"))
	s.finish(&c.rec, http.StatusOK, []byte("req-cache-write"), time.Millisecond)
}

// TestCacheWritesBilledShownAndCounted: a request whose upstream reports
// cache writes is billed them at the cache-write price, beside cache reads
// at theirs, to the pico-dollar; the usage API shows them apart (total and
// by model), tokenhub_cache_write_tokens_total counts them, and the access
// line says how many. A lying count (more cache tokens than prompt tokens)
// is billed no more than the prompt and counted as clamped; a request
// billed an estimate bills no cache write. On the embedded store and on
// Valkey.
func TestCacheWritesBilledShownAndCounted(t *testing.T) {
	for _, store := range []string{"embedded", "valkey"} {
		t.Run(store, func(t *testing.T) {
			_, up := startMock(t, mock.Options{})
			storeYAML := fmt.Sprintf("store: {path: %q}\n", t.TempDir())
			if store == "valkey" {
				v := valkeytest.Start(t)
				storeYAML = fmt.Sprintf("store: {path: %q, valkey: {addrs: [%q]}}\n", t.TempDir(), v.Addr())
			}
			var log logBuffer
			g := startNodeLogging(t, storeYAML+fmt.Sprintf(`
upstreams:
  - {name: up, base_url: %q}
models:
  - {name: sonnet, routes: [{upstream: up}], price: %s}
plans:
  - {name: all, models: ["*"]}
`, up, sonnetPriceYAML), &log)
			k := g.newKey("all")

			settleAsHandler(t, g, k, "sonnet", usd.Tokens{Prompt: 3000, Cached: 1000, CacheWrite: 1500, Completion: 300}, true)
			// 600 read and 5000 written of 1000 prompt tokens: 600 read, 400 written.
			settleAsHandler(t, g, k, "sonnet", usd.Tokens{Prompt: 1000, Cached: 600, CacheWrite: 5000}, true)
			// No usage from the upstream: the estimate (2000 prompt tokens)
			// at the input price, no cache read or write whatever was passed.
			settleAsHandler(t, g, k, "sonnet", usd.Tokens{Cached: 50, CacheWrite: 70, Completion: 100}, false)

			// 500×$3 + 1000×$0.30 + 1500×$3.75 + 300×$15, then 600×$0.30 +
			// 400×$3.75, then 2000×$3 + 100×$15, a million tokens at a time.
			want := usd.Pico(500*3_000_000 + 1000*300_000 + 1500*3_750_000 + 300*15_000_000 +
				600*300_000 + 400*3_750_000 +
				2000*3_000_000 + 100*15_000_000)
			if want.String() != "0.021105" {
				t.Fatalf("the expected spend is %s: the arithmetic above is off", want)
			}
			var u writeUsage
			g.admin("GET", "/v1/keys/"+k.ID+"/usage", nil, http.StatusOK, &u)
			if u.Requests != 3 || u.Prompt != 3000+1000+2000 || u.Cached != 1600 || u.CacheWrite != 1900 || u.Completion != 400 || u.SpendUSD.String() != want.String() {
				t.Fatalf("usage API shows %+v; want 6000 prompt tokens, 1600 read, 1900 written, 400 completion, $%s", u, want)
			}
			if len(u.Models) != 1 || u.Models[0].Model != "sonnet" || u.Models[0].Cached != 1600 || u.Models[0].CacheWrite != 1900 ||
				u.Models[0].Prompt != 6000 || u.Models[0].SpendUSD.String() != want.String() {
				t.Fatalf("by model: %+v", u.Models)
			}

			m := g.scrape()
			for series, want := range map[string]float64{
				`tokenhub_cache_write_tokens_total{model="sonnet",plan="all"}`:   1900,
				`tokenhub_cached_tokens_total{model="sonnet",plan="all"}`:        1600,
				`tokenhub_tokens_total{model="sonnet",plan="all",type="prompt"}`: 6000,
				`tokenhub_usage_cached_clamped_total{model="sonnet",plan="all"}`: 1,
				`tokenhub_usage_estimated_total{model="sonnet",plan="all"}`:      1,
			} {
				if got := m[series]; got != want {
					t.Errorf("%s = %v, want %v", series, got, want)
				}
			}

			lines := accessLines(t, &log, 3)
			for i, w := range []struct {
				prompt, cached, cacheWrite int64
				cost                       string
			}{{3000, 1000, 1500, "0.011925"}, {1000, 600, 400, "0.00168"}, {2000, 0, 0, "0.0075"}} {
				if a := lines[i].Request; a.Prompt != w.prompt || a.Cached != w.cached || a.CacheWrite != w.cacheWrite || a.CostUSD != w.cost {
					t.Errorf("access line %d: %+v; want %d prompt tokens, %d read, %d written, $%s", i, a, w.prompt, w.cached, w.cacheWrite, w.cost)
				}
			}
		})
	}
}

// TestWorstCaseUsesTheDearerCacheWritePrice: config lets the cache-write
// price be above the input price (Anthropic's is 1.25 or 2 times it); the
// per-request cap must then weigh the prompt at the cache-write price, since
// the upstream may report every prompt token written to its cache. The same
// request is admitted when the cache-write price is the lower.
func TestWorstCaseUsesTheDearerCacheWritePrice(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 2})
	yaml := fmt.Sprintf(`
upstreams:
  - {name: up, base_url: %q}
models:
  - {name: cheapwrite, routes: [{upstream: up}], price: {input_per_mtok: 1, cached_input_per_mtok: 0.5, cache_write_per_mtok: 0.5, output_per_mtok: 0}}
  - {name: dearwrite, routes: [{upstream: up}], price: {input_per_mtok: 1, cached_input_per_mtok: 0.5, cache_write_per_mtok: 4, output_per_mtok: 0}}
plans:
  - {name: capped, models: ["*"], max_request_usd: 0.0004}
`, up)
	g := startGateway(t, yaml, "")
	k := g.newKey("capped")
	// About 135 bytes, bounded at about 200 prompt tokens (openai.BoundPrompt):
	// some $0.0002 at the $1 input price, some $0.0008 at the $4 cache-write
	// price, either side of the $0.0004 cap with room to spare.
	body := func(model string) []byte {
		return []byte(`{"model":"` + model + `","max_tokens":2,"messages":[{"role":"user","content":"a prompt the upstream may say it wrote to its cache, all"}]}`)
	}
	for _, m := range []string{"cheapwrite", "dearwrite"} {
		if b := openai.BoundPrompt(len(body(m))); b < 101 || b > 400 {
			t.Fatalf("%s: bounded at %d prompt tokens, not within the 101 to 400 this test needs", m, b)
		}
	}
	if status, _, b := g.do("POST", "/v1/chat/completions", k.Key, body("cheapwrite")); status != http.StatusOK {
		t.Fatalf("cheapwrite: %d %s", status, b)
	}
	status, hdr, b := g.do("POST", "/v1/chat/completions", k.Key, body("dearwrite"))
	wantErrorBody(t, status, hdr, b, http.StatusPaymentRequired, "budget_exceeded")
}
