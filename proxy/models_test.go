package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// rawGet sends path exactly as written, escapes and all (net/http refuses
// to build a request with a malformed escape), and returns the answer.
func (g *gateway) rawGet(path, key string) (int, http.Header, []byte) {
	g.t.Helper()
	c, err := net.DialTimeout("tcp", g.url[len("http://"):], 5*time.Second)
	if err != nil {
		g.t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		g.t.Fatal(err)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: tokenhub\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", path, key)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		g.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b := make([]byte, 0, 512)
	buf := make([]byte, 512)
	for {
		n, err := resp.Body.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil {
			break
		}
	}
	return resp.StatusCode, resp.Header, b
}

// TestGetModelDecodesTheID: every SDK percent-encodes the id in
// GET /v1/models/{model}, so a Hugging Face-style id with a slash, or any
// escaped byte, must find its model; a malformed escape is refused in
// OpenAI's shape.
func TestGetModelDecodesTheID(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, fmt.Sprintf(`
upstreams:
  - {name: up, base_url: %q}
models:
  - {name: meta-llama/Llama-3.1-8B, routes: [{upstream: up}]}
  - {name: mock, routes: [{upstream: up}]}
  - {name: secret, routes: [{upstream: up}]}
plans:
  - {name: some, models: ["meta-llama/Llama-3.1-8B", "mock"]}
`, up), "")
	key := g.newKey("some").Key

	m, err := g.client(key).Models.Get(context.Background(), "meta-llama/Llama-3.1-8B")
	if err != nil {
		t.Fatalf("SDK Models.Get with a slash: %v", err)
	}
	if m.ID != "meta-llama/Llama-3.1-8B" || m.Object != "model" {
		t.Fatalf("SDK Models.Get: %+v", m)
	}

	// f asserts the answer to GET path: a 200 naming the model want, or an
	// error with status and code want.
	f := func(path string, status int, want string) {
		t.Helper()
		st, hdr, b := g.rawGet(path, key)
		if status != http.StatusOK {
			wantErrorBody(t, st, hdr, b, status, want)
			return
		}
		var got struct{ ID, Object string }
		if st != http.StatusOK || json.Unmarshal(b, &got) != nil || got.ID != want || got.Object != "model" {
			t.Fatalf("GET %s: %d %s, want 200 with id %q", path, st, b, want)
		}
	}
	const llama = "meta-llama/Llama-3.1-8B"
	f("/v1/models/meta-llama%2FLlama-3.1-8B", 200, llama)
	f("/v1/models/meta-llama%2fLlama-3.1-8B", 200, llama)
	f("/v1/models/meta-llama/Llama-3.1-8B", 200, llama) // curl, unescaped
	f("/v1/models/m%6Fck", 200, "mock")
	f("/v1/models/%6d%6f%63%6b", 200, "mock")
	f("/v1/models/mock", 200, "mock")
	f("/v1/models/m%6", 400, "invalid_url")
	f("/v1/models/m%zzck", 400, "invalid_url")
	f("/v1/models/mock%", 400, "invalid_url")
	f("/v1/models/m%+6ck", 400, "invalid_url")
	f("/v1/models/nope", 404, "model_not_found")
	f("/v1/models/n%00pe", 404, "model_not_found")
	f("/v1/models/secret", 404, "model_not_found")   // outside the plan: as if missing
	f("/v1/models/s%65cret", 404, "model_not_found") // escaping it changes nothing
	f("/v1/models/meta-llama%2FLlama-3.1-8B%2F", 404, "model_not_found")
	f("/v1/models/", 404, "unknown_url")
	f("/v1/models/"+strings.Repeat("%6d", 300), 404, "model_not_found")

	// Authentication comes first, whatever the id.
	st, hdr, b := g.rawGet("/v1/models/m%zz", "")
	wantErrorBody(t, st, hdr, b, 401, "invalid_api_key")
}
