package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSkip(t *testing.T) {
	f := func(in string, at int, want int) {
		t.Helper()
		if got := SkipValue([]byte(in), at); got != want {
			t.Fatalf("SkipValue(%q, %d) = %d, want %d", in, at, got, want)
		}
	}
	f(`"abc",`, 0, 5)
	f(`"a\"b\\",`, 0, 8)
	f(`"a long string with more than sixteen bytes",1`, 0, 44)
	f(`{"a":[1,{"b":"}]"}],"c":{}} x`, 0, 27)
	f(`[[],[[]]]`, 0, 9)
	f(`-12.5e3,`, 0, 7)
	f(`true}`, 0, 4)
	f(`null`, 0, 4)
	if got := SkipSpace([]byte(" \t\r\n x"), 0); got != 5 {
		t.Fatalf("SkipSpace = %d", got)
	}
	if got := SkipSpace([]byte("  "), 0); got != 2 {
		t.Fatalf("SkipSpace at the end = %d, want len", got)
	}
}

// TestAppendUnescaped decodes as encoding/json does, including what it makes
// of broken surrogates, and refuses what JSON does not define.
func TestAppendUnescaped(t *testing.T) {
	f := func(lit string, ok bool) {
		t.Helper()
		got, gotOK := AppendUnescaped(nil, []byte(lit))
		var want string
		wantErr := json.Unmarshal([]byte(lit), &want)
		if gotOK != ok || ok != (wantErr == nil) {
			t.Fatalf("AppendUnescaped(%s) ok %v, want %v (encoding/json: %v)", lit, gotOK, ok, wantErr)
		}
		if ok && string(got) != want {
			t.Fatalf("AppendUnescaped(%s) = %q, encoding/json %q", lit, got, want)
		}
	}
	f(`"include_\u0075sage"`, true)
	f(`"plain"`, true)
	f(`"\"\\\/\b\f\n\r\t"`, true)
	f(`"\u00e9\u20AC"`, true)
	f(`"\ud83d\ude00"`, true)
	f(`"\ud83d"`, true)
	f(`"\ud83dx"`, true)
	f(`"\ude00\ud83d"`, true)
	f(`"\ud83d\u0041"`, true)
	f(`"\0"`, false)
	f(`"\u12"`, false)
	f(`"\u12g4"`, false)
	f(`"\x"`, false)
}

// FuzzAppendUnescaped holds AppendUnescaped to encoding/json on any literal.
func FuzzAppendUnescaped(f *testing.F) {
	for _, s := range []string{`"a"`, `"\u0075"`, `"\ud83d\ude00"`, `"\ud800\udc00x"`, `"\"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, lit string) {
		if !utf8.ValidString(lit) || strings.ContainsAny(lit, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f") {
			return // encoding/json judges raw bytes; readers decode only escapes
		}
		var want string
		if json.Unmarshal([]byte(lit), &want) != nil || strings.TrimSpace(lit) != lit {
			return
		}
		got, ok := AppendUnescaped(nil, []byte(lit))
		if !ok || string(got) != want {
			t.Fatalf("AppendUnescaped(%s) = %q %v, encoding/json %q", lit, got, ok, want)
		}
	})
}

func TestAppendEscaped(t *testing.T) {
	for in, want := range map[string]string{
		``:               ``,
		`plain/é`:        `plain/é`,
		`"\`:             `\"\\`,
		"\n\r\t\x00\x1f": `\n\r\t\u0000\u001f`,
		`<script>&amp;`:  `\u003cscript\u003e\u0026amp;`,
	} {
		if got := string(AppendEscaped([]byte("x"), in)); got != "x"+want {
			t.Errorf("AppendEscaped(%q) = %q, want %q", in, got, "x"+want)
		}
		if got := string(AppendEscaped(nil, []byte(in))); got != want {
			t.Errorf("AppendEscaped([]byte(%q)) = %q, want %q", in, got, want)
		}
	}
}
