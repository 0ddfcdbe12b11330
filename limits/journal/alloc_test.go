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

// TestAllocsPinned: a stream's pinned append, its Renew (a copy forward
// when its record is in a segment no longer appended to) and its Unpin
// allocate nothing.
func TestAllocsPinned(t *testing.T) {
	j := open(t, t.TempDir(), Options{SegmentBytes: 1 << 20})
	r := rec(1)
	r.Kind = Progress
	// A segment the journal has moved on from, holding a stream's record.
	old := &segment{data: make([]byte, 2*RecordSize), slots: 2}
	encode(old.data[RecordSize:], &r, 7)
	if n := testing.AllocsPerRun(1000, func() {
		var p Pin
		if _, err := j.AppendPinned(&r, &p); err != nil {
			t.Fatal(err)
		}
		if err := j.Renew(&p); err != nil { // in the current segment: nothing to do
			t.Fatal(err)
		}
		j.Unpin(&p)
		old.pins.Add(1)
		p = Pin{seg: old, slot: 1}
		if err := j.Renew(&p); err != nil {
			t.Fatal(err)
		}
		if p.seg == old {
			t.Fatal("Renew left the pin on a segment appended to no more")
		}
		j.Unpin(&p)
	}); n != 0 {
		t.Fatalf("%v allocations per pinned append, renew and unpin, want 0", n)
	}
}
