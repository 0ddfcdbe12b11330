package keys

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

// withChecksum returns prefixAndBody followed by its correct checksum, to build
// secrets that fail for one reason only.
func withChecksum(prefixAndBody string) string {
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.ChecksumIEEE([]byte(prefixAndBody)))
	return prefixAndBody + base64.RawURLEncoding.EncodeToString(sum[:])
}

func TestNewSecretFormat(t *testing.T) {
	if SecretLen != 52 {
		t.Fatalf("SecretLen = %d, want 52", SecretLen)
	}
	seen := map[string]bool{}
	for range 100 {
		s, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != 52 || !strings.HasPrefix(s, "sk-") {
			t.Fatalf("NewSecret() = %q: want \"sk-\" and 52 characters", s)
		}
		raw, err := base64.RawURLEncoding.Strict().DecodeString(s[3:46])
		if err != nil || len(raw) != 32 {
			t.Fatalf("NewSecret() body %q does not decode to 32 bytes: %v", s[3:46], err)
		}
		if s != withChecksum(s[:46]) {
			t.Fatalf("NewSecret() = %q has a wrong checksum", s)
		}
		if seen[s] {
			t.Fatalf("NewSecret() repeated %q", s)
		}
		seen[s] = true
	}
}

func TestParseSecret(t *testing.T) {
	good, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	body := good[:46]
	f := func(in string, wantOK bool) {
		t.Helper()
		h, err := ParseSecret([]byte(in))
		if !wantOK {
			if !errors.Is(err, ErrMalformedKey) || h != [32]byte{} {
				t.Fatalf("ParseSecret(%q) = %x, %v; want ErrMalformedKey", in, h[:4], err)
			}
			return
		}
		if err != nil {
			t.Fatalf("ParseSecret(%q) = %v, want success", in, err)
		}
		if h != sha256.Sum256([]byte(in)) || h != HashSecret(in) {
			t.Fatalf("ParseSecret(%q) returned a hash other than SHA-256 of the secret", in)
		}
	}
	flip := func(s string, i int, c byte) string {
		b := []byte(s)
		b[i] = c
		return string(b)
	}
	// Last body character of a canonical encoding: its low 2 bits are zero,
	// so 'A' (0) is canonical and 'B' (1) is not.
	canonical := withChecksum(body[:45] + "A")

	f(good, true)
	f(canonical, true)
	f(withChecksum("sk-"+strings.Repeat("_", 42)+"w"), true) // '_' is in the alphabet; 'w' is 48, canonical
	f("", false)
	f("sk-", false)
	f(good[:51], false)                                                         // one short
	f(good+"A", false)                                                          // one long
	f(" "+good[:51], false)                                                     // leading space
	f("SK-"+good[3:], false)                                                    // prefix is case-sensitive
	f(withChecksum("pk-"+good[3:46]), false)                                    // wrong prefix, valid checksum
	f(flip(good, 10, good[10]^1), false)                                        // body typo: checksum catches it
	f(flip(good, 50, flipLowBits(good[50])), false)                             // checksum typo
	f(withChecksum(body[:20]+"+"+body[21:]), false)                             // '+' is std base64, not url
	f(withChecksum(body[:20]+"="+body[21:]), false)                             // padding character
	f(withChecksum(body[:45]+"B"), false)                                       // non-canonical last body char
	f(flip(withChecksum(body), 51, flipLowBits(withChecksum(body)[51])), false) // non-canonical checksum spelling
	f(strings.Repeat("A", 52), false)
	f("sk-"+strings.Repeat("A", 49), false)
}

// flipLowBits returns another base64url character whose value differs from
// c's only in the two lowest bits.
func flipLowBits(c byte) byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	return alphabet[strings.IndexByte(alphabet, c)^1]
}

func TestHashSecretMatchesParse(t *testing.T) {
	s, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseSecret([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	if HashSecret(s) != h {
		t.Fatal("HashSecret and ParseSecret disagree on a valid secret")
	}
}

func FuzzParseSecret(f *testing.F) {
	good, err := NewSecret()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(good))
	f.Add([]byte(good[:51]))
	f.Add([]byte(good + "x"))
	f.Add([]byte(good[:51] + "A"))
	f.Add([]byte(withChecksum("sk-" + strings.Repeat("A", 43))))
	f.Add([]byte(withChecksum("sk-" + strings.Repeat("A", 42) + "B")))
	f.Add([]byte("sk-" + strings.Repeat("\xff", 49)))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseSecret(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedKey) {
				t.Fatalf("ParseSecret error %v is not ErrMalformedKey", err)
			}
			return
		}
		s := string(b)
		if len(s) != 52 || !strings.HasPrefix(s, "sk-") || withChecksum(s[:46]) != s {
			t.Fatalf("ParseSecret accepted %q", s)
		}
		if _, err := base64.RawURLEncoding.Strict().DecodeString(s[3:46]); err != nil {
			t.Fatalf("ParseSecret accepted %q, whose body is not canonical base64url: %v", s, err)
		}
		if h != sha256.Sum256(b) {
			t.Fatalf("ParseSecret(%q) hash is not its SHA-256", s)
		}
		// And what NewSecret makes is always accepted.
		n, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseSecret([]byte(n)); err != nil {
			t.Fatalf("ParseSecret(NewSecret() = %q) = %v", n, err)
		}
	})
}

func BenchmarkParseSecret(b *testing.B) {
	s, err := NewSecret()
	if err != nil {
		b.Fatal(err)
	}
	secret := []byte(s)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSecret(secret); err != nil {
			b.Fatal(err)
		}
	}
}
