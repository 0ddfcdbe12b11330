//go:build !race

package proxy

import "testing"

func TestAllocsRequestFields(t *testing.T) {
	var rf requestFields
	n := testing.AllocsPerRun(1000, func() {
		if e, _ := rf.parse(benchBody); e != nil {
			t.Fatal(e.message)
		}
	})
	if n != 0 {
		t.Fatalf("requestFields.parse allocates %v times per call, want 0", n)
	}
	quoted := appendQuoted(nil, "upstream-model")
	buf := make([]byte, 0, 1024)
	n = testing.AllocsPerRun(1000, func() { buf = appendEdits(buf[:0], benchBody, rf.modelEdit(quoted)) })
	if n != 0 {
		t.Fatalf("appendEdits allocates %v times per call, want 0", n)
	}
}
