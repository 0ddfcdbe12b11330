package usd

// Pico is an amount of money in 10^-12 dollars. A token count times a price
// in micro-dollars per million tokens is exactly this unit, so costs are
// computed without rounding; int64 holds up to about 9.2 million dollars.
type Pico int64

// Pico converts m to pico-dollars.
func (m Micro) Pico() Pico { return Pico(m) * 1_000_000 }

// AppendUSD appends p in dollars, rounded up to the micro-dollar (a cap is
// never shown lower than it is).
func (p Pico) AppendUSD(b []byte) []byte {
	micro := (p + 999_999) / 1_000_000
	return Micro(micro).AppendText(b)
}

// String formats p in dollars, exactly.
func (p Pico) String() string {
	var b [32]byte
	return string(appendDecimal(b[:0], int64(p), 12))
}

// Price is what a model costs per million tokens.
type Price struct {
	InputPerMTok Micro
	// CachedInputPerMTok is the price of prompt tokens the provider read
	// from its prompt cache. It is not bounded by InputPerMTok. A model
	// without a cached price charges its input price for them: whoever
	// builds a Price from config sets this to InputPerMTok then (the zero
	// value would make cached tokens free).
	CachedInputPerMTok Micro
	// CacheWritePerMTok is the price of prompt tokens the provider wrote to
	// its prompt cache (Anthropic's cache_creation_input_tokens). Like the
	// cached price, whoever builds a Price from config defaults it to
	// InputPerMTok.
	CacheWritePerMTok Micro
	OutputPerMTok     Micro
}

// Tokens is what a request used, as its upstream reports it. Cached is the
// part of Prompt the provider served from its prompt cache, CacheWrite the
// part it wrote to it: OpenAI-shaped usage counts cached tokens inside
// prompt_tokens (chat, completions) and input_tokens (responses), never on
// top, and Anthropic's three input counts (input, cache read, cache
// creation) are summed into Prompt the same way. A plain value, passed by
// value.
type Tokens struct {
	Prompt, Cached, CacheWrite, Completion int64
}

// Clamped returns t with Cached and CacheWrite non-negative and together
// within Prompt (CacheWrite yields first), and reports whether it had to
// clamp: an upstream that reports more cache tokens than prompt tokens is
// wrong, and is billed no cache token that is not a prompt token.
func (t Tokens) Clamped() (Tokens, bool) {
	clamped := false
	if t.Cached < 0 {
		t.Cached, clamped = 0, true
	}
	if t.CacheWrite < 0 {
		t.CacheWrite, clamped = 0, true
	}
	prompt := max(t.Prompt, 0)
	if t.Cached > prompt {
		t.Cached, clamped = prompt, true
	}
	if t.CacheWrite > prompt-t.Cached {
		t.CacheWrite, clamped = prompt-t.Cached, true
	}
	return t, clamped
}

// Cost is the exact price of prompt input and completion output tokens,
// none of the prompt cached.
func (p Price) Cost(prompt, completion int64) Pico {
	return Pico(prompt)*Pico(p.InputPerMTok) + Pico(completion)*Pico(p.OutputPerMTok)
}

// Bill is the exact price of what a request used: the prompt neither read
// from nor written to the cache at the input price, cache reads at the
// cached price, cache writes at the cache-write price (both clamped to the
// prompt, see Tokens.Clamped) and the completion at the output price.
func (p Price) Bill(t Tokens) Pico {
	t, _ = t.Clamped()
	return Pico(t.Prompt-t.Cached-t.CacheWrite)*Pico(p.InputPerMTok) + Pico(t.Cached)*Pico(p.CachedInputPerMTok) +
		Pico(t.CacheWrite)*Pico(p.CacheWritePerMTok) + Pico(t.Completion)*Pico(p.OutputPerMTok)
}

// Bound is the most prompt and completion tokens can cost whatever part of
// the prompt the provider reads from or writes to its cache: every prompt
// token at the highest of the input, cached and cache-write prices (config
// orders none of them), so admission's worst case stays an upper bound of
// Bill.
func (p Price) Bound(prompt, completion int64) Pico {
	return Pico(prompt)*Pico(max(p.InputPerMTok, p.CachedInputPerMTok, p.CacheWritePerMTok)) + Pico(completion)*Pico(p.OutputPerMTok)
}
