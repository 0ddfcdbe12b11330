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
	OutputPerMTok      Micro
}

// Tokens is what a request used, as its upstream reports it. Cached is the
// part of Prompt the provider served from its prompt cache: OpenAI-shaped
// usage counts cached tokens inside prompt_tokens (chat, completions) and
// input_tokens (responses), never on top. A plain value, passed by value.
type Tokens struct {
	Prompt, Cached, Completion int64
}

// Clamped returns t with Cached within [0, Prompt], and reports whether it
// had to clamp: an upstream that reports more cached tokens than prompt
// tokens is wrong, and is billed no cached token that is not a prompt token.
func (t Tokens) Clamped() (Tokens, bool) {
	switch {
	case t.Cached > t.Prompt:
		t.Cached = max(t.Prompt, 0)
		return t, true
	case t.Cached < 0:
		t.Cached = 0
		return t, true
	}
	return t, false
}

// Cost is the exact price of prompt input and completion output tokens,
// none of the prompt cached.
func (p Price) Cost(prompt, completion int64) Pico {
	return Pico(prompt)*Pico(p.InputPerMTok) + Pico(completion)*Pico(p.OutputPerMTok)
}

// Bill is the exact price of what a request used: its uncached prompt at
// the input price, its cached prompt at the cached price (Cached clamped
// to the prompt, see Tokens.Clamped) and its completion at the output price.
func (p Price) Bill(t Tokens) Pico {
	t, _ = t.Clamped()
	return Pico(t.Prompt-t.Cached)*Pico(p.InputPerMTok) + Pico(t.Cached)*Pico(p.CachedInputPerMTok) +
		Pico(t.Completion)*Pico(p.OutputPerMTok)
}

// Bound is the most prompt and completion tokens can cost whatever part of
// the prompt the provider finds cached: every prompt token at the higher of
// the input and cached prices (config does not require the cached one to be
// the lower), so admission's worst case stays an upper bound of Bill.
func (p Price) Bound(prompt, completion int64) Pico {
	return Pico(prompt)*Pico(max(p.InputPerMTok, p.CachedInputPerMTok)) + Pico(completion)*Pico(p.OutputPerMTok)
}
