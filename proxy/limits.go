package proxy

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/keys"
	"github.com/tokenhub/tokenhub/limits"
	"github.com/tokenhub/tokenhub/proxy/openai"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// admission fills a for the request and returns the prompt estimate and the
// most output the upstream can produce and bill for it. Its money worst case
// (Worst, Reserve) is an upper bound of what the upstream can bill for the
// body: the prompt at one token a byte (openai.BoundPrompt), at the higher
// of the input and cached-input prices (usd.Price.Bound), and as output
// max_tokens (else the model's maximum, or the legacy default) for every
// completion generated (openai.Request.OutputBound). A Responses API request
// that continues an earlier response or a conversation has its prompt bounded
// by the model's context window instead, or, without one, not at all.
// Embeddings produce no output: their inputs, arrays included, are prompt
// bytes. The tokens-per-minute charge keeps OpenAI's estimate. It answers
// 400 itself for a max_tokens over the model's limit, or under the
// endpoint's least (minMaxTokens).
func admission(ctx *fasthttp.RequestCtx, ep upstream.Endpoint, key *keys.Key, plan *keys.Plan, m *model, f *openai.Request, a *limits.Admission) (prompt, out int64, ok bool) {
	perChoice := f.MaxTokens
	switch {
	case ep == upstream.Embeddings:
		perChoice = 0
	case perChoice > m.maxOutput || (perChoice >= 0 && perChoice < minMaxTokens(ep)):
		var b [20]byte
		writeIntFieldError(ctx, errMaxTokens, f.MaxTokensParam, strconv.AppendInt(b[:0], perChoice, 10),
			minMaxTokens(ep), m.maxOutput, maxOutputNote)
		return 0, 0, false
	case perChoice < 0 && ep == upstream.Completions:
		perChoice = min(openai.LegacyDefaultMaxTokens, m.maxOutput)
	case perChoice < 0:
		perChoice = m.maxOutput
	}
	legacy := ep == upstream.Completions
	completions := f.Completions(legacy)
	bodyLen := len(ctx.PostBody())
	promptBound := min(openai.BoundPrompt(bodyLen), openai.MaxBoundTokens)
	if f.Chained {
		// The upstream prepends an earlier response or a conversation, which
		// the body does not bound: the model's context window does, when it
		// is configured. Else nothing the gateway knows does, and the prompt
		// is bounded at the most its arithmetic takes (openai.MaxBoundTokens),
		// which a budget cap refuses unless it covers that many tokens of
		// the model; keys without caps are served.
		promptBound = openai.MaxBoundTokens
		if m.contextWindow > 0 {
			promptBound = m.contextWindow
		}
	}
	out = f.OutputBound(bodyLen, perChoice, legacy)
	prompt = openai.EstimatePrompt(bodyLen)
	*a = limits.Admission{
		KeyID: key.ID,
		Model: m.name,
		Limits: limits.Limits{
			RPM: keys.Limit(plan.RPM, key.RPM), TPM: keys.Limit(plan.TPM, key.TPM),
			MaxRequest: plan.MaxRequestUSD, Monthly: plan.MonthlyUSD,
		},
		Tokens: prompt + openai.MulBounded(perChoice, completions),
		Worst:  m.price.Bound(promptBound, out),
	}
	if f.Stream && f.MaxTokens < 0 && ep != upstream.Embeddings {
		// An open-ended stream reserves a step of output and extends its
		// reservation as it produces (streamRelay.covered), so it holds no
		// more of the monthly budget than it is using. The per-request cap
		// still weighs its worst case.
		a.Reserve = m.price.Bound(promptBound, min(out, openai.MulBounded(streamReserveTokens, completions)))
	}
	return prompt, out, true
}

// minMaxTokens is the least max_tokens (or max_completion_tokens) ep takes:
// 0 on the legacy completions, where the spec allows it (with echo and
// logprobs it scores a prompt without generating), 1 on chat, as OpenAI
// refuses 0 there.
func minMaxTokens(ep upstream.Endpoint) int64 {
	if ep == upstream.Chat || ep.IsResponses() {
		return 1
	}
	return 0
}

// maxOutputNote says where a max_tokens maximum comes from.
const maxOutputNote = " (the model's max_output_tokens)"

// streamReserveTokens is the output a stream reserves against the monthly
// budget at a time, per choice, when it did not set max_tokens.
const streamReserveTokens = 1024

