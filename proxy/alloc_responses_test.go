//go:build !race

package proxy

import (
	"bytes"
	"testing"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// TestAllocsServeResponses: a buffered Responses API request, a create or
// a compaction, costs the gateway no allocation, as a chat completion does
// (TestAllocsServeChat), the model as is and renamed for the upstream. The
// upstream is the mock, in this process, which allocates nothing for a
// buffered response.
func TestAllocsServeResponses(t *testing.T) {
	g := startGateway(t, responsesConfig(startUpstream(t, mock.New(mock.Options{Chunks: 8}).Handler)), "")
	key := g.newKey("all").Key
	for _, tc := range []struct{ path, fields, output string }{
		{"/v1/responses", `,"max_output_tokens":64,"store":false`, `"output_tokens":8`},
		{"/v1/responses/compact", "", `"output_tokens":16`},
	} {
		for _, model := range []string{"mock", "alias"} {
			body := `{"model":"` + model + `","input":"Say something short about the mock."` + tc.fields + `}`
			req := []byte("POST " + tc.path + " HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\n" +
				"Authorization: Bearer " + key + "\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body)
			c := newFakeConn(g.srv)
			serve := func() {
				c.reset(req)
				if err := g.srv.http.ServeConn(c); err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(c.status(), []byte("HTTP/1.1 200")) || !bytes.Contains(c.body(), []byte(tc.output)) {
					t.Fatalf("answer: %s", c.w.Bytes())
				}
				if n := g.srv.bodies.inUse(); n != 0 {
					t.Fatalf("%d body bytes still reserved after the request", n)
				}
			}
			warmServe(t, g, serve)
			if n := testing.AllocsPerRun(2000, serve); n != 0 {
				t.Errorf("%s, model %s: %v allocations per request, want 0", tc.path, model, n)
			}
		}
	}
}
