package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/valyala/fasthttp"

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
