package proxy

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// TestKeysAPIExpiryRange creates keys with expiries at and past the edges of
// what can be represented: out-of-range input is 400 invalid_value naming the
// allowed range, never a 201 with a wrapped-around expiry nor a 503.
func TestKeysAPIExpiryRange(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	const maxUnix = 253402300799 // 9999-12-31T23:59:59Z
	f := func(body string, wantStatus int, wantParam, wantMessage string, wantExpiry func(now int64, got int64) bool) {
		t.Helper()
		now := time.Now().Unix()
		status, _, raw := g.do("POST", "/v1/keys", g.adminKey, []byte(body))
		if status != wantStatus {
			t.Fatalf("POST /v1/keys %s: status %d, want %d: %s", body, status, wantStatus, raw)
		}
		if wantStatus != http.StatusCreated {
			var e struct {
				Error struct{ Message, Type, Param, Code string }
			}
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			if e.Error.Code != "invalid_value" || e.Error.Param != wantParam || !strings.Contains(e.Error.Message, wantMessage) {
				t.Fatalf("POST /v1/keys %s: error %+v, want invalid_value on %s saying %q", body, e.Error, wantParam, wantMessage)
			}
			return
		}
		var k apiKey
		if err := json.Unmarshal(raw, &k); err != nil {
			t.Fatal(err)
		}
		if k.ExpiresAt == nil || !wantExpiry(now, *k.ExpiresAt) {
			t.Fatalf("POST /v1/keys %s: expires_at %v (now %d)", body, k.ExpiresAt, now)
		}
	}
	in := func(secs int64) func(int64, int64) bool {
		return func(now, got int64) bool { return got >= now+secs && got <= now+secs+2 }
	}
	at := func(unix int64) func(int64, int64) bool { return func(_, got int64) bool { return got == unix } }
	const key = `{"name":"k","plan":"all",`

	f(key+`"expires_in":60}`, 201, "", "", in(60))
	f(key+`"expires_in":31536000000}`, 201, "", "", in(31536000000)) // 1,000 years
	f(key+`"expires_at":253402300799}`, 201, "", "", at(maxUnix))
	f(key+`"expires_in":0}`, 400, "expires_in", "from 1 to", nil)
	f(key+`"expires_in":-5}`, 400, "expires_in", "from 1 to", nil)
	f(key+`"expires_in":18446744074}`, 201, "", "", in(18446744074)) // 584 years: wrapped to 1 s before
	f(key+`"expires_in":253402300799}`, 400, "expires_in", "from 1 to", nil)
	f(key+`"expires_in":9223372036854775807}`, 400, "expires_in", "from 1 to", nil)
	f(key+`"expires_at":253402300800}`, 400, "expires_at", "253402300799", nil) // was 503
	f(key+`"expires_at":-9223372036854775808}`, 400, "expires_at", "253402300799", nil)
	f(key+`"expires_at":1}`, 400, "expires_at", "in the future", nil)
}
