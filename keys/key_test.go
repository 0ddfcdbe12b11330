package keys

import (
	"errors"
	"regexp"
	"testing"
	"time"
)

func TestKeyCheck(t *testing.T) {
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	f := func(k Key, want error) {
		t.Helper()
		if err := k.Check(now); !errors.Is(err, want) {
			t.Fatalf("Check(%+v) = %v, want %v", k, err, want)
		}
	}
	f(Key{}, nil)
	f(Key{ExpiresAt: now.Add(time.Nanosecond)}, nil)
	f(Key{ExpiresAt: now}, ErrExpired) // expiry is exclusive: at ExpiresAt it no longer works
	f(Key{ExpiresAt: now.Add(-time.Hour)}, ErrExpired)
	f(Key{RevokedAt: now.Add(time.Hour)}, ErrRevoked) // any revocation counts, even one stamped by a fast clock
	f(Key{RevokedAt: now, ExpiresAt: now.Add(-time.Hour)}, ErrRevoked)
}

func TestNewKeyID(t *testing.T) {
	re := regexp.MustCompile(`^key_[0-9a-f]{24}$`)
	seen := map[string]bool{}
	for range 100 {
		id, err := newKeyID()
		if err != nil {
			t.Fatal(err)
		}
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("newKeyID() = %q: want a fresh key_ + 24 hex digits", id)
		}
		seen[id] = true
	}
}

func TestValidKeyName(t *testing.T) {
	f := func(name string, want bool) {
		t.Helper()
		if got := validKeyName(name); got != want {
			t.Fatalf("validKeyName(%q) = %v, want %v", name, got, want)
		}
	}
	f("", true)
	f("ci pipeline — prod", true)
	f(string(make([]byte, 256)), true)
	f(string(make([]byte, 257)), false)
	f("bad \xff utf-8", false)
}
