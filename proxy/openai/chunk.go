package openai

import (
	"bytes"
	"math"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"

	"github.com/bytedance/sonic/ast"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
	"github.com/tokenhub/tokenhub/internal/usd"
)

// The readers below look up single fields of an OpenAI chunk with sonic's
// searcher, which skips what it passes over instead of decoding it (usage,
// whose repeated keys must read as the client reads them, walks members
// with jsonscan instead: see members). They
// take a chunk as the Data of an event; anything that is not a JSON object
// (such as "[DONE]") reads as a chunk without the field. They do not validate
// what they skip, which saves about a third of their time: a malformed chunk
// reads as some answer or none, never a panic (FuzzChunk), and its client
// fails on it anyway.

// nodes holds scratch nodes for lookups that need a value's raw JSON:
// ast.Node.Raw makes its receiver escape, so a node on the stack would cost
// an allocation each time.
var nodes = sync.Pool{New: func() any { return new(ast.Node) }}

// ChunkUsage reads usage.prompt_tokens, usage.completion_tokens and
// usage.prompt_tokens_details.cached_tokens (see Usage) from a chunk. It
// reports false when usage is absent or null (every chunk but the last when
// the client asked for stream_options.include_usage), or when the prompt or
// completion count is not a non-negative integer.
func ChunkUsage(data []byte) (usd.Tokens, bool) {
	used, hasCompletion, ok := usage(data)
	if !ok || !hasCompletion {
		return usd.Tokens{}, false
	}
	return used, true
}

// Usage reads usage.prompt_tokens, usage.completion_tokens and
// usage.prompt_tokens_details.cached_tokens from a whole answer (a buffered
// completion or embedding), which must be valid JSON; the completion count
// is 0 when absent (embeddings) or not a count. It reports false without a
// usage object or a prompt count. The cached count is part of the prompt
// count, as OpenAI reports it; 0 when absent or not a count, and as the
// upstream said it otherwise, even past the prompt (the biller clamps it,
// usd.Tokens.Clamped, and counts that). A repeated key reads as its last,
// and an escaped name as what it spells, as the official SDKs read them
// (see members): what is billed is the usage the client sees.
func Usage(data []byte) (usd.Tokens, bool) {
	used, _, ok := usage(data)
	return used, ok
}

func usage(data []byte) (used usd.Tokens, hasCompletion, ok bool) {
	if !isObject(data) || !mayHaveUsage(data) {
		return usd.Tokens{}, false, false
	}
	var u [1][]byte
	if members(data, usageKey[:], u[:]); u[0] == nil || u[0][0] != '{' {
		return usd.Tokens{}, false, false
	}
	var counts [len(usageCounts)][]byte
	members(u[0], usageCounts[:], counts[:])
	if used.Prompt, ok = tokenCount(counts[0]); !ok {
		return usd.Tokens{}, false, false
	}
	used.Completion, hasCompletion = tokenCount(counts[1])
	if !hasCompletion {
		used.Completion = 0
	}
	if details := counts[2]; details != nil && details[0] == '{' {
		var cached [1][]byte
		members(details, cachedKey[:], cached[:])
		if used.Cached, ok = tokenCount(cached[0]); !ok {
			used.Cached = 0
		}
	}
	return used, hasCompletion, true
}

// The members usage reads, at each level.
var (
	usageKey    = [...]string{"usage"}
	usageCounts = [...]string{"prompt_tokens", "completion_tokens", "prompt_tokens_details"}
	cachedKey   = [...]string{"cached_tokens"}
)

// members sets values[i] to the raw value of the last member of obj named
// names[i] (nil when there is none), in one walk of obj, a JSON object with
// no leading whitespace. The official
// SDKs read an answer with JSON.parse, Python's json and Go's encoding/json,
// which keep the last of a repeated key and decode an escaped name
// ("prompt_\u0074okens"): usage read here must be what the client reads, or
// an upstream's repeated count would bill one number and show another. It
// walks obj's members and skips their values without decoding them; on
// malformed JSON it stays in bounds and answers something or nothing.
func members(obj []byte, names []string, values [][]byte) {
	var buf [keyBufLen]byte
	if len(obj) == 0 || obj[0] != '{' {
		return
	}
	for i := 1; ; {
		if i = jsonscan.SkipSpace(obj, i); i >= len(obj) || obj[i] != '"' {
			return // '}', or not an object's member
		}
		keyEnd := jsonscan.SkipString(obj, i)
		lit := obj[i:keyEnd]
		if i = jsonscan.SkipSpace(obj, keyEnd); i >= len(obj) || obj[i] != ':' {
			return
		}
		if i = jsonscan.SkipSpace(obj, i+1); i >= len(obj) {
			return
		}
		end := jsonscan.SkipValue(obj, i)
		if len(lit) >= 2 && lit[len(lit)-1] == '"' && end > i {
			if key, valid := keyName(&buf, lit); valid {
				for k, name := range names {
					if string(key) == name {
						values[k] = obj[i:end]
					}
				}
			}
		}
		if i = jsonscan.SkipSpace(obj, end); i >= len(obj) || obj[i] != ',' {
			return
		}
		i++
	}
}

