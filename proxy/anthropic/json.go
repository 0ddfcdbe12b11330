package anthropic

import (
	"bytes"
	"errors"
	"sync"
	"unicode/utf8"
	"unsafe"

	"github.com/bytedance/sonic/ast"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
)

// maxDepth bounds the nesting checkKeys walks (a tool's JSON schema is the
// deepest thing an honest request holds, a few levels), so that a body of
// nested brackets costs a bounded stack.
const maxDepth = 128

var (
	errDuplicateKey = errors.New("a key is repeated")
	errBadEscape    = errors.New("a key has an escape JSON does not define")
	errTooDeep      = errors.New("nested deeper than 128 levels")
)

// checkKeys walks the valid JSON value v and refuses any object that
// repeats a key, once escapes are decoded ("role" and "r\u006fle" are one
// key): upstreams written in Python or Go take the last of repeated keys,
// the decoder here may not, and a body must read the same to every parser.
// Keys are compared exactly, as OpenAI's and Anthropic's servers compare
// them; the decoder here is case-sensitive too. It returns the name of the
// repeated key (decoded) with errDuplicateKey.
func checkKeys(v []byte) (string, error) {
	_, name, err := checkValue(v, jsonscan.SkipSpace(v, 0), 0)
	return name, err
}

func checkValue(v []byte, i, depth int) (end int, name string, err error) {
	if i >= len(v) {
		return i, "", nil
	}
	switch v[i] {
	case '{':
		if depth >= maxDepth {
			return i, "", errTooDeep
		}
		return checkObject(v, i, depth+1)
	case '[':
		if depth >= maxDepth {
			return i, "", errTooDeep
		}
		i = jsonscan.SkipSpace(v, i+1)
		for i < len(v) && v[i] != ']' {
			if i, name, err = checkValue(v, i, depth+1); err != nil {
				return i, name, err
			}
			i = jsonscan.SkipSpace(v, i)
			if i < len(v) && v[i] == ',' {
				i = jsonscan.SkipSpace(v, i+1)
			}
		}
		return i + 1, "", nil
	}
	return jsonscan.SkipValue(v, i), "", nil
}

// smallObject is how many keys an object may have before duplicates are
// looked up in a map rather than by comparing with each key before.
const smallObject = 16

func checkObject(v []byte, i, depth int) (end int, name string, err error) {
	var small [smallObject][]byte
	keys := small[:0]
	var many map[string]struct{}
	i = jsonscan.SkipSpace(v, i+1)
	for i < len(v) && v[i] != '}' {
		keyEnd := jsonscan.SkipString(v, i)
		key := v[i+1 : keyEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			dec, ok := jsonscan.AppendUnescaped(nil, v[i:keyEnd])
			if !ok {
				return i, "", errBadEscape
			}
			key = dec
		}
		switch {
		case many != nil:
			if _, dup := many[string(key)]; dup {
				return i, string(key), errDuplicateKey
			}
			many[string(key)] = struct{}{}
		default:
			for _, k := range keys {
				if bytes.Equal(k, key) {
					return i, string(key), errDuplicateKey
				}
			}
			if len(keys) < smallObject {
				keys = append(keys, key)
				break
			}
			many = make(map[string]struct{}, 2*smallObject)
			for _, k := range keys {
				many[string(k)] = struct{}{}
			}
			many[string(key)] = struct{}{}
		}
		i = jsonscan.SkipSpace(v, keyEnd)
		i = jsonscan.SkipSpace(v, i+1) // the ':'
		if i, name, err = checkValue(v, i, depth); err != nil {
			return i, name, err
		}
		i = jsonscan.SkipSpace(v, i)
		if i < len(v) && v[i] == ',' {
			i = jsonscan.SkipSpace(v, i+1)
		}
	}
	return i + 1, "", nil
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string literal. Invalid UTF-8 becomes
// U+FFFD, as encoding/json writes it, so what is written is always valid
// JSON whatever the upstream sent.
func appendString[T string | []byte](dst []byte, s T) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune([]byte(s[i:min(i+utf8.UTFMax, len(s))]))
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, s[start:i]...)
				dst = append(dst, `\ufffd`...)
				i++
				start = i
				continue
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendInt appends a non-negative or negative integer in decimal.
func appendInt(dst []byte, v int64) []byte {
	if v < 0 {
		dst = append(dst, '-')
		v = -v
	}
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(dst, b[i:]...)
}

// nodes holds scratch nodes for the event readers: ast.Node.Raw makes its
// receiver escape, so a node on the stack would cost an allocation each time.
var nodes = sync.Pool{New: func() any { return new(ast.Node) }}

// release returns a scratch node to the pool, cleared so that it does not
// keep the bytes it last pointed into alive.
func release(n *ast.Node) {
	*n = ast.Node{}
	nodes.Put(n)
}

// find looks path up in js and returns the raw JSON of what it found, a
// substring of js, and its type; V_NONE if nothing. The searcher does not
// validate what it skips: callers validate events first (sonic.Valid).
func find(n *ast.Node, js string, path ...any) (string, int) {
	s := ast.NewSearcher(js)
	s.ValidateJSON = false
	var err error
	if *n, err = s.GetByPath(path...); err != nil {
		return "", ast.V_NONE
	}
	raw, err := n.Raw()
	if err != nil {
		return "", ast.V_NONE
	}
	return raw, n.TypeSafe()
}

// count reads a token count at path in js: a non-negative integer.
func count(n *ast.Node, js string, path ...any) (int64, bool) {
	raw, t := find(n, js, path...)
	if t != ast.V_NUMBER {
		return 0, false
	}
	return parseCount(raw)
}

// parseCount reads a JSON integer token of at most 15 digits (so sums and
// products with prices cannot overflow); negative, fractional or exponent
// forms are not counts.
func parseCount(tok string) (int64, bool) {
	if len(tok) == 0 || len(tok) > 15 {
		return 0, false
	}
	var v int64
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// isObject reports whether data, less leading JSON whitespace, opens an object.
func isObject(data []byte) bool {
	i := jsonscan.SkipSpace(data, 0)
	return i < len(data) && data[i] == '{'
}

// b2s views b as a string without copying; b must not change while it is used.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// s2b views s as bytes without copying; they must not be written to.
func s2b(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// appendUnescaped is jsonscan.AppendUnescaped for a literal held in a string.
func appendUnescaped(dst []byte, lit string) ([]byte, bool) {
	return jsonscan.AppendUnescaped(dst, s2b(lit))
}
