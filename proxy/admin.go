package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/bytedance/sonic"
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/keys"
)

// The Keys and Plans APIs are the cold path: clarity over speed, plain structs
// and sonic.Marshal.

// admin wraps an admin handler with admin-key authentication. The key is
// compared as a SHA-256 digest in constant time, so timing reveals nothing.
func (s *Server) admin(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		token := bearerToken(ctx)
		if token == nil {
			writeError(ctx, errMissingKey, nil)
			return
		}
		if !s.isAdmin(token) {
			// A working user key gets a clearer answer than "incorrect key".
			if _, _, err := s.registry.Authenticate(s.callCtx(ctx), token); err == nil {
				writeError(ctx, errAdminOnly, nil)
				return
			}
			writeError(ctx, errUnknownKey, nil)
			return
		}
		h(ctx)
	}
}

// isAdmin reports whether token is the admin key, comparing SHA-256 digests
// in constant time so timing reveals nothing about the key.
func (s *Server) isAdmin(token []byte) bool {
	sum := sha256.Sum256(token)
	return subtle.ConstantTimeCompare(sum[:], s.adminHash[:]) == 1
}

// keyJSON is a key as the Keys API shows it: never the secret, except Key
// right after create and rotate.
type keyJSON struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Name      string `json:"name"`
	Plan      string `json:"plan"`
	Last4     string `json:"last4"`
	CreatedAt int64  `json:"created_at"`
	ExpiresAt *int64 `json:"expires_at"`
	RevokedAt *int64 `json:"revoked_at"`
	// RPM and TPM are the key's own lower limits; null when the plan's apply.
	RPM *int64 `json:"rpm"`
	TPM *int64 `json:"tpm"`
	Key string `json:"key,omitempty"`
}

func renderKey(k *keys.Key, secret string) keyJSON {
	return keyJSON{
		ID: k.ID, Object: "api_key", Name: k.Name, Plan: k.Plan, Last4: k.Last4,
		CreatedAt: k.CreatedAt.Unix(), ExpiresAt: unixOrNil(k.ExpiresAt), RevokedAt: unixOrNil(k.RevokedAt),
		RPM: positiveOrNil(k.RPM), TPM: positiveOrNil(k.TPM), Key: secret,
	}
}

func positiveOrNil(v int64) *int64 {
	if v <= 0 {
		return nil
	}
	return &v
}

func unixOrNil(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	u := t.Unix()
	return &u
}

type listJSON[T any] struct {
	Object string `json:"object"`
	Data   []T    `json:"data"`
}

type createKeyJSON struct {
	Name      string `json:"name"`
	Plan      string `json:"plan"`
	ExpiresAt *int64 `json:"expires_at"` // unix seconds
	ExpiresIn *int64 `json:"expires_in"` // seconds from now
	RPM       *int64 `json:"rpm"`        // lower than the plan's, or null
	TPM       *int64 `json:"tpm"`
}

// maxExpiresAt is the latest expiry a key may have, 9999-12-31T23:59:59Z in
// unix seconds: the last second the stores' RFC 3339 records can hold.
const maxExpiresAt = 253402300799

func (s *Server) createKey(ctx *fasthttp.RequestCtx) {
	var in createKeyJSON
	if !decodeBody(ctx, &in) {
		return
	}
	if !validKeyName(ctx, in.Name) {
		return
	}
	if in.Plan == "" {
		writeAdminError(ctx, fasthttp.StatusBadRequest, "missing_required_parameter", "plan", "plan is required: the name of a plan (GET /v1/plans lists them).")
		return
	}
	var expires time.Time
	now := time.Now()
	switch {
	case in.ExpiresAt != nil && in.ExpiresIn != nil:
		writeAdminError(ctx, fasthttp.StatusBadRequest, "invalid_value", "expires_at", "Give expires_at or expires_in, not both.")
		return
	case in.ExpiresAt != nil:
		if *in.ExpiresAt < 1 || *in.ExpiresAt > maxExpiresAt {
			writeAdminError(ctx, fasthttp.StatusBadRequest, "invalid_value", "expires_at",
				fmt.Sprintf("expires_at must be a unix time in seconds in the future, at most %d (9999-12-31T23:59:59Z).", maxExpiresAt))
			return
		}
		expires = time.Unix(*in.ExpiresAt, 0)
	case in.ExpiresIn != nil:
		// Whole seconds, so the expires_at the API shows is the exact expiry;
		// rounded up, so a key lives at least as long as asked. Computed in
		// seconds: a time.Duration overflows past 292 years and wrapped
		// 18446744074 s around to 1 s.
		maxIn := maxExpiresAt - now.Unix() - 1
		if *in.ExpiresIn < 1 || *in.ExpiresIn > maxIn {
			writeAdminError(ctx, fasthttp.StatusBadRequest, "invalid_value", "expires_in",
				fmt.Sprintf("expires_in must be from 1 to %d seconds (until 9999-12-31T23:59:59Z).", maxIn))
			return
		}
		expires = time.Unix(now.Unix()+*in.ExpiresIn, 0)
		if now.Nanosecond() > 0 {
			expires = expires.Add(time.Second)
		}
	}
	if !expires.IsZero() && !expires.After(now) {
		writeAdminError(ctx, fasthttp.StatusBadRequest, "invalid_value", "expires_at", "The expiry must be in the future.")
		return
	}
	spec := keys.KeySpec{Name: in.Name, Plan: in.Plan, ExpiresAt: expires}
	if in.RPM != nil {
		spec.RPM = *in.RPM
	}
	if in.TPM != nil {
		spec.TPM = *in.TPM
	}
	k, secret, err := s.registry.CreateKey(s.callCtx(ctx), spec)
	if err != nil {
		s.adminFailed(ctx, err)
		return
	}
	s.log.Info("key created", "key_id", k.ID, "plan", k.Plan)
	writeJSON(ctx, fasthttp.StatusCreated, renderKey(k, secret))
}

