package openai

// LegacyDefaultMaxTokens is what /v1/completions produces when max_tokens is
// absent, per OpenAI's API.
const LegacyDefaultMaxTokens = 16

// EstimatePrompt estimates a request's prompt tokens from its body size, as
// OpenAI's own rate limiter does: about four bytes a token, plus a margin for
// the template tokens chat formats add. The gateway charges it to the
// tokens-per-minute bucket at admission (replaced by the upstream's count at
// settlement), and bills it when an upstream reports no usage.
func EstimatePrompt(bodyLen int) int64 { return int64(bodyLen+3)/4 + 8 }

// BoundPrompt bounds, for money, the prompt tokens a body can hold: one a
// byte, plus a margin for the template tokens a chat format adds around
// short messages. Four bytes a token is no bound: an array of token ids
// takes two bytes a token ("1,"), and byte-level BPE can take one a byte.
// What is left out: an image or audio reference (a URL, a file id) costs the
// upstream's per-image or per-second tokens, which its bytes do not bound.
func BoundPrompt(bodyLen int) int64 { return int64(bodyLen) + promptMarginTokens }

const promptMarginTokens = 64

// MaxBoundTokens keeps worst-case arithmetic far from overflow: with prices
// at most limits.MaxPricePerMTok, a cost of this many prompt and completion
// tokens fits an int64. A request bounded above it (a million prompts of the
// largest output, say) is bounded at it, which is over $4,000 at $1 a million:
// refused by any smaller cap.
const MaxBoundTokens = 1 << 32

// MulBounded is a*b for non-negative counts, at most MaxBoundTokens.
func MulBounded(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > MaxBoundTokens/b {
		return MaxBoundTokens
	}
	return min(a*b, MaxBoundTokens)
}

// Completions is how many completions the upstream generates, and bills, for
// f, at most MaxBoundTokens: n for a chat completion; for a legacy completion
// (legacy) best_of, at least n, per prompt. best_of is the legacy parameter,
// but an upstream that takes it on chat (vLLM has) generates that many too:
// bounding it costs honest chat requests nothing.
func (f *Request) Completions(legacy bool) int64 {
	perPrompt := max(f.N, f.BestOf)
	if !legacy {
		return perPrompt
	}
	return MulBounded(f.Prompts, perPrompt)
}

// OutputBound bounds the output tokens the upstream can produce, and bill,
// for f, a body of bodyLen bytes, when each completion is at most perChoice
// tokens: perChoice for every completion, plus, for a legacy completion with
// echo, the prompt (BoundPrompt) again for each completion of a prompt. It is
// at most MaxBoundTokens.
func (f *Request) OutputBound(bodyLen int, perChoice int64, legacy bool) int64 {
	out := MulBounded(perChoice, f.Completions(legacy))
	if f.Echo && legacy {
		out = min(out+MulBounded(BoundPrompt(bodyLen), max(f.N, f.BestOf)), MaxBoundTokens)
	}
	return out
}
