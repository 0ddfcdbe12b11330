// Package jsonscan finds where JSON tokens end, for the one-pass readers that
// take a few fields out of request bodies without decoding them (the proxy's
// and the mock upstream's). Every function assumes valid JSON (callers check
// it first with sonic.Valid); on anything else they stay in bounds but their
// answers mean nothing.
package jsonscan

import "bytes"

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
