package proxy

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// An upstream's client error that is not OpenAI-shaped (a FastAPI
// {"detail"}, a {"message"}, an nginx HTML page, plain text) is answered in
// OpenAI's shape, and what the upstream said goes inside it: without it the
// client cannot tell a validation error from a size limit. This is the cold
// path of a refusal, so it favours clarity over allocations.
const (
	// upstreamWordsMax bounds the upstream's words quoted in an error;
	// upstreamWordsScan bounds what is scanned for them and for secrets.
	upstreamWordsMax  = 512
	upstreamWordsScan = 4 * upstreamWordsMax
	// upstreamBodyScan bounds the body read as JSON; a longer one is read
	// as text.
	upstreamBodyScan = 64 << 10
	// secretRunMin is the shortest run of a secret's bytes that is
	// redacted: 8 random characters never occur by chance in an error.
	secretRunMin = 8
)

var redacted = []byte("[redacted]")

// appendUpstreamWords appends ". It said: <words>" to b: the upstream's
// message read from its error body, with whitespace collapsed, control
// characters and invalid UTF-8 replaced, every run of secretRunMin or more
// bytes of a secret redacted (the upstream may quote the gateway's provider
// key), and at most upstreamWordsMax bytes. Nothing when it said nothing.
func appendUpstreamWords(b, body, contentType []byte, secrets [][]byte) []byte {
	words := upstreamWords(body, contentType)
	words = printable(words)
	if len(words) > upstreamWordsScan {
		words = words[:upstreamWordsScan]
	}
	for _, s := range secrets {
		words = redact(words, s)
	}
	if len(words) == 0 {
		return b
	}
	b = append(b, ". It said: "...)
	if len(words) <= upstreamWordsMax {
		return append(b, words...)
	}
	cut := upstreamWordsMax
	for cut > 0 && !utf8.RuneStart(words[cut]) {
		cut--
	}
	b = append(b, words[:cut]...)
	return append(b, "…"...)
}

// upstreamSecrets returns what of u's credentials must never be quoted: the
// key (as sent in Authorization or x-api-key) and the values of its configured headers
// (api-key and the like) long enough to be secrets.
func upstreamSecrets(apiKey []byte, headers [][2][]byte) [][]byte {
	var s [][]byte
	if len(apiKey) >= secretRunMin {
		s = append(s, apiKey)
	}
	for _, h := range headers {
		if len(h[1]) >= 2*secretRunMin {
			s = append(s, h[1])
		}
	}
	return s
}

// upstreamWords reads what an error body says: the message of a JSON error
// in the shapes servers use ({"message"}, FastAPI's {"detail"}, {"error":
// "..."}), else the JSON itself; the text of an HTML page; or the text.
func upstreamWords(body, contentType []byte) []byte {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil
	}
	if len(body) <= upstreamBodyScan && json.Valid(body) {
		var v any
		if json.Unmarshal(body, &v) == nil {
			if w := jsonWords(v); w != "" {
				return []byte(w)
			}
		}
		var compact bytes.Buffer
		if json.Compact(&compact, body) == nil {
			return compact.Bytes()
		}
		return body
	}
	if len(body) > upstreamBodyScan {
		body = body[:upstreamBodyScan]
	}
	if bytes.Contains(bytes.ToLower(contentType), []byte("html")) || bytes.HasPrefix(body, []byte("<")) {
		return htmlText(body)
	}
	return body
}

// jsonWords returns the message of a decoded JSON error, "" when it has
// none it knows. FastAPI's validation errors become "loc: msg" each; their
// "input", which echoes the request, is left out.
func jsonWords(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case map[string]any:
		for _, k := range [...]string{"message", "detail", "error", "msg"} {
			if w := jsonWords(v[k]); w != "" {
				return w
			}
		}
	case []any:
		var b []byte
		for _, item := range v {
			var w string
			if m, ok := item.(map[string]any); ok {
				w = fastAPIError(m)
			} else {
				w = jsonWords(item)
			}
			if w == "" {
				continue
			}
			if len(b) > 0 {
				b = append(b, "; "...)
			}
			b = append(b, w...)
		}
		return string(b)
	}
	return ""
}

// fastAPIError reads one FastAPI validation error, {"loc":["body","x"],
// "msg":"..."}, as "body.x: ...".
func fastAPIError(m map[string]any) string {
	msg, ok := m["msg"].(string)
	if !ok {
		return jsonWords(m)
	}
	loc, _ := m["loc"].([]any)
	var b []byte
	for _, p := range loc {
		if len(b) > 0 {
			b = append(b, '.')
		}
		switch p := p.(type) {
		case string:
			b = append(b, p...)
		case float64:
			b = strconv.AppendFloat(b, p, 'f', -1, 64)
		}
	}
	if len(b) == 0 {
		return msg
	}
	return string(b) + ": " + msg
}

// htmlText returns the text of an HTML page: tags dropped, and the head,
// scripts and styles with their content (the title repeats the heading of
// a server's error page).
func htmlText(page []byte) []byte {
	lower := bytes.ToLower(page)
	var out []byte
	for i := 0; i < len(page); {
		if page[i] != '<' {
			out = append(out, page[i])
			i++
			continue
		}
		skipped := false
		for _, name := range [...]string{"head", "script", "style"} {
			if rest := lower[i+1:]; bytes.HasPrefix(rest, []byte(name)) &&
				(len(rest) == len(name) || bytes.IndexByte([]byte("> \t\r\n/"), rest[len(name)]) >= 0) {
				end := bytes.Index(lower[i:], []byte("</"+name))
				if end < 0 {
					return out
				}
				i += end + 2
				skipped = true
				break
			}
		}
		end := bytes.IndexByte(page[i:], '>')
		if end < 0 {
			break
		}
		i += end + 1
		if !skipped {
			out = append(out, ' ')
		}
	}
	return out
}

// printable returns s with runs of whitespace and control characters made
// one space, invalid UTF-8 bytes made U+FFFD each, and no space at the ends.
func printable(s []byte) []byte {
	out := make([]byte, 0, min(len(s), upstreamWordsScan+8))
	space := false
	for i := 0; i < len(s) && len(out) <= upstreamWordsScan; {
		r, n := utf8.DecodeRune(s[i:])
		i += n
		if r < 0x20 || r == 0x7f || r == ' ' {
			space = len(out) > 0
			continue
		}
		if space {
			out = append(out, ' ')
			space = false
		}
		out = utf8.AppendRune(out, r) // RuneError for an invalid byte: U+FFFD
	}
	return out
}

// redact replaces in s every run of secretRunMin or more bytes that also
// occurs in secret with "[redacted]".
func redact(s, secret []byte) []byte {
	if len(secret) < secretRunMin {
		return s
	}
	var out []byte
	for i := 0; i < len(s); {
		longest := 0
		for j := range secret {
			n := 0
			for i+n < len(s) && j+n < len(secret) && s[i+n] == secret[j+n] {
				n++
			}
			longest = max(longest, n)
		}
		if longest >= secretRunMin {
			out = append(out, redacted...)
			i += longest
			continue
		}
		out = append(out, s[i])
		i++
	}
	return out
}
