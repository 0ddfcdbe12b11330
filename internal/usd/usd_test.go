package usd

import "testing"

func TestParse(t *testing.T) {
	f := func(in string, want Micro) {
		t.Helper()
		got, err := Parse(in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if got != want {
			t.Fatalf("Parse(%q) = %d, want %d", in, got, want)
		}
		if back, _ := Parse(got.String()); back != got {
			t.Fatalf("round trip of %q through %q gave %d", in, got.String(), back)
		}
	}
	f("0", 0)
	f("10", 10_000_000)
	f("0.5", 500_000)
	f("0.15", 150_000)
	f("0.000001", 1)
	f(".25", 250_000)
	f("1.", 1_000_000)
	f(" 2.50 ", 2_500_000)
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{"", "-1", "abc", "1.2.3", "0.0000001", "1e3", ".", "99999999999999999999"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) accepted, want an error", in)
		}
	}
}

func TestMicroString(t *testing.T) {
	f := func(m Micro, want string) {
		t.Helper()
		if got := m.String(); got != want {
			t.Fatalf("%d.String() = %q, want %q", int64(m), got, want)
		}
	}
	f(0, "0")
	f(500_000, "0.5")
	f(1, "0.000001")
	f(12_340_000, "12.34")
	f(-1_500_000, "-1.5")
}

func TestCost(t *testing.T) {
	f := func(p Price, prompt, completion int64, want string) {
		t.Helper()
		if got := p.Cost(prompt, completion).String(); got != want {
			t.Fatalf("%+v.Cost(%d, %d) = %s, want %s", p, prompt, completion, got, want)
		}
	}
	gpt4oMini := Price{InputPerMTok: 150_000, OutputPerMTok: 600_000}
	f(gpt4oMini, 1, 0, "0.00000015")
	f(gpt4oMini, 1_000_000, 1_000_000, "0.75")
	f(gpt4oMini, 123, 45, "0.00004545")
	f(Price{InputPerMTok: 1}, 1, 0, "0.000000000001")
	f(Price{}, 1000, 1000, "0")
}

func TestAppendUSDRoundsUp(t *testing.T) {
	if got := string(Pico(1).AppendUSD(nil)); got != "0.000001" {
		t.Fatalf("1 pico-dollar shows as %s", got)
	}
	if got := string(Micro(500_000).Pico().AppendUSD(nil)); got != "0.5" {
		t.Fatalf("half a dollar shows as %s", got)
	}
}

func TestPicoString(t *testing.T) {
	for _, tc := range []struct {
		p    Pico
		want string
	}{
		{0, "0"},
		{Micro(10_000_000).Pico(), "10"},
		{1, "0.000000000001"},
		{11_816_000_000_000 + 123, "11.816000000123"},
		{-500_000_000_000, "-0.5"},
		{-1_500_000_000_000, "-1.5"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("Pico(%d).String() = %q, want %q", int64(tc.p), got, tc.want)
		}
	}
}

// TestBill prices usage with a cached part to the pico-dollar: cached tokens
// are part of the prompt (OpenAI's shape), billed at the cached price, the
// rest at the input price; what an upstream reports past the prompt is not
// billed cached.
func TestBill(t *testing.T) {
	f := func(p Price, used Tokens, want string) {
		t.Helper()
		if got := p.Bill(used).String(); got != want {
			t.Fatalf("%+v.Bill(%+v) = %s, want %s", p, used, got, want)
		}
	}
	// gpt-4o-mini: $0.15 input, $0.075 cached, $0.60 output per million.
	mini := Price{InputPerMTok: 150_000, CachedInputPerMTok: 75_000, OutputPerMTok: 600_000}
	f(mini, Tokens{Prompt: 1, Cached: 1}, "0.000000075")
	f(mini, Tokens{Prompt: 1, Cached: 0}, "0.00000015")
	f(mini, Tokens{Prompt: 2006, Cached: 1920, Completion: 300}, "0.0003369")     // 86×0.15 + 1920×0.075 + 300×0.6 (µ$)
	f(mini, Tokens{Prompt: 1_000_000, Cached: 1_000_000, Completion: 0}, "0.075") // all cached
	f(mini, Tokens{Prompt: 123, Completion: 45}, mini.Cost(123, 45).String())     // cached missing: as before
	f(Price{InputPerMTok: 1, CachedInputPerMTok: 1}, Tokens{Prompt: 7, Cached: 3}, "0.000000000007")
	f(Price{CachedInputPerMTok: 1}, Tokens{Prompt: 7, Cached: 3}, "0.000000000003") // free input, priced cache
	// Cached dearer than input (a provider's cache-write price): billed as said.
	dear := Price{InputPerMTok: 100_000, CachedInputPerMTok: 125_000, OutputPerMTok: 0}
	f(dear, Tokens{Prompt: 1000, Cached: 1000}, "0.000125")
	f(dear, Tokens{Prompt: 1000, Cached: 400}, "0.00011") // 600×0.1 + 400×0.125
	// A lying upstream: cached past the prompt is clamped to it; negative to 0.
	f(mini, Tokens{Prompt: 100, Cached: 1_000_000}, mini.Bill(Tokens{Prompt: 100, Cached: 100}).String())
	f(dear, Tokens{Prompt: 100, Cached: 1_000_000}, "0.0000125")
	f(mini, Tokens{Prompt: 100, Cached: -5}, mini.Cost(100, 0).String())
	// claude-sonnet-4-6: $3 input, $0.30 cache read, $3.75 cache write, $15
	// output. Anthropic's usage {input 25, cache_read 1400, cache_creation
	// 600, output 90} is Prompt 2025 with 1400 read and 600 written.
	sonnet := Price{InputPerMTok: 3_000_000, CachedInputPerMTok: 300_000, CacheWritePerMTok: 3_750_000, OutputPerMTok: 15_000_000}
	f(sonnet, Tokens{Prompt: 2025, Cached: 1400, CacheWrite: 600, Completion: 90}, "0.004095") // 25×3 + 1400×0.3 + 600×3.75 + 90×15 (µ$)
	f(sonnet, Tokens{Prompt: 1, CacheWrite: 1}, "0.00000375")
	// Cache writes past what the reads leave of the prompt are clamped.
	f(sonnet, Tokens{Prompt: 100, Cached: 60, CacheWrite: 70}, sonnet.Bill(Tokens{Prompt: 100, Cached: 60, CacheWrite: 40}).String())
}

