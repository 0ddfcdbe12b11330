package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// billedEventually polls the key's usage until it records want requests (a
// stream is billed as it ends, which may be just after its last byte), and
// returns the tokens billed.
func (g *gateway) billedEventually(id string, want int64) (prompt, completion int64) {
	g.t.Helper()
	eventually.True(g.t, fmt.Sprintf("usage recording %d requests", want), func() bool {
		var n int64
		n, prompt, completion = g.usageOf(id)
		return n == want
	})
	return prompt, completion
}

// TestStreamOptionsCannotHideUsage is issue 11 item 3, against an upstream
// that reads bodies as providers do (the last of repeated keys wins, escaped
// names decoded). A client that repeats or escapes include_usage must not stop
// the upstream from reporting the stream's usage: a repeated key is refused,
// an escaped one is read as the key it spells, and the stream is billed the
// upstream's exact count.
func TestStreamOptionsCannotHideUsage(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 20})
	g := startGateway(t, yamlModels(up), "")
	k := g.newKey("all")
	const head = `{"model":"mock","stream":true,"messages":[{"role":"user","content":"count to twenty"}],"stream_options":`
	refused := func(so, code string) {
		t.Helper()
		st, hdr, body := g.do("POST", "/v1/chat/completions", k.Key, []byte(head+so+`}`))
		wantErrorBody(t, st, hdr, body, http.StatusBadRequest, code)
	}
	refused(`{"include_usage":false,"include_usage":false}`, "duplicate_key")
	refused(`{"include_usage":true,"include_usage":false}`, "duplicate_key")
	refused(`{"include_usage":false,"include_\u0075sage":false}`, "duplicate_key")
	// Go's encoding/json matches names case-insensitively (and K matches k):
	// to a Go upstream these are include_usage too.
	refused(`{"Include_Usage":false}`, "ambiguous_key")
	refused(`{"include_uſage":false}`, "ambiguous_key")

	served := 0
	billed := func(so string) {
		t.Helper()
		stream := rawStream(t, g.url, k.Key, head+so+`}`)
		served++
		if strings.Contains(stream, "usage") {
			t.Fatalf("stream_options %s: the client got usage it did not ask for: %q", so, stream)
		}
		if _, completion := g.billedEventually(k.ID, int64(served)); completion != int64(20*served) {
			t.Fatalf("stream_options %s: %d completion tokens billed over %d streams, want the upstream's %d",
				so, completion, served, 20*served)
		}
	}
	billed(`{"include_\u0075sage":false}`)
	billed(`{"include_usage":false}`)
	billed(`{"x":{"include_usage":false,"include_usage":false},"include_usage":null}`)
}
