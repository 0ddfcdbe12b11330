//go:build !race

package proxy

import (
	"bytes"
	"testing"
	"time"
)

func TestAllocsServeChat(t *testing.T) {
	g := startGateway(t, yamlModels(startUpstream(t, staticChat)), "")
	key := g.newKey("all").Key
	for _, model := range []string{"mock", "alias"} { // as is, and renamed for the upstream
		body := bytes.Replace(benchBody, []byte(`"gpt-4o-mini"`), []byte(`"`+model+`"`), 1)
		req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\n" +
			"Authorization: Bearer " + key + "\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + string(body))
		var c fakeConn
		serve := func() {
			c.reset(req)
			if err := g.srv.http.ServeConn(&c); err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(c.status(), []byte("HTTP/1.1 200")) || !bytes.Equal(c.body(), staticChatBody) {
				t.Fatalf("answer: %s", c.w.Bytes())
			}
		}
		for range 200 { // warm pools, the key cache (ristretto applies sets asynchronously) and upstream conns
			serve()
		}
		time.Sleep(50 * time.Millisecond)
		if n := testing.AllocsPerRun(2000, serve); n != 0 {
			t.Errorf("model %s: %v allocations per request, want 0", model, n)
		}
	}
}
