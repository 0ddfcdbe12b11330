package keys

import "testing"

func TestPlanAllows(t *testing.T) {
	p := &Plan{Name: "free", Models: []string{"gpt-4o-mini", "text-embedding-*", "*-preview", "a*b*c"}}
	if err := p.Compile(); err != nil {
		t.Fatal(err)
	}
	f := func(model string, want bool) {
		t.Helper()
		if got := p.Allows([]byte(model)); got != want {
			t.Fatalf("Allows(%q) = %v, want %v", model, got, want)
		}
	}
	f("gpt-4o-mini", true)
	f("gpt-4o", false)
	f("gpt-4o-mini-2024", false)
	f("text-embedding-3-small", true)
	f("text-embedding-", true)
	f("text-embedding", false)
	f("o1-preview", true)
	f("-preview", true)
	f("o1-preview-2", false)
	f("abc", true)
	f("aXbYc", true)
	f("aXbYcZ", false)
	f("", false)
}

func TestPlanStarAllowsEverything(t *testing.T) {
	p := &Plan{Name: "all", Models: []string{"*"}}
	if err := p.Compile(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"x", "gpt-4o", "mock"} {
		if !p.Allows([]byte(m)) {
			t.Fatalf("'*' refused %q", m)
		}
	}
}

func TestPlanUncompiledAllowsNothing(t *testing.T) {
	p := &Plan{Name: "x", Models: []string{"*"}}
	if p.Allows([]byte("gpt-4o")) {
		t.Fatal("an uncompiled plan admitted a model")
	}
}

func TestPlanCompileRejects(t *testing.T) {
	f := func(p Plan) {
		t.Helper()
		if err := p.Compile(); err == nil {
			t.Fatalf("Compile(%+v) accepted, want an error", p)
		}
	}
	f(Plan{Name: ""})
	f(Plan{Name: "has space"})
	f(Plan{Name: "neg", RPM: -1})
	f(Plan{Name: "empty-model", Models: []string{""}})
}
