package config

import (
	"strconv"
	"strings"
	"testing"
)

// env returns a getenv over a fixed map, so tests never see the real environment.
func env(kv ...string) func(string) string {
	m := make(map[string]string)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestExpand(t *testing.T) {
	getenv := env("KEY", "sk-123", "EMPTY", "", "SPECIAL", `a: [b, {c: "d"}] # e`)
	f := func(in, want string) {
		t.Helper()
		got, err := expand(in, getenv)
		if err != nil {
			t.Fatalf("expand(%q): %v", in, err)
		}
		if got != want {
			t.Fatalf("expand(%q) = %q, want %q", in, got, want)
		}
	}
	f("plain", "plain")
	f("${KEY}", "sk-123")
	f("Bearer ${KEY}!", "Bearer sk-123!")
	f("${KEY}${KEY}", "sk-123sk-123")
	f("${MISSING}", "")
	f("${MISSING:-fallback}", "fallback")
	f("${EMPTY:-fallback}", "fallback") // empty counts as unset, as in sh
	f("${KEY:-fallback}", "sk-123")
	f("${MISSING:-}", "")
	f("${MISSING:-a:-b}", "a:-b")
	f("$${KEY}", "${KEY}")
	f("$$", "$")
	f("$$$$", "$$")
	f("pa$word", "pa$word") // a lone $ needs no escape
	f("cost: 5$", "cost: 5$")
	f("$", "$")
	f("${SPECIAL}", `a: [b, {c: "d"}] # e`)
	f("${_x1}", "")
}

func TestExpandRejects(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		_, err := expand(in, env())
		if err == nil {
			t.Fatalf("expand(%q) accepted, want an error", in)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("expand(%q) error %q does not contain %q", in, err, want)
		}
	}
	f("${KEY", `"${" has no closing "}"`)
	f("abc ${", `"${" has no closing "}"`)
	f("${}", `"" is not a variable name`)
	f("${1KEY}", `"1KEY" is not a variable name`)
	f("${KEY-x}", `"KEY-x" is not a variable name`)
	f("${KEY:?required}", `"KEY:?required" is not a variable name`)
	f("${A B}", `"A B" is not a variable name`)
	f("${A:-${B}}", "a default cannot contain another ${...}")
}

// TestExpandInDocument checks expansion through Parse: only values, once,
// without changing the document's structure.
func TestExpandInDocument(t *testing.T) {
	doc := `# ${COMMENT_IS_NOT_EXPANDED
listen: ${LISTEN}
admin_key: "${ADMIN}"
upstreams:
  - &mock
    name: mock
    base_url: ${MOCK_URL:-inproc://mock}
    max_conns: ${CONNS}
    timeout: ${TIMEOUT}
    optional: ${OPTIONAL}
    headers:
      X-Special: ${SPECIAL}
      X-Number: ${NUMBER}
      X-Null: ${NULL}
      X-Quoted: "${NUMBER}"
      X-Escaped: $${NOT_EXPANDED}
models:
  - name: m
    routes: [{upstream: mock}]
`
	getenv := env(
		"LISTEN", "127.0.0.1:9999",
		"ADMIN", "0123456789abcdef-admin",
		"CONNS", "7",
		"TIMEOUT", "90s",
		"OPTIONAL", "false",
		"SPECIAL", "a: [b, {c: d}] # &x *y !!int",
		"NUMBER", "0x10",
		"NULL", "null",
		"NOT_EXPANDED", "wrong",
	)
	c, err := Parse([]byte(doc), "test.yaml", getenv)
	if err != nil {
		t.Fatal(err)
	}
	u := c.Upstream("mock")
	f := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Fatalf("%s = %q, want %q", what, got, want)
		}
	}
	f("listen", c.Listen, "127.0.0.1:9999")
	f("admin_key", c.AdminKey, "0123456789abcdef-admin")
	f("base_url", u.BaseURL, InprocMock)
	f("max_conns", strconv.Itoa(u.MaxConns), "7")
	f("timeout", u.Timeout.String(), "1m30s")
	f("optional", strconv.FormatBool(u.Optional), "false")
	f("headers.X-Special", u.Headers["X-Special"], "a: [b, {c: d}] # &x *y !!int")
	f("headers.X-Number", u.Headers["X-Number"], "0x10")
	f("headers.X-Null", u.Headers["X-Null"], "null")
	f("headers.X-Quoted", u.Headers["X-Quoted"], "0x10")
	f("headers.X-Escaped", u.Headers["X-Escaped"], "${NOT_EXPANDED}")
}

func TestExpandSkipsKeys(t *testing.T) {
	doc := `upstreams:
  - name: mock
    base_url: inproc://mock
    headers:
      ${NAME}: v
models: [{name: m, routes: [{upstream: mock}]}]
`
	_, err := Parse([]byte(doc), "test.yaml", env("NAME", "X-Valid"))
	want := `config: test.yaml: upstreams[0].headers.${NAME}: "${NAME}" is not a valid header name; use letters, digits and '-'`
	if err == nil || err.Error() != want {
		t.Fatalf("got error %v, want %q", err, want)
	}
}

// TestExpandEmptyKeepsDefault checks that an unquoted reference expanding to
// nothing leaves the field's default, and a quoted one gives "".
func TestExpandEmptyKeepsDefault(t *testing.T) {
	doc := `listen: ${UNSET}
store:
  path: "${UNSET}"
upstreams:
  - name: mock
    base_url: inproc://mock
    timeout: ${UNSET}
models: [{name: m, routes: [{upstream: mock}]}]
`
	_, err := Parse([]byte(doc), "test.yaml", env())
	want := "config: test.yaml: store.path: empty; name a directory, or remove it for the default ./data"
	if err == nil || err.Error() != want {
		t.Fatalf("got error %v, want %q", err, want)
	}
	doc = strings.Replace(doc, `"${UNSET}"`, "${UNSET}", 1)
	c, err := Parse([]byte(doc), "test.yaml", env())
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8080" || c.Store.Path != "./data" || c.Upstreams[0].Timeout != defaultUpstream().Timeout {
		t.Fatalf("defaults not kept: listen %q, store.path %q, timeout %s", c.Listen, c.Store.Path, c.Upstreams[0].Timeout)
	}
}

func TestExpandErrorNamesLine(t *testing.T) {
	doc := "listen: 127.0.0.1:8080\n\nadmin_key: ${ADMIN\nstore:\n  path: ${1BAD}\n"
	_, err := Parse([]byte(doc), "test.yaml", env())
	want := `config: test.yaml: 2 problems:
line 3: "${" has no closing "}"; write ${NAME} or ${NAME:-default}, or $$ for a literal $
line 5: ${1BAD}: "1BAD" is not a variable name; use letters, digits and '_' as in ${OPENAI_API_KEY} or ${NAME:-default}`
	if err == nil || err.Error() != want {
		t.Fatalf("got error\n%v\nwant\n%s", err, want)
	}
}

// TestExpandAliasOnce checks that an alias is not expanded a second time,
// which would turn an escaped "$${X}" into X's value.
func TestExpandAliasOnce(t *testing.T) {
	doc := `upstreams:
  - name: mock
    base_url: inproc://mock
    headers: {A: &v "$${X}", B: *v}
models: [{name: m, routes: [{upstream: mock}]}]
`
	c, err := Parse([]byte(doc), "test.yaml", env("X", "expanded"))
	if err != nil {
		t.Fatal(err)
	}
	h := c.Upstreams[0].Headers
	if h["A"] != "${X}" || h["B"] != "${X}" {
		t.Fatalf("headers = %q, want both ${X}", h)
	}
}
