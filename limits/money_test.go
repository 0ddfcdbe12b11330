package limits

import "testing"

func TestParseUSD(t *testing.T) {
	f := func(in string, want MicroUSD) {
		t.Helper()
		got, err := ParseUSD(in)
		if err != nil {
			t.Fatalf("ParseUSD(%q): %v", in, err)
		}
		if got != want {
			t.Fatalf("ParseUSD(%q) = %d, want %d", in, got, want)
		}
		if back, _ := ParseUSD(got.String()); back != got {
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

func TestParseUSDRejects(t *testing.T) {
	for _, in := range []string{"", "-1", "abc", "1.2.3", "0.0000001", "1e3", ".", "99999999999999999999"} {
		if _, err := ParseUSD(in); err == nil {
			t.Errorf("ParseUSD(%q) accepted, want an error", in)
		}
	}
}

func TestMicroUSDString(t *testing.T) {
	f := func(m MicroUSD, want string) {
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