var (
	headerLimitRequests     = []byte("x-ratelimit-limit-requests")
	headerRemainingRequests = []byte("x-ratelimit-remaining-requests")
	headerResetRequests     = []byte("x-ratelimit-reset-requests")
	headerLimitTokens       = []byte("x-ratelimit-limit-tokens")
	headerRemainingTokens   = []byte("x-ratelimit-remaining-tokens")
	headerResetTokens       = []byte("x-ratelimit-reset-tokens")
	headerRetryAfter        = []byte("retry-after")
	headerRetryAfterMs      = []byte("retry-after-ms")
)

// setRateHeaders writes the x-ratelimit-* headers of the buckets the key has.
func setRateHeaders(ctx *fasthttp.RequestCtx, t *limits.Ticket) {
	setRateState(ctx, &t.Requests, headerLimitRequests, headerRemainingRequests, headerResetRequests)
	setRateState(ctx, &t.Tokens, headerLimitTokens, headerRemainingTokens, headerResetTokens)
}

func setRateState(ctx *fasthttp.RequestCtx, s *limits.RateState, limit, remaining, reset []byte) {
	if s.Limit == 0 {
		return
	}
	var b [24]byte
	h := &ctx.Response.Header
	h.SetCanonical(limit, strconv.AppendInt(b[:0], s.Limit, 10))
	h.SetCanonical(remaining, strconv.AppendInt(b[:0], s.Remaining, 10))
	h.SetCanonical(reset, limits.AppendDuration(b[:0], s.Reset))
}

var (
	errRateRequests = &apiError{status: fasthttp.StatusTooManyRequests, typ: "requests", code: "rate_limit_exceeded",
		message: "Rate limit reached for requests per minute"}
	errRateTokens = &apiError{status: fasthttp.StatusTooManyRequests, typ: "tokens", code: "rate_limit_exceeded",
		message: "Rate limit reached for tokens per minute"}
	errRequestCap = &apiError{status: fasthttp.StatusPaymentRequired, typ: "insufficient_quota", code: "budget_exceeded",
		message: "This request could cost more than the plan's per-request cap"}
	errMonthlyCap = &apiError{status: fasthttp.StatusPaymentRequired, typ: "insufficient_quota", code: "budget_exceeded",
		message: "The monthly budget is used up"}
)

// refuse answers a request the gate did not admit: 429 with the wait in
// retry-after (whole seconds, at least 1) and retry-after-ms, which the
// official SDKs honour; 402 with no retry headers (they do not retry it) and
// a message naming the cap and when it resets.
func refuse(ctx *fasthttp.RequestCtx, t *limits.Ticket) {
	var b [160]byte
	d := b[:0]
	switch t.Refusal {
	case limits.RefusedRequests, limits.RefusedTokens:
		e, limit := errRateRequests, t.Requests.Limit
		if t.Refusal == limits.RefusedTokens {
			e, limit = errRateTokens, t.Tokens.Limit
		}
		d = append(d, " (limit "...)
		d = strconv.AppendInt(d, limit, 10)
		d = append(d, "). Please try again in "...)
		d = limits.AppendDuration(d, t.RetryAfter)
		d = append(d, '.')
		writeError(ctx, e, d)
		ms := (t.RetryAfter + time.Millisecond - 1) / time.Millisecond
		secs := max((t.RetryAfter+time.Second-1)/time.Second, 1)
		var n [20]byte
		ctx.Response.Header.SetCanonical(headerRetryAfter, strconv.AppendInt(n[:0], int64(secs), 10))
		ctx.Response.Header.SetCanonical(headerRetryAfterMs, strconv.AppendInt(n[:0], int64(ms), 10))
	case limits.RefusedRequestCap:
		d = append(d, " of $"...)
		d = t.Cap.AppendUSD(d)
		d = append(d, ": at worst it costs $"...)
		d = t.Spent.AppendUSD(d)
		d = append(d, ". Lower max_tokens or shorten the prompt."...)
		writeError(ctx, errRequestCap, d)
	case limits.RefusedMonthlyCap:
		d = append(d, ": $"...)
		d = t.Spent.AppendUSD(d)
		d = append(d, " of $"...)
		d = t.Cap.AppendUSD(d)
		d = append(d, " is spent or reserved this month. It resets at "...)
		d = t.Month.End().AppendFormat(d, time.RFC3339)
		d = append(d, '.')
		writeError(ctx, errMonthlyCap, d)
	default:
		writeError(ctx, errStoreDown, nil)
	}
}
