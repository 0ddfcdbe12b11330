package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/keys"
)

// TestAdminFailedStatuses: each registry sentinel becomes one status and
// code. A write that keeps losing its compare-and-set is the client's to
// retry (409 conflict), not a store outage (503).
func TestAdminFailedStatuses(t *testing.T) {
	s := &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f := func(err error, wantStatus int, wantCode string) {
		t.Helper()
		var ctx fasthttp.RequestCtx
		s.adminFailed(&ctx, fmt.Errorf("keys: key k: gave up: %w", err))
		if got := ctx.Response.StatusCode(); got != wantStatus {
			t.Fatalf("adminFailed(%v): status %d, want %d", err, got, wantStatus)
		}
		var body struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(ctx.Response.Body(), &body); err != nil {
			t.Fatalf("adminFailed(%v): body %q: %v", err, ctx.Response.Body(), err)
		}
		if body.Error.Code != wantCode {
			t.Fatalf("adminFailed(%v): code %q, want %q (%s)", err, body.Error.Code, wantCode, body.Error.Message)
		}
	}
	f(keys.ErrConflict, fasthttp.StatusConflict, "conflict")
	f(keys.ErrPlanInUse, fasthttp.StatusConflict, "plan_in_use")
	f(keys.ErrPlanNotFound, fasthttp.StatusBadRequest, "plan_not_found")
	f(keys.ErrRevoked, fasthttp.StatusConflict, "key_revoked")
	f(keys.ErrUnavailable, fasthttp.StatusServiceUnavailable, errStoreDown.code)
}

// TestOpenNodeFailedBoltLeavesNoStore: a store that failed to open is not
// kept, so Close does not run on a typed nil inside the Store interface.
func TestOpenNodeFailedBoltLeavesNoStore(t *testing.T) {
	dir := t.TempDir()
	notADir := filepath.Join(dir, "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte("admin_key: "+testAdminKey+"\nlog: {level: error}\nstore: {path: "+notADir+"}\n"+yamlModels(deadURL(t))),
		"test.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	n, err := OpenNode(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		n.Close()
		t.Fatal("OpenNode on a store path that is a file succeeded")
	}
	if n != nil && n.store != nil {
		t.Fatalf("OpenNode failed (%v) but kept store %#v", err, n.store)
	}
}
