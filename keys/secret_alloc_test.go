//go:build !race

package keys

import "testing"

// The race detector allocates on its own, hence the build tag.

func TestAllocsParseSecret(t *testing.T) {
	s, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	good, bad := []byte(s), []byte(s[:51]+"!")
	f := func(name string, in []byte) {
		t.Helper()
		if n := testing.AllocsPerRun(1000, func() { ParseSecret(in) }); n != 0 {
			t.Fatalf("ParseSecret(%s) allocates %v times per call, want 0", name, n)
		}
	}
	f("valid", good)
	f("malformed", bad)
}