func (s *Server) listKeys(ctx *fasthttp.RequestCtx) {
	all, err := s.registry.Keys(s.callCtx(ctx))
	if err != nil {
		s.adminFailed(ctx, err)
		return
	}
	out := listJSON[keyJSON]{Object: "list", Data: make([]keyJSON, 0, len(all))}
	for _, k := range all {
		out.Data = append(out.Data, renderKey(k, ""))
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

func (s *Server) getKey(ctx *fasthttp.RequestCtx) {
	k, err := s.registry.Key(s.callCtx(ctx), pathValue(ctx, "id"))
	if err != nil {
		s.adminFailed(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, renderKey(k, ""))
}

type updateKeyJSON struct {
	Name *string `json:"name"`
	Plan *string `json:"plan"`
	RPM  *int64  `json:"rpm"` // 0 returns to the plan's
	TPM  *int64  `json:"tpm"`
}

func (s *Server) updateKey(ctx *fasthttp.RequestCtx) {
	var in updateKeyJSON
	if !decodeBody(ctx, &in) {
		return
	}
	if in.Name != nil && !validKeyName(ctx, *in.Name) {
		return
	}
	k, err := s.registry.UpdateKey(s.callCtx(ctx), pathValue(ctx, "id"), keys.KeyChanges{Name: in.Name, Plan: in.Plan, RPM: in.RPM, TPM: in.TPM})
	if err != nil {
		s.adminFailed(ctx, err)
		return
	}
	s.log.Info("key updated", "key_id", k.ID, "plan", k.Plan)
	writeJSON(ctx, fasthttp.StatusOK, renderKey(k, ""))
}

func (s *Server) revokeKey(ctx *fasthttp.RequestCtx) {
	k, err := s.registry.RevokeKey(s.callCtx(ctx), pathValue(ctx, "id"))
	if err != nil {
		s.adminFailed(ctx, err)
		return
	}
	s.log.Info("key revoked", "key_id", k.ID)
	writeJSON(ctx, fasthttp.StatusOK, renderKey(k, ""))
}

func (s *Server) rotateKey(ctx *fasthttp.RequestCtx) {
	k, secret, err := s.registry.RotateKey(s.callCtx(ctx), pathValue(ctx, "id"))
	if err != nil {
		s.adminFailed(ctx, err)
		return
	}
	s.log.Info("key rotated", "key_id", k.ID)
	writeJSON(ctx, fasthttp.StatusOK, renderKey(k, secret))
}

// planJSON is a plan as the Plans API shows and takes it.
type planJSON struct {
	Name          string    `json:"name"`
	Object        string    `json:"object"`
	Models        []string  `json:"models"`
	RPM           int64     `json:"rpm"`
	TPM           int64     `json:"tpm"`
	MaxRequestUSD usd.Micro `json:"max_request_usd"`
	MonthlyUSD    usd.Micro `json:"monthly_usd"`
}

func renderPlan(p *keys.Plan) planJSON {
	models := p.Models
	if models == nil {
		models = []string{}
	}
	return planJSON{Name: p.Name, Object: "plan", Models: models, RPM: p.RPM, TPM: p.TPM,
		MaxRequestUSD: p.MaxRequestUSD, MonthlyUSD: p.MonthlyUSD}
}

func (s *Server) listPlans(ctx *fasthttp.RequestCtx) {
	all, err := s.registry.Plans(s.callCtx(ctx))
	if err != nil {
		s.adminFailed(ctx, err)
		return
	}
	out := listJSON[planJSON]{Object: "list", Data: make([]planJSON, 0, len(all))}
	for _, p := range all {
		out.Data = append(out.Data, renderPlan(p))
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

func (s *Server) getPlan(ctx *fasthttp.RequestCtx) {
	p, err := s.registry.Plan(s.callCtx(ctx), pathValue(ctx, "name"))
	if err != nil {
		s.adminFailed(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, renderPlan(p))
}

func (s *Server) putPlan(ctx *fasthttp.RequestCtx) {
	var in planJSON
	if !decodeBody(ctx, &in) {
		return
	}
	name := pathValue(ctx, "name")
	if in.Name != "" && in.Name != name {
		writeAdminError(ctx, fasthttp.StatusBadRequest, "invalid_value", "name", "The plan name in the body differs from the one in the URL.")
		return
	}
	p := &keys.Plan{Name: name, Models: in.Models, RPM: in.RPM, TPM: in.TPM,
		MaxRequestUSD: in.MaxRequestUSD, MonthlyUSD: in.MonthlyUSD}
	if err := s.registry.PutPlan(s.callCtx(ctx), p); err != nil {
		s.adminFailed(ctx, err)
		return
	}
	s.log.Info("plan saved", "plan", p.Name)
	writeJSON(ctx, fasthttp.StatusOK, renderPlan(p))
}

func (s *Server) deletePlan(ctx *fasthttp.RequestCtx) {
	name := pathValue(ctx, "name")
	if err := s.registry.DeletePlan(s.callCtx(ctx), name); err != nil {
		s.adminFailed(ctx, err)
		return
	}
	s.log.Info("plan deleted", "plan", name)
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"name": name, "object": "plan", "deleted": true})
}

// adminFailed maps registry errors to answers: the one place where admin
// failures become HTTP statuses.
func (s *Server) adminFailed(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, keys.ErrNotFound):
		writeAdminError(ctx, fasthttp.StatusNotFound, "not_found", "", "No such "+resourceName(ctx)+": "+err.Error())
	case errors.Is(err, keys.ErrPlanNotFound):
		writeAdminError(ctx, fasthttp.StatusBadRequest, "plan_not_found", "plan", "No such plan; create it first with PUT /v1/plans/{name}.")
	case errors.Is(err, keys.ErrRevoked):
		writeAdminError(ctx, fasthttp.StatusConflict, "key_revoked", "", "The key is revoked; a revoked key cannot be rotated. Create a new key.")
	case errors.Is(err, keys.ErrPlanInUse):
		writeAdminError(ctx, fasthttp.StatusConflict, "plan_in_use", "", "Active keys use this plan; move them to another plan or revoke them first.")
	case errors.Is(err, keys.ErrConflict):
		writeAdminError(ctx, fasthttp.StatusConflict, "conflict", "", "The "+resourceName(ctx)+" kept changing under concurrent writes; read it again and retry.")
	case errors.Is(err, keys.ErrInvalidKey):
		writeAdminError(ctx, fasthttp.StatusBadRequest, "invalid_value", "", err.Error())
	case errors.Is(err, keys.ErrInvalidPlan):
		writeAdminError(ctx, fasthttp.StatusBadRequest, "invalid_plan", "", err.Error())
	default:
		s.log.Error("admin request failed", "path", string(ctx.Path()), "err", err)
		writeError(ctx, errStoreDown, nil)
	}
}

func resourceName(ctx *fasthttp.RequestCtx) string {
	if ctx.UserValue("name") != nil {
		return "plan"
	}
	return "key"
}

func validKeyName(ctx *fasthttp.RequestCtx, name string) bool {
	if len(name) > 256 {
		writeAdminError(ctx, fasthttp.StatusBadRequest, "invalid_value", "name", "name must be at most 256 bytes.")
		return false
	}
	return true
}

func pathValue(ctx *fasthttp.RequestCtx, name string) string {
	v, _ := ctx.UserValue(name).(string)
	return v
}

// decodeBody decodes the JSON body into v, answering 400 when it cannot.
func decodeBody(ctx *fasthttp.RequestCtx, v any) bool {
	body := ctx.PostBody()
	if len(body) == 0 {
		body = []byte("{}")
	}
	if !sonic.Valid(body) {
		writeError(ctx, errMalformedJSON, nil)
		return false
	}
	if err := sonic.Unmarshal(body, v); err != nil {
		writeAdminError(ctx, fasthttp.StatusBadRequest, "invalid_value", "", "The request body has a field of the wrong type: "+err.Error())
		return false
	}
	return true
}

func writeAdminError(ctx *fasthttp.RequestCtx, status int, code, param, message string) {
	writeError(ctx, &apiError{status: status, typ: typeInvalidRequest, code: code, param: param, message: message}, nil)
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := sonic.Marshal(v)
	if err != nil {
		writeError(ctx, errInternal, nil)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(b)
}
