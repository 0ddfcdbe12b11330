package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// boundsConfig serves mock at $1/$2 per million tokens (chat, legacy
// completions and embeddings alike) on plans with a per-request and a
// monthly cap.
func boundsConfig(up string) string {
	return fmt.Sprintf(`
upstreams: [{name: up, base_url: %q}]
models:
  - {name: mock, routes: [{upstream: up}], price: {input_per_mtok: 1, output_per_mtok: 2}, max_output_tokens: 1000}
plans:
  - {name: reqcap, models: ["*"], max_request_usd: 0.0005}
  - {name: embedcap, models: ["*"], max_request_usd: 0.0025}
  - {name: month, models: ["*"], monthly_usd: 0.002}
  - {name: open, models: ["*"]}
`, up)
}

// promptArray is a legacy completion of n prompts of max_tokens 16: 16 x n
// tokens of output, which the upstream generates and bills.
func promptArray(n int, extra string) string {
	prompts := make([]string, n)
	for i := range prompts {
		prompts[i] = fmt.Sprintf(`"Say something about the number %d."`, i)
	}
	return `{"model":"mock","max_tokens":16,"prompt":[` + strings.Join(prompts, ",") + `]` + extra + `}`
}

// TestRequestCapBoundsEveryMultiplier is issue 11 item 4: the per-request cap
// weighs what the upstream can bill for the body, every multiplier included.
// Each refused body would cost more than the $0.0005 cap (20 x 16 output
// tokens at $2 a million is $0.00064); each served one costs less.
func TestRequestCapBoundsEveryMultiplier(t *testing.T) {
	m, up := startMock(t, mock.Options{})
	g := startGateway(t, boundsConfig(up), "")
	key, embedKey := g.newKey("reqcap").Key, g.newKey("embedcap").Key
	f := func(path, key, body string, want int) {
		t.Helper()
		before := m.Requests()
		st, hdr, b := g.do("POST", path, key, []byte(body))
		if want == http.StatusPaymentRequired {
			wantErrorBody(t, st, hdr, b, want, "budget_exceeded")
			if m.Requests() != before {
				t.Fatalf("%s: refused, yet the upstream got it", body)
			}
			return
		}
		if st != want {
			t.Fatalf("%s: %d %s, want %d", body, st, b, want)
		}
	}
	f("/v1/completions", key, promptArray(1, ""), http.StatusOK)
	f("/v1/completions", key, promptArray(20, ""), http.StatusPaymentRequired)
	f("/v1/completions", key, promptArray(1, `,"best_of":20`), http.StatusPaymentRequired)
	f("/v1/completions", key, promptArray(4, `,"n":5`), http.StatusPaymentRequired)
	f("/v1/completions", key, `{"model":"mock","max_tokens":16,"prompt":[[1,2],[3],[4],[5],[6],[7],[8],[9],[10],[11],[12],[13],[14],[15],[16],[17],[18],[19],[20],[21]]}`,
		http.StatusPaymentRequired)
	// Chat: n choices of max_tokens each.
	f("/v1/chat/completions", key, `{"model":"mock","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`, http.StatusOK)
	f("/v1/chat/completions", key, `{"model":"mock","max_tokens":16,"n":20,"messages":[{"role":"user","content":"hi"}]}`, http.StatusPaymentRequired)
	// Embeddings of 3,000 token ids cost $0.003, past the $0.0025 cap, in
	// 6,000 bytes: four bytes a token would have let them through.
	ids := strings.TrimSuffix(strings.Repeat("1,", 3000), ",")
	f("/v1/embeddings", embedKey, `{"model":"mock","input":[`+ids+`]}`, http.StatusPaymentRequired)
	f("/v1/embeddings", embedKey, `{"model":"mock","input":[`+ids[:1999]+`]}`, http.StatusOK)
}

// TestMonthlyCapHoldsAgainstPromptArrays: 12 prompt-array requests at once
// against a $0.002 month, each billed about $0.00068 by the upstream: what is
// spent never passes the cap.
func TestMonthlyCapHoldsAgainstPromptArrays(t *testing.T) {
	// The latency keeps the requests in flight together, as an attacker would.
	_, up := startMock(t, mock.Options{Latency: 200 * time.Millisecond})
	g := startGateway(t, boundsConfig(up), "")
	k := g.newKey("month")
	body := []byte(promptArray(20, ""))
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, _, b := g.do("POST", "/v1/completions", k.Key, body)
			if st != http.StatusOK && st != http.StatusPaymentRequired {
				t.Errorf("%d %s", st, b)
			}
			mu.Lock()
			statuses[st]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	var u struct {
		Requests int64   `json:"requests"`
		SpendUSD float64 `json:"spend_usd"`
	}
	g.admin("GET", "/v1/keys/"+k.ID+"/usage", nil, http.StatusOK, &u)
	if u.SpendUSD > 0.002 || u.Requests != int64(statuses[http.StatusOK]) || statuses[http.StatusOK] == 0 {
		t.Fatalf("spent $%v of a $0.002 month over %d requests (statuses %v)", u.SpendUSD, u.Requests, statuses)
	}
}

// TestBillOverBoundCountedAndLogged: an upstream that reports more than the
// request could produce is billed what it reports (the gateway does not know
// better), and the miss is counted and logged once per request, since it
// means admission's bound was wrong.
func TestBillOverBoundCountedAndLogged(t *testing.T) {
	_, up := startMock(t, mock.Options{OverReportTokens: 5000})
	logs := &syncBuffer{}
	g := startNodeLogging(t, "store: {path: "+t.TempDir()+"}\n"+boundsConfig(up), logs)
	k := g.newKey("open")
	st, _, b := g.do("POST", "/v1/chat/completions", k.Key, []byte(`{"model":"mock","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`))
	if st != http.StatusOK {
		t.Fatalf("%d %s", st, b)
	}
	rawStream(t, g.url, k.Key, `{"model":"mock","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if _, completion := g.billedEventually(k.ID, 2); completion != 2*5010 {
		t.Fatalf("billed %d completion tokens, want the upstream's 2 x 5010", completion)
	}
	if got := g.scrape()[`tokenhub_usage_over_bound_total{model="mock",plan="open"}`]; got != 2 {
		t.Fatalf("tokenhub_usage_over_bound_total = %v, want 2", got)
	}
	if n := strings.Count(logs.String(), "more than admission's worst case"); n != 2 {
		t.Fatalf("%d log lines about the bound, want one per request:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), k.Key) || strings.Contains(logs.String(), `"hi"`) {
		t.Fatalf("the log holds a secret or request content:\n%s", logs.String())
	}
}
