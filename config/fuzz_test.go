package config

import (
	"os"
	"strings"
	"testing"
)

// FuzzParse checks that no input panics Parse, and that whatever Parse
// accepts, including after it drops optional upstreams, still validates.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(Default())
	f.Add(example)
	f.Add([]byte(minimal))
	f.Add([]byte(validDoc))
	f.Add([]byte("listen: ${LISTEN:-:0}\nadmin_key: $${X}${SPECIAL}\n" + minimal))
	f.Add([]byte("upstreams:\n  - &a {name: a, base_url: \"inproc://mock\"}\n  - <<: *a\n    name: b\nmodels: [{name: m, routes: [{upstream: b}]}]\n"))
	getenv := env("OPENAI_API_KEY", "sk-o", "SPECIAL", "a: [b] # c", "LISTEN", "127.0.0.1:1")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml", getenv)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", err)
		}
		if len(c.Models) == 0 {
			t.Fatal("Parse accepted a config without models")
		}
	})
}

// FuzzExpand checks that expansion never panics and leaves text without a
// "$" alone.
func FuzzExpand(f *testing.F) {
	for _, s := range []string{"", "plain", "${A}", "${A:-b}", "$$", "${", "${A:-${B}}", "$", "a$b"} {
		f.Add(s)
	}
	getenv := env("A", "x$y", "B", "${A}")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := expand(s, getenv)
		if err == nil && !strings.Contains(s, "$") && got != s {
			t.Fatalf("expand(%q) = %q, want it unchanged", s, got)
		}
	})
}