// tokenCount reads a token count, a non-negative JSON integer that fits an
// int64, from a member's raw value (nil: none).
func tokenCount(raw []byte) (int64, bool) {
	if len(raw) == 0 || len(raw) > 19 {
		return 0, false
	}
	var v int64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		if v > (math.MaxInt64-int64(c-'0'))/10 {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// IsUsageOnlyChunk reports whether a chunk is the one OpenAI adds at the end
// of a stream for stream_options.include_usage: no choices, and a usage
// object. A gateway that asked for usage on the client's behalf strips it.
func IsUsageOnlyChunk(data []byte) bool {
	if !isObject(data) || !mayHaveUsage(data) {
		return false
	}
	n := nodes.Get().(*ast.Node)
	defer release(n)
	js := b2s(data)
	// Choices first: they come early in a chunk, usage last.
	if choices, t := find(n, js, "choices"); t != ast.V_ARRAY || !isEmptyArray(choices) {
		return false
	}
	_, t := find(n, js, "usage")
	return t == ast.V_OBJECT
}

// ContentBytes returns the length, in bytes of UTF-8 text, of the generated
// text a chunk carries: every choice's delta (chat completions: content,
// refusal, reasoning and the arguments of tool calls) or text (legacy
// completions). At roughly four bytes a token it gives a running estimate of
// completion tokens for streams without a usage chunk.
func ContentBytes(data []byte) int {
	if !isObject(data) {
		return 0
	}
	n := nodes.Get().(*ast.Node)
	defer release(n)
	choices, t := find(n, b2s(data), "choices")
	if t != ast.V_ARRAY {
		return 0
	}
	total := 0
	forEach(n, choices, maxChoices, func(choice string) { total += choiceBytes(n, choice) })
	return total
}

// forEach calls f with the raw JSON of each object in arr, a JSON array, up
// to limit of them. It walks the array one element after the other (finding
// element i by index would skip the i before it each time).
func forEach(n *ast.Node, arr string, limit int, f func(obj string)) {
	rest := arr[1:] // what follows '[' or ',': its first value is the next element
	for range limit {
		if rest = trimSpace(rest); rest == "" || rest[0] == ']' {
			return
		}
		v, t := find(n, rest)
		if t == ast.V_NONE {
			return
		}
		if t == ast.V_OBJECT {
			f(v)
		}
		if rest = trimSpace(after(rest, v)); rest == "" || rest[0] != ',' {
			return
		}
		rest = rest[1:]
	}
}

// deltaTexts are the fields of a chat delta that carry generated text, as
// their quoted names, which a cheap substring test looks for before a search.
var deltaTexts = [...]string{`"content"`, `"refusal"`, `"reasoning_content"`, `"reasoning"`}

// choiceBytes returns the length of the text in one choice.
func choiceBytes(n *ast.Node, choice string) int {
	delta, t := find(n, choice, "delta")
	if t != ast.V_OBJECT {
		if s, t := find(n, choice, "text"); t == ast.V_STRING {
			return unquotedLen(s)
		}
		return 0
	}
	total := 0
	for _, q := range deltaTexts {
		if !strings.Contains(delta, q) {
			continue // most deltas have content only
		}
		if s, t := find(n, delta, q[1:len(q)-1]); t == ast.V_STRING {
			total += unquotedLen(s)
		}
	}
	if !strings.Contains(delta, `"tool_calls"`) {
		return total
	}
	if calls, t := find(n, delta, "tool_calls"); t == ast.V_ARRAY {
		forEach(n, calls, maxChoices, func(call string) {
			if s, t := find(n, call, "function", "arguments"); t == ast.V_STRING {
				total += unquotedLen(s)
			}
		})
	}
	return total
}

var usageName = []byte(`"usage"`)

// mayHaveUsage reports whether data holds the text of a usage object,
// "usage" then a colon and an opening brace, with JSON whitespace between:
// a byte search that spares the searcher every chunk without one (all but
// the last, which carry "usage":null or no usage at all). Usage written
// with escapes in its name would be missed; no encoder writes it so.
func mayHaveUsage(data []byte) bool {
	for rest := data; ; {
		i := bytes.Index(rest, usageName)
		if i < 0 {
			return false
		}
		rest = rest[i+len(usageName):]
		rest = rest[jsonscan.SkipSpace(rest, 0):]
		if len(rest) > 0 && rest[0] == ':' {
			if rest = rest[jsonscan.SkipSpace(rest, 1):]; len(rest) > 0 && rest[0] == '{' {
				return true
			}
		}
	}
}

// HasError reports whether a chunk is an OpenAI error object, {"error":{...}},
// which upstreams send in place of a chunk when generation fails midway.
func HasError(data []byte) bool {
	if !isObject(data) {
		return false
	}
	n, err := searcher(b2s(data)).GetByPath("error")
	return err == nil && n.TypeSafe() == ast.V_OBJECT
}

// searcher returns a searcher over js that does not validate what it skips.
func searcher(js string) *ast.Searcher {
	s := ast.NewSearcher(js)
	s.ValidateJSON = false
	return s
}

// find looks path (names, or indexes into arrays) up in js and returns the
// raw JSON of what it found, a substring of js, and its type; V_NONE if
// nothing. With no path it finds the value js starts with.
func find(n *ast.Node, js string, path ...any) (string, int) {
	var err error
	if *n, err = searcher(js).GetByPath(path...); err != nil {
		return "", ast.V_NONE
	}
	raw, err := n.Raw()
	if err != nil {
		return "", ast.V_NONE
	}
	return raw, n.TypeSafe()
}

// release returns a scratch node to the pool, cleared so that it does not
// keep the chunk it last pointed into alive.
func release(n *ast.Node) {
	*n = ast.Node{}
	nodes.Put(n)
}

// isObject reports whether data, less leading JSON whitespace, opens an
// object. It keeps sonic from reading "[DONE]", and from allocating the
// syntax error it would return.
func isObject(data []byte) bool {
	i := jsonscan.SkipSpace(data, 0)
	return i < len(data) && data[i] == '{'
}

// isEmptyArray reports whether raw, a JSON array, has no elements.
func isEmptyArray(raw string) bool { return trimSpace(raw[1:]) == "]" }

// trimSpace drops the JSON whitespace s starts with.
func trimSpace(s string) string { return strings.TrimLeft(s, " \t\n\r") }

// after returns what follows inner in outer, of which inner is a substring
// (as find's results are of what they were found in).
func after(outer, inner string) string {
	off := int(uintptr(unsafe.Pointer(unsafe.StringData(inner))) - uintptr(unsafe.Pointer(unsafe.StringData(outer))))
	if off < 0 || off+len(inner) > len(outer) {
		return ""
	}
	return outer[off+len(inner):]
}

// unquotedLen returns the length in bytes of the UTF-8 text that q, a JSON
// string literal with its quotes, stands for, without decoding it.
func unquotedLen(q string) int {
	if len(q) < 2 {
		return 0
	}
	s := q[1 : len(q)-1]
	n := 0
	for {
		i := strings.IndexByte(s, '\\')
		if i < 0 || i+1 == len(s) {
			return n + len(s)
		}
		n += i
		s = s[i:]
		if s[1] != 'u' {
			n++ // \n, \", \\ and the like stand for one byte
			s = s[2:]
			continue
		}
		r, ok := jsonscan.Hex4(s, 2)
		if !ok {
			n += 2 // not valid JSON; count it as written
			s = s[2:]
			continue
		}
		s = s[6:]
		if r >= 0xD800 && r < 0xDC00 && len(s) >= 6 && s[0] == '\\' && s[1] == 'u' {
			if lo, ok := jsonscan.Hex4(s, 2); ok && lo >= 0xDC00 && lo < 0xE000 {
				n += 4 // a surrogate pair: one code point past U+FFFF
				s = s[6:]
				continue
			}
		}
		if l := utf8.RuneLen(r); l > 0 {
			n += l
		} else {
			n += 3 // a lone surrogate decodes to U+FFFD
		}
	}
}

// b2s views b as a string without copying; b must not change while it is used.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
