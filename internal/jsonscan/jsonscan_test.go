package jsonscan

import "testing"

func TestSkip(t *testing.T) {
	f := func(in string, at int, want int) {
		t.Helper()
		if got := SkipValue([]byte(in), at); got != want {
			t.Fatalf("SkipValue(%q, %d) = %d, want %d", in, at, got, want)
		}
	}
	f(`"abc",`, 0, 5)
	f(`"a\"b\\",`, 0, 8)
	f(`"a long string with more than sixteen bytes",1`, 0, 44)
	f(`{"a":[1,{"b":"}]"}],"c":{}} x`, 0, 27)
	f(`[[],[[]]]`, 0, 9)
	f(`-12.5e3,`, 0, 7)
	f(`true}`, 0, 4)
	f(`null`, 0, 4)
	if got := SkipSpace([]byte(" \t\r\n x"), 0); got != 5 {
		t.Fatalf("SkipSpace = %d", got)
	}
	if got := SkipSpace([]byte("  "), 0); got != 2 {
		t.Fatalf("SkipSpace at the end = %d, want len", got)
	}
}
