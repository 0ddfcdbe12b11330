// Package jsonscan finds where JSON tokens end, for the one-pass readers that
// take a few fields out of request bodies without decoding them (the proxy's
// and the mock upstream's). Every function assumes valid JSON (callers check
// it first with sonic.Valid); on anything else they stay in bounds but their
// answers mean nothing.
package jsonscan

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// SkipSpace returns the index of the first non-space byte at or after i, or
// len(b) when there is none.
func SkipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// SkipString returns the index just past the string literal starting at b[i].
func SkipString(b []byte, i int) int {
	j := i + 1
	// Most strings in a request are short keys and values: a byte loop finds
	// their end before bytes.IndexByte would have set up, which in turn wins
	// on long contents.
	for end := min(j+16, len(b)); j < end; j++ {
		switch b[j] {
		case '"':
			return j + 1
		case '\\':
			j++
		}
	}
	for j < len(b) {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return len(b)
		}
		q := j + k
		backslashes := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			backslashes++
		}
		if backslashes%2 == 0 {
			return q + 1
		}
		j = q + 1
	}
	return len(b)
}

// SkipValue returns the index just past the value starting at b[i].
func SkipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return SkipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = SkipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\n', '\r', '\t':
			return i
		}
		i++
	}
	return i
}

// AppendUnescaped appends the contents of the JSON string literal lit (quotes
// included) to dst with its escapes decoded, as encoding/json decodes them: a
// lone or broken surrogate becomes U+FFFD. It reports false for an escape JSON
// does not define (sonic.Valid lets "\0" through) or a literal that is not
// one. Readers use it on key names, so that "include_\u0075sage" means to
// them what it means to every upstream: include_usage.
func AppendUnescaped(dst, lit []byte) ([]byte, bool) {
	if len(lit) < 2 || lit[0] != '"' || lit[len(lit)-1] != '"' {
		return dst, false
	}
	s := lit[1 : len(lit)-1]
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		if i+1 >= len(s) {
			return dst, false
		}
		switch s[i+1] {
		case '"', '\\', '/':
			dst = append(dst, s[i+1])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := Hex4(s, i+2)
			if !ok {
				return dst, false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				// A high surrogate pairs with a following \uXXXX low one.
				if lo, ok := Hex4(s, i+2); ok && i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if p := utf16.DecodeRune(r, lo); p != utf8.RuneError {
						dst = utf8.AppendRune(dst, p)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default:
			return dst, false
		}
		i += 2
	}
	return dst, true
}

// Hex4 reads the four hex digits of a \u escape at s[i:], in a string or a
// byte slice alike.
func Hex4[T string | []byte](s T, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for j := i; j < i+4; j++ {
		c := s[j]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// AppendEscaped appends s as the inside of a JSON string literal, escaped as
// the gateway escapes every string it writes: quotes, backslashes and control
// bytes, and < > & as \u00XX too, so that no byte of it can form markup when
// an answer is shown in a browser. Other bytes pass as they are.
func AppendEscaped[T string | []byte](b []byte, s T) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			b = append(b, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return b
}

const lowerHex = "0123456789abcdef"
