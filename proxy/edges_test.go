package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// TestUsageAdminKeyOnlyOnAdminListener: with admin.listen set the admin side
// lives only there, so the public listener's usage endpoint refuses the admin
// key (as inference does: it is not a user key) while the key itself and the
// admin listener still work.
func TestUsageAdminKeyOnlyOnAdminListener(t *testing.T) {
	n := startFileNode(t, "admin: {listen: 127.0.0.1:0}\n"+reloadModels)
	k := n.key(t)
	f := func(url, key string, want int) {
		t.Helper()
		if status, b := n.call(t, "GET", url+"/v1/keys/"+k.ID+"/usage", key, ""); status != want {
			t.Fatalf("usage on %s: %d, want %d: %.200s", url, status, want, b)
		}
	}
	f(n.url, testAdminKey, http.StatusUnauthorized)
	f(n.url, k.Key, http.StatusOK)
	f(n.adminURL, testAdminKey, http.StatusOK)

	shared := startFileNode(t, reloadModels)
	k = shared.key(t)
	if status, b := shared.call(t, "GET", shared.url+"/v1/keys/"+k.ID+"/usage", testAdminKey, ""); status != http.StatusOK {
		t.Fatalf("usage with the admin key and no admin.listen: %d, want 200: %.200s", status, b)
	}
}

// TestMethodNotAllowedAllow: a 405 advertises only methods the path serves;
// OPTIONS is not one (it is itself a 405).
func TestMethodNotAllowedAllow(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	key := g.newKey("all").Key
	f := func(method, path, wantAllow string) {
		t.Helper()
		status, hdr, b := g.do(method, path, key, nil)
		wantErrorBody(t, status, hdr, b, http.StatusMethodNotAllowed, "method_not_allowed")
		if got := hdr.Get("Allow"); got != wantAllow {
			t.Fatalf("%s %s: Allow %q, want %q", method, path, got, wantAllow)
		}
	}
	// GET /v1/chat/completions lists stored chat completions (a 404 of its
	// own: TestStoredChatCompletionsAreUnsupported).
	f("GET", "/v1/embeddings", "POST")
	f("PUT", "/v1/chat/completions", "GET, POST")
	f("OPTIONS", "/v1/chat/completions", "GET, POST")
	f("DELETE", "/v1/models", "GET")
	if allow := func() string { _, h, _ := g.do("PUT", "/v1/keys/x", g.adminKey, nil); return h.Get("Allow") }(); strings.Contains(allow, "OPTIONS") {
		t.Fatalf("PUT /v1/keys/x: Allow %q advertises OPTIONS", allow)
	}
}
