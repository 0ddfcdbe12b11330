package proxy

import (
	"context"
	"math"
	"net/http"
	"testing"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// TestSpendCountedOnceWhenAPlanGainsACap: 30 requests on an uncapped plan,
// flushed to the store, then the key's plan gains a monthly cap of 1.5 times
// that spend (by PATCHing the key to a capped plan, or by PUTting a cap on
// its plan): the next small request is served. Before the fix it was
// refused with 402, the stored spend having been added on top of the spend
// already counted in memory.
func TestSpendCountedOnceWhenAPlanGainsACap(t *testing.T) {
	for _, how := range []string{"PATCH the key", "PUT the plan"} {
		t.Run(how, func(t *testing.T) {
			_, up := startMock(t, mock.Options{})
			g := startGateway(t, limitsConfig(up), "")
			g.admin("PUT", "/v1/plans/grows", map[string]any{"models": []string{"*"}}, http.StatusOK, nil)
			var k apiKey
			g.admin("POST", "/v1/keys", map[string]any{"name": "test", "plan": "grows"}, http.StatusCreated, &k)
			for i := range 30 {
				if st, _, body := g.do("POST", "/v1/chat/completions", k.Key, []byte(smallChat)); st != 200 {
					t.Fatalf("uncapped request %d: %d %s", i, st, body)
				}
			}
			if err := g.node.Gate.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			var u struct {
				Requests int64   `json:"requests"`
				SpendUSD float64 `json:"spend_usd"`
			}
			g.admin("GET", "/v1/keys/"+k.ID+"/usage", nil, http.StatusOK, &u)
			if u.Requests != 30 || u.SpendUSD == 0 {
				t.Fatalf("usage after 30 requests: %+v", u)
			}
			// Room for the next request (a few tokens) but not for the
			// spend twice over.
			capUSD := math.Ceil(u.SpendUSD*1.5*1e6) / 1e6
			plan := map[string]any{"models": []string{"*"}, "monthly_usd": capUSD}
			switch how {
			case "PATCH the key":
				g.admin("PUT", "/v1/plans/capped15", plan, http.StatusOK, nil)
				g.admin("PATCH", "/v1/keys/"+k.ID, map[string]any{"plan": "capped15"}, http.StatusOK, nil)
			case "PUT the plan":
				g.admin("PUT", "/v1/plans/grows", plan, http.StatusOK, nil)
			}
			var cur struct {
				MonthlyUSD *float64 `json:"monthly_usd"`
			}
			g.admin("GET", "/v1/keys/"+k.ID+"/usage", nil, http.StatusOK, &cur)
			if cur.MonthlyUSD == nil || *cur.MonthlyUSD != capUSD {
				t.Fatalf("after the change the key's cap is %v, want %v", cur.MonthlyUSD, capUSD)
			}
			if st, _, body := g.do("POST", "/v1/chat/completions", k.Key, []byte(smallChat)); st != 200 {
				t.Fatalf("spent $%v of $%v, a request of a few tokens: %d %s", u.SpendUSD, capUSD, st, body)
			}
		})
	}
}