func TestTokensClamped(t *testing.T) {
	f := func(in Tokens, want Tokens, wantClamped bool) {
		t.Helper()
		got, clamped := in.Clamped()
		if got != want || clamped != wantClamped {
			t.Fatalf("%+v.Clamped() = %+v, %v; want %+v, %v", in, got, clamped, want, wantClamped)
		}
	}
	f(Tokens{Prompt: 10, Cached: 4, Completion: 2}, Tokens{Prompt: 10, Cached: 4, Completion: 2}, false)
	f(Tokens{Prompt: 10, Cached: 10}, Tokens{Prompt: 10, Cached: 10}, false)
	f(Tokens{Prompt: 10, Cached: 11}, Tokens{Prompt: 10, Cached: 10}, true)
	f(Tokens{Prompt: 10, Cached: -1}, Tokens{Prompt: 10}, true)
	f(Tokens{Prompt: 0, Cached: 3}, Tokens{}, true)
	f(Tokens{Prompt: 10, Cached: 4, CacheWrite: 6}, Tokens{Prompt: 10, Cached: 4, CacheWrite: 6}, false)
	f(Tokens{Prompt: 10, Cached: 4, CacheWrite: 7}, Tokens{Prompt: 10, Cached: 4, CacheWrite: 6}, true)
	f(Tokens{Prompt: 10, CacheWrite: -2}, Tokens{Prompt: 10}, true)
	f(Tokens{Prompt: -3, Cached: 1, CacheWrite: 1}, Tokens{Prompt: -3}, true)
}

// TestBoundCoversBill checks admission's bound against every split of a
// prompt into cached and uncached tokens, with the cached price below,
// equal to and above the input price: Bound is never below Bill.
func TestBoundCoversBill(t *testing.T) {
	for _, p := range []Price{
		{InputPerMTok: 150_000, CachedInputPerMTok: 75_000, OutputPerMTok: 600_000},
		{InputPerMTok: 150_000, CachedInputPerMTok: 150_000, OutputPerMTok: 600_000},
		{InputPerMTok: 100_000, CachedInputPerMTok: 125_000, OutputPerMTok: 400_000},
		{InputPerMTok: 0, CachedInputPerMTok: 1, OutputPerMTok: 0},
		{InputPerMTok: 3_000_000, CachedInputPerMTok: 300_000, CacheWritePerMTok: 3_750_000, OutputPerMTok: 15_000_000},
		{InputPerMTok: 3_000_000, CachedInputPerMTok: 3_500_000, CacheWritePerMTok: 1, OutputPerMTok: 15_000_000},
	} {
		const prompt, completion = 1000, 50
		bound := p.Bound(prompt, completion)
		for cached := int64(0); cached <= prompt+10; cached += 5 {
			for written := int64(0); written <= prompt+10; written += 45 {
				if bill := p.Bill(Tokens{Prompt: prompt, Cached: cached, CacheWrite: written, Completion: completion}); bill > bound {
					t.Fatalf("%+v: Bill with %d cached and %d written = %s, over Bound %s", p, cached, written, bill, bound)
				}
			}
		}
		if p.CachedInputPerMTok > p.InputPerMTok && bound != p.Bill(Tokens{Prompt: prompt, Cached: prompt, Completion: completion}) {
			t.Fatalf("%+v: Bound %s is not the all-cached bill when cached is dearer", p, bound)
		}
	}
}
