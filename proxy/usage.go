package proxy

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/keys"
)

// usageJSON is a key's month to date as GET /v1/keys/{id}/usage shows it.
// Money is in dollars, exact (pico-dollar precision). cached_tokens and
// cache_write_tokens are the parts of prompt_tokens billed at the
// cached-input and cache-write prices, not on top.
type usageJSON struct {
	Object       string           `json:"object"`
	KeyID        string           `json:"key_id"`
	Month        string           `json:"month"`
	PeriodStart  int64            `json:"period_start"`
	PeriodEnd    int64            `json:"period_end"`
	Requests     int64            `json:"requests"`
	Prompt       int64            `json:"prompt_tokens"`
	Cached       int64            `json:"cached_tokens"`
	CacheWrite   int64            `json:"cache_write_tokens"`
	Completion   int64            `json:"completion_tokens"`
	SpendUSD     json.Number      `json:"spend_usd"`
	ReservedUSD  json.Number      `json:"reserved_usd"`
	MonthlyUSD   *json.Number     `json:"monthly_usd"`
	RemainingUSD *json.Number     `json:"remaining_usd"`
	Models       []modelUsageJSON `json:"models"`
}

type modelUsageJSON struct {
	Model      string      `json:"model"`
	Requests   int64       `json:"requests"`
	Prompt     int64       `json:"prompt_tokens"`
	Cached     int64       `json:"cached_tokens"`
	CacheWrite int64       `json:"cache_write_tokens"`
	Completion int64       `json:"completion_tokens"`
	SpendUSD   json.Number `json:"spend_usd"`
}

func dollarsJSON(p usd.Pico) json.Number { return json.Number(p.String()) }

// keyUsage answers GET /v1/keys/{id}/usage for the admin, or for the key
// itself (so an application can watch its own budget).
func (s *Server) keyUsage(ctx *fasthttp.RequestCtx) {
	id := pathValue(ctx, "id")
	token := bearerToken(ctx)
	if token == nil {
		writeError(ctx, errMissingKey, nil)
		return
	}
	// The key itself is authenticated, with its plan, from the cache; the
	// admin names any key, read from the store.
	var p *keys.Plan
	if s.isAdmin(token) {
		k, err := s.registry.Key(s.callCtx(ctx), id)
		if err != nil {
			s.adminFailed(ctx, err)
			return
		}
		p, _ = s.registry.Plan(s.callCtx(ctx), k.Plan) // without its plan the report has no cap
	} else {
		k, plan, err := s.registry.Authenticate(s.callCtx(ctx), token)
		if err != nil {
			writeError(ctx, authError(err), nil)
			return
		}
		if k.ID != id {
			writeError(ctx, errAdminOnly, nil)
			return
		}
		p = plan
	}
	r, err := s.gate.Usage(s.callCtx(ctx), id, time.Now())
	if err != nil {
		s.log.Error("usage report", "key_id", id, "err", err)
		writeError(ctx, errStoreDown, nil)
		return
	}
	u := r.Usage
	out := usageJSON{
		Object: "key.usage", KeyID: id, Month: r.Month.Start().Format("2006-01"),
		PeriodStart: r.Month.Start().Unix(), PeriodEnd: r.Month.End().Unix(),
		Requests: u.Requests, Prompt: u.PromptTokens, Cached: u.CachedTokens, CacheWrite: u.CacheWriteTokens, Completion: u.CompletionTokens,
		SpendUSD: dollarsJSON(u.Spent), ReservedUSD: dollarsJSON(r.Reserved), Models: []modelUsageJSON{},
	}
	if p != nil && p.MonthlyUSD > 0 {
		cap, left := dollarsJSON(p.MonthlyUSD.Pico()), dollarsJSON(max(p.MonthlyUSD.Pico()-u.Spent-r.Reserved, 0))
		out.MonthlyUSD, out.RemainingUSD = &cap, &left
	}
	for name, c := range u.Models {
		out.Models = append(out.Models, modelUsageJSON{Model: name, Requests: c.Requests,
			Prompt: c.PromptTokens, Cached: c.CachedTokens, CacheWrite: c.CacheWriteTokens, Completion: c.CompletionTokens,
			SpendUSD: dollarsJSON(c.Spent)})
	}
	slices.SortFunc(out.Models, func(a, b modelUsageJSON) int { return strings.Compare(a.Model, b.Model) })
	writeJSON(ctx, fasthttp.StatusOK, out)
}
