//go:build !race

package openai

import "testing"

func TestAllocsRequestFields(t *testing.T) {
	var rf Request
	n := testing.AllocsPerRun(1000, func() {
		if _, err := rf.Parse(benchBody); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("Request.Parse allocates %v times per call, want 0", n)
	}
	quoted := quoted("upstream-model")
	buf := make([]byte, 0, 1024)
	n = testing.AllocsPerRun(1000, func() { buf = AppendEdits(buf[:0], benchBody, rf.ModelEdit(quoted)) })
	if n != 0 {
		t.Fatalf("AppendEdits allocates %v times per call, want 0", n)
	}
}
