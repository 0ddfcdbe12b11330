package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

// limitedNodes starts n gateways sharing a Valkey, with limitsConfig's plans.
func limitedNodes(t *testing.T, n int) []*gateway {
	t.Helper()
	v := valkeytest.Start(t)
	_, up := startMock(t, mock.Options{Chunks: 1000, Anthropic: mock.AnthropicOptions{APIKey: providerKey}})
	prefix := fmt.Sprintf("t%d", time.Now().UnixNano())
	var nodes []*gateway
	for range n {
		nodes = append(nodes, startNode(t, fmt.Sprintf("store: {path: %s, valkey: {addrs: [%q], prefix: %s, timeout: 10s}}\n",
			t.TempDir(), v.Addr(), prefix)+limitsConfig(up)))
	}
	return nodes
}

// TestMonthlyCapAcrossNodes: 100 concurrent requests spread over two nodes,
// half of them chat completions and half Anthropic Messages, against a
// budget with room for a few: spend ends at or under the cap.
func TestMonthlyCapAcrossNodes(t *testing.T) {
	nodes := limitedNodes(t, 2)
	k := nodes[0].newKey("monthly") // $0.02; each request's worst case about $0.002
	var wg sync.WaitGroup
	var served, refused atomic.Int64
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path, model, refusal := "/v1/chat/completions", "mock", `"code":"budget_exceeded"`
			if i/2%2 == 1 {
				path, model, refusal = "/v1/messages", "claude", `"type":"billing_error"`
			}
			st, _, body := nodes[i%2].do("POST", path, k.Key,
				[]byte(`{"model":"`+model+`","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`))
			switch {
			case st == 200:
				served.Add(1)
			case st == 402 && strings.Contains(string(body), refusal):
				refused.Add(1)
			default:
				t.Errorf("%d %s", st, body)
			}
		}()
	}
	wg.Wait()
	var u struct {
		Requests int64   `json:"requests"`
		SpendUSD float64 `json:"spend_usd"`
	}
	// Both nodes flush their usage every second.
	eventually.True(t, "every served request recorded", func() bool {
		nodes[1].admin("GET", "/v1/keys/"+k.ID+"/usage", nil, http.StatusOK, &u)
		return u.Requests == served.Load()
	})
	t.Logf("%d served, %d refused, $%v spent of $0.02", served.Load(), refused.Load(), u.SpendUSD)
	if u.Requests != served.Load() || u.SpendUSD > 0.02 || u.SpendUSD < 0.016 {
		t.Fatalf("%d served, %d recorded, $%v spent: want every one recorded, at most the cap and close to it",
			served.Load(), u.Requests, u.SpendUSD)
	}
}

// TestRateLimitAcrossNodes: a key's rpm holds over the nodes together, not
// per node: hammering two nodes for 3s admits one minute's burst plus 3s of
// refill, within 5%.
func TestRateLimitAcrossNodes(t *testing.T) {
	nodes := limitedNodes(t, 2)
	key := nodes[0].newKey("rpm60").Key
	var admitted, limited atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(3 * time.Second)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				switch st, _, body := nodes[i%2].do("POST", "/v1/chat/completions", key, []byte(smallChat)); st {
				case 200:
					admitted.Add(1)
				case 429:
					limited.Add(1)
				default:
					t.Errorf("%d %s", st, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	most := 60 + elapsed // the burst, then one a second
	t.Logf("%d admitted, %d refused over %.1fs on 2 nodes; at most %.0f allowed", admitted.Load(), limited.Load(), elapsed, most)
	if a := float64(admitted.Load()); a > most+1 || a < 0.95*(60+elapsed-1) {
		t.Fatalf("%d admitted over %.1fs: want between 95%% of and at most %.0f", admitted.Load(), elapsed, most)
	}
}
