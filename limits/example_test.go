package limits_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/limits"
)

// A Gate admits a request against its key's rates and budgets before it is
// forwarded, holding its worst case against the monthly cap, and settles it
// to what the upstream reported afterwards.
func ExampleGate() {
	dir, _ := os.MkdirTemp("", "tokenhub-example")
	defer os.RemoveAll(dir)
	ledger, err := limits.OpenBoltLedger(dir)
	if err != nil {
		panic(err)
	}
	defer ledger.Close()
	gate := limits.NewGate(ledger, nil)

	price := usd.Price{InputPerMTok: 150_000, OutputPerMTok: 600_000} // $0.15 and $0.60 per Mtok
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	admit := func(maxTokens int64) *limits.Ticket {
		a := limits.Admission{
			KeyID: "key_1", Model: "gpt-4o-mini",
			Limits: limits.Limits{RPM: 60, MaxRequest: 1_000, Monthly: 2_000}, // $0.001 a request, $0.002 a month
			Tokens: 100 + maxTokens,
			Worst:  price.Cost(100, maxTokens),
		}
		var t limits.Ticket
		gate.Admit(context.Background(), &a, now, &t)
		return &t
	}

	t := admit(1_000) // at worst $0.000615
	fmt.Println(t.Refusal == limits.Admitted, t.Requests.Remaining)
	cost := gate.Settle(t, usd.Tokens{Prompt: 100, Completion: 20}, price, now) // the upstream's usage
	fmt.Println("billed", cost)

	fmt.Println(admit(2_000).Refusal == limits.RefusedRequestCap) // $0.001215 > $0.001
	// Output:
	// true 59
	// billed 0.000027
	// true
}
