package proxy

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/internal/mock"
)

func TestKeysLifecycle(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	ctx := context.Background()
	works := func(secret string) error {
		_, err := g.client(secret).Chat.Completions.New(ctx, chatParams("mock", "hi"))
		return err
	}

	k := g.newKey("mockonly")
	if k.Object != "api_key" || k.Plan != "mockonly" || k.Last4 != k.Key[len(k.Key)-4:] || k.RevokedAt != nil || k.ExpiresAt != nil {
		t.Fatalf("created %+v", k)
	}
	if err := works(k.Key); err != nil {
		t.Fatal(err)
	}

	var list struct {
		Object string   `json:"object"`
		Data   []apiKey `json:"data"`
	}
	g.admin("GET", "/v1/keys", nil, http.StatusOK, &list)
	if list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != k.ID || list.Data[0].Key != "" {
		t.Fatalf("list %+v", list)
	}
	_, _, raw := g.do("GET", "/v1/keys", g.adminKey, nil)
	if strings.Contains(string(raw), k.Key) {
		t.Fatal("key list leaks the secret")
	}

	var got apiKey
	g.admin("PATCH", "/v1/keys/"+k.ID, map[string]any{"name": "renamed", "plan": "all"}, http.StatusOK, &got)
	if got.Name != "renamed" || got.Plan != "all" || got.Key != "" {
		t.Fatalf("patched %+v", got)
	}
	// The plan change takes effect at once: "other" is only in plan all.
	if _, err := g.client(k.Key).Chat.Completions.New(ctx, chatParams("other", "hi")); err != nil {
		t.Fatalf("after moving to plan all: %v", err)
	}
	g.admin("PATCH", "/v1/keys/"+k.ID, map[string]any{"plan": "no-such-plan"}, http.StatusBadRequest, nil)

	var rotated apiKey
	g.admin("POST", "/v1/keys/"+k.ID+"/rotate", nil, http.StatusOK, &rotated)
	if rotated.ID != k.ID || rotated.Key == "" || rotated.Key == k.Key {
		t.Fatalf("rotated %+v", rotated)
	}
	wantAPIError(t, works(k.Key), 401, "invalid_request_error", "invalid_api_key")
	if err := works(rotated.Key); err != nil {
		t.Fatalf("rotated key: %v", err)
	}

	var revoked apiKey
	g.admin("DELETE", "/v1/keys/"+k.ID, nil, http.StatusOK, &revoked)
	if revoked.RevokedAt == nil {
		t.Fatalf("revoked %+v", revoked)
	}
	wantAPIError(t, works(rotated.Key), 401, "invalid_request_error", "invalid_api_key")
	var again apiKey
	g.admin("DELETE", "/v1/keys/"+k.ID, nil, http.StatusOK, &again)
	if *again.RevokedAt != *revoked.RevokedAt {
		t.Fatal("revoking twice moved the revocation time")
	}
	g.admin("POST", "/v1/keys/"+k.ID+"/rotate", nil, http.StatusConflict, nil)
	g.admin("GET", "/v1/keys/"+k.ID, nil, http.StatusOK, &got)
	if got.RevokedAt == nil {
		t.Fatal("revoked key's record lost its revocation")
	}

	g.admin("GET", "/v1/keys/key_doesnotexist", nil, http.StatusNotFound, nil)
	g.admin("POST", "/v1/keys", map[string]any{"name": "x"}, http.StatusBadRequest, nil)
	g.admin("POST", "/v1/keys", map[string]any{"name": "x", "plan": "no-such-plan"}, http.StatusBadRequest, nil)
	g.admin("POST", "/v1/keys", map[string]any{"name": "x", "plan": "all", "expires_at": 1}, http.StatusBadRequest, nil)
	g.admin("POST", "/v1/keys", map[string]any{"name": 5, "plan": "all"}, http.StatusBadRequest, nil)
}

func TestPlansAPI(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	var p map[string]any
	g.admin("PUT", "/v1/plans/team", map[string]any{"models": []string{"mock", "alias*"}, "rpm": 100, "monthly_usd": 12.5}, http.StatusOK, &p)
	if p["monthly_usd"] != 12.5 || p["rpm"] != float64(100) {
		t.Fatalf("put plan %v", p)
	}
	g.admin("GET", "/v1/plans/team", nil, http.StatusOK, &p)
	var list struct{ Data []map[string]any }
	g.admin("GET", "/v1/plans", nil, http.StatusOK, &list)
	if len(list.Data) != 3 {
		t.Fatalf("plans %v", list.Data)
	}
	k := g.newKey("team")
	if _, err := g.client(k.Key).Chat.Completions.New(context.Background(), chatParams("other", "x")); err == nil {
		t.Fatal("plan team allowed model other")
	}
	g.admin("DELETE", "/v1/plans/team", nil, http.StatusConflict, nil)
	g.admin("DELETE", "/v1/keys/"+k.ID, nil, http.StatusOK, nil)
	g.admin("DELETE", "/v1/plans/team", nil, http.StatusOK, nil)
	g.admin("GET", "/v1/plans/team", nil, http.StatusNotFound, nil)
	g.admin("PUT", "/v1/plans/bad", map[string]any{"models": []string{""}}, http.StatusBadRequest, nil)
	g.admin("PUT", "/v1/plans/bad", map[string]any{"rpm": -1}, http.StatusBadRequest, nil)
	g.admin("PUT", "/v1/plans/x", map[string]any{"name": "y"}, http.StatusBadRequest, nil)
}

func TestRestartKeepsKeys(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	dir := t.TempDir()
	g := startGateway(t, yamlModels(up), dir)
	k := g.newKey("all")
	revoked := g.newKey("all")
	g.admin("DELETE", "/v1/keys/"+revoked.ID, nil, http.StatusOK, nil)
	g.stop()

	g2 := startGateway(t, yamlModels(up), dir)
	if _, err := g2.client(k.Key).Chat.Completions.New(context.Background(), chatParams("mock", "hi")); err != nil {
		t.Fatalf("key after restart: %v", err)
	}
	_, err := g2.client(revoked.Key).Chat.Completions.New(context.Background(), chatParams("mock", "hi"))
	wantAPIError(t, err, 401, "invalid_request_error", "invalid_api_key")
}
