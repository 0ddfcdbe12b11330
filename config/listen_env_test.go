package config

import (
	"strings"
	"testing"
)

// TestDefaultListenFromEnvironment: the built-in config serves on
// TOKENHUB_LISTEN when it is set (the container image sets 0.0.0.0:8080), on
// loopback when it is unset or empty, and refuses a bad value at load time,
// naming the field, rather than falling back to loopback unnoticed.
func TestDefaultListenFromEnvironment(t *testing.T) {
	f := func(value, wantListen, wantErr string) {
		t.Helper()
		getenv := env()
		if value != "unset" {
			getenv = env("TOKENHUB_LISTEN", value)
		}
		c, err := Parse(Default(), "default.yaml", getenv)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("TOKENHUB_LISTEN=%q: error %v, want one containing %q", value, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("TOKENHUB_LISTEN=%q: %v", value, err)
		}
		if c.Listen != wantListen {
			t.Fatalf("TOKENHUB_LISTEN=%q: listen %q, want %q", value, c.Listen, wantListen)
		}
	}
	f("unset", "127.0.0.1:8080", "")
	f("", "127.0.0.1:8080", "")
	f("0.0.0.0:8080", "0.0.0.0:8080", "")
	f("[::]:9000", "[::]:9000", "")
	f("8080", "", `listen: "8080" is not host:port`)
	f("0.0.0.0:8080\nadmin_key: x", "", "listen: ") // a value never adds a field
}
