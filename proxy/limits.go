package proxy

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/keys"
	"github.com/tokenhub/tokenhub/limits"
	"github.com/tokenhub/tokenhub/proxy/openai"
)

// legacyCompletionsMaxTokens is what /v1/completions produces when max_tokens
// is absent, per OpenAI's API.
const legacyCompletionsMaxTokens = 16

// estimatePrompt estimates a request's prompt tokens from its body size, as
// OpenAI's own rate limiter does: about four bytes a token, plus a margin for
// the template tokens chat formats add. It is what the tokens-per-minute
// bucket is charged at admission (replaced by the upstream's count at
// settlement), and what is billed when an upstream reports no usage.
func estimatePrompt(bodyLen int) int64 { return int64(bodyLen+3)/4 + 8 }

// boundPrompt bounds, for money, the prompt tokens a body can hold: one a
// byte, plus a margin for the template tokens a chat format adds around
// short messages. Four bytes a token is no bound: an array of token ids
// takes two bytes a token ("1,"), and byte-level BPE can take one a byte.
// What is left out: an image or audio reference (a URL, a file id) costs the
// upstream's per-image or per-second tokens, which its bytes do not bound.
func boundPrompt(bodyLen int) int64 { return int64(bodyLen) + promptMarginTokens }

const promptMarginTokens = 64

// maxBoundTokens keeps worst-case arithmetic far from overflow: with prices
// at most limits.MaxPricePerMTok, a cost of this many prompt and completion
// tokens fits an int64. A request bounded above it (a million prompts of the
// largest output, say) is bounded at it, which is over $4,000 at $1 a million:
// refused by any smaller cap.
const maxBoundTokens = 1 << 32

// mulBounded is a*b for non-negative counts, at most maxBoundTokens.
func mulBounded(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > maxBoundTokens/b {
		return maxBoundTokens
	}
	return min(a*b, maxBoundTokens)
}

// admission fills a for the request and returns the prompt estimate and the
// most output the upstream can produce and bill for it. Its money worst case
// (Worst, Reserve) is an upper bound of what the upstream can bill for the
// body: the prompt at one token a byte (boundPrompt), and as output max_tokens
// (else the model's maximum, or the legacy default) for every completion
// generated: n per request for chat; for legacy completions best_of (at least
// n) per prompt, plus each prompt again per completion when echo returns it.
// Embeddings produce no output: their inputs, arrays included, are prompt
// bytes. The tokens-per-minute charge keeps OpenAI's estimate. It answers
// 400 itself for a max_tokens over the model's limit.
func admission(ctx *fasthttp.RequestCtx, ep endpoint, key *keys.Key, plan *keys.Plan, m *model, f *openai.Request, a *limits.Admission) (prompt, out int64, ok bool) {
	perChoice := f.MaxTokens
	switch {
	case ep == epEmbeddings:
		perChoice = 0
	case perChoice > m.maxOutput:
		var b [20]byte
		writeError(ctx, errMaxTokensTooLarge, strconv.AppendInt(b[:0], m.maxOutput, 10))
		return 0, 0, false
	case perChoice < 0 && ep == epCompletions:
		perChoice = min(legacyCompletionsMaxTokens, m.maxOutput)
	case perChoice < 0:
		perChoice = m.maxOutput
	}
	// best_of is the legacy parameter, but an upstream that takes it on chat
	// (vLLM has) generates that many too: bounding it costs honest chat
	// requests nothing.
	perPrompt := max(f.N, f.BestOf)
	completions := perPrompt
	if ep == epCompletions {
		completions = mulBounded(f.Prompts, perPrompt)
	}
	bodyLen := len(ctx.PostBody())
	promptBound := boundPrompt(bodyLen)
	out = mulBounded(perChoice, completions)
	if f.Echo && ep == epCompletions {
		out = min(out+mulBounded(promptBound, perPrompt), maxBoundTokens)
	}
	prompt = estimatePrompt(bodyLen)
	*a = limits.Admission{
		KeyID: key.ID,
		Model: m.name,
		Limits: limits.Limits{
			RPM: keys.Limit(plan.RPM, key.RPM), TPM: keys.Limit(plan.TPM, key.TPM),
			MaxRequest: plan.MaxRequestUSD, Monthly: plan.MonthlyUSD,
		},
		Tokens: prompt + mulBounded(perChoice, completions),
		Worst:  m.price.Cost(min(promptBound, maxBoundTokens), out),
	}
	if f.Stream && f.MaxTokens < 0 && ep != epEmbeddings {
		// An open-ended stream reserves a step of output and extends its
		// reservation as it produces (streamRelay.covered), so it holds no
		// more of the monthly budget than it is using. The per-request cap
		// still weighs its worst case.
		a.Reserve = m.price.Cost(min(promptBound, maxBoundTokens), min(out, mulBounded(streamReserveTokens, completions)))
	}
	return prompt, out, true
}

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
