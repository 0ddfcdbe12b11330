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
	InputPerMTok  Micro
	OutputPerMTok Micro
}

// Cost is the exact price of prompt input and completion output tokens.
func (p Price) Cost(prompt, completion int64) Pico {
	return Pico(prompt)*Pico(p.InputPerMTok) + Pico(completion)*Pico(p.OutputPerMTok)
}
