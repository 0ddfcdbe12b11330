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
