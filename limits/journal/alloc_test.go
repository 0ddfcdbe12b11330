//go:build !race

package journal

import "testing"

// TestAllocsAppend: an append allocates nothing (a segment rotation, once
// per SegmentBytes/160 appends, does).
func TestAllocsAppend(t *testing.T) {
	j := open(t, t.TempDir(), Options{SegmentBytes: 1 << 20})
	r := rec(1)
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := j.Append(&r); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per append, want 0", n)
	}
}
