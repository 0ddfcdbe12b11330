package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// TestAdminListener: with admin.listen set, the admin routes answer only
// there and the public ones only on listen; pprof, when on, is an admin route.
func TestAdminListener(t *testing.T) {
	n := startFileNode(t, "admin: {listen: 127.0.0.1:0, pprof: true}\n"+reloadModels)
	k := n.key(t) // on the admin listener
	f := func(url, method, path, key string, want int) {
		t.Helper()
		if status, b := n.call(t, method, url+path, key, ""); status != want {
			t.Fatalf("%s %s on %s: %d, want %d: %.200s", method, path, url, status, want, b)
		}
	}
	pub, adm := n.url, n.adminURL
	f(pub, "POST", "/v1/keys", testAdminKey, 404)
	f(pub, "GET", "/v1/keys", testAdminKey, 404)
	f(pub, "GET", "/v1/plans", testAdminKey, 404)
	f(pub, "POST", "/admin/reload", testAdminKey, 404)
	f(pub, "GET", "/admin/upstreams", testAdminKey, 404)
	f(pub, "GET", "/debug/pprof/", "", 404)
	f(pub, "GET", "/dashboard", "", 404)
	f(pub, "GET", "/v1/models", k.Key, 200)
	f(pub, "GET", "/v1/keys/"+k.ID+"/usage", k.Key, 200)
	f(pub, "GET", "/healthz", "", 200)
	f(pub, "GET", "/readyz", "", 200)

	f(adm, "GET", "/v1/keys", testAdminKey, 200)
	f(adm, "GET", "/v1/plans", testAdminKey, 200)
	f(adm, "POST", "/admin/reload", testAdminKey, 200)
	f(adm, "POST", "/admin/reload", "", 401)
	f(adm, "GET", "/admin/upstreams", testAdminKey, 200)
	f(adm, "GET", "/admin/upstreams", k.Key, 403)
	f(adm, "GET", "/debug/pprof/cmdline", "", 200)
	f(adm, "GET", "/healthz", "", 200)
	f(adm, "GET", "/readyz", "", 200)
	f(adm, "POST", "/v1/chat/completions", k.Key, 404)
	f(adm, "GET", "/v1/models", k.Key, 404)
	if status, b := n.call(t, "GET", adm+"/debug/pprof/", "", ""); status != 200 || !strings.Contains(string(b), "goroutine") {
		t.Fatalf("pprof index: %d %.200s", status, b)
	}
}

// TestPprofIsOptIn: without admin.pprof there is no profiler; with it and no
// admin.listen, it is on the main listener.
func TestPprofIsOptIn(t *testing.T) {
	off := startFileNode(t, reloadModels)
	if status, _ := off.call(t, "GET", off.url+"/debug/pprof/", "", ""); status != 404 {
		t.Fatalf("pprof without admin.pprof: %d, want 404", status)
	}
	on := startFileNode(t, "admin: {pprof: true}\n"+reloadModels)
	if status, _ := on.call(t, "GET", on.url+"/debug/pprof/heap?debug=1", "", ""); status != 200 {
		t.Fatalf("pprof with admin.pprof: %d, want 200", status)
	}
	if status, _ := on.call(t, "GET", on.url+"/v1/keys", testAdminKey, ""); status != 200 {
		t.Fatalf("Keys API on the main listener without admin.listen: %d, want 200", status)
	}
}

// TestDashboardTrailingSlash: "/dashboard/" redirects to the page like
// "/dashboard", rather than the router's 404 for a trailing-slash variant.
func TestDashboardTrailingSlash(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/dashboard", "/dashboard/"} {
		resp, err := c.Get(g.url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/dashboard/keys" {
			t.Fatalf("%s: %d to %q", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
}
