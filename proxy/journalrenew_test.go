package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/eventually"
)

// TestSilentStreamLetsTheJournalRecycle: a stream that relays text once and
// then, for as long as 1,300 other requests take to fill over three journal
// segments, only chunks without text, does not hold back the journal's
// recycling: the relay renews its count on those reads, and after a flush
// the journal is down to the segment holding it and the one appended to.
// (Without the renewal its segment, and every one after it, stays until the
// stream ends: the journal keeps the stream's count for a crash.)
func TestSilentStreamLetsTheJournalRecycle(t *testing.T) {
	ping, stop := make(chan struct{}), make(chan struct{})
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if !bytes.Contains(ctx.PostBody(), []byte(`"stream":true`)) {
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
			return
		}
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			w.WriteString(`data: {"id":"s","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hello"}}]}` + "\n\n")
			w.Flush()
			for {
				select {
				case <-ping: // a chunk without text, as while a model thinks
					w.WriteString(`data: {"id":"s","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{}}]}` + "\n\n")
					w.Flush()
				case <-stop:
					w.WriteString("data: [DONE]\n\n")
					w.Flush()
					return
				}
			}
		})
	})
	dir := t.TempDir()
	g := startNode(t, fmt.Sprintf(`
store: {path: %q, journal: {segment_size: 64KiB}}
upstreams:
  - {name: up, base_url: %q}
models:
  - {name: m, routes: [{upstream: up}]}
plans:
  - {name: all, models: ["*"]}
`, dir, up))
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
		}
	}()
	key := g.newKey("all").Key
	segments := func() int {
		m, _ := filepath.Glob(filepath.Join(dir, "journal", "*.journal"))
		return len(m)
	}

	req, _ := http.NewRequest("POST", g.url+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewReader(resp.Body)
	// next reads the stream up to a line that contains want.
	next := func(want string) {
		t.Helper()
		for {
			line, err := events.ReadString('\n')
			if err != nil {
				t.Fatalf("stream ended waiting for %q: %v", want, err)
			}
			if strings.Contains(line, want) {
				return
			}
		}
	}
	next(`"content":"hello"`)

	// 1,300 settled requests: 64 KiB segments hold 408 records.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for range 325 {
				status, _, body := g.do("POST", "/v1/chat/completions", key, []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
				if status != 200 {
					t.Errorf("worker %d: %d %s", w, status, body)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if n := segments(); n < 4 {
		t.Fatalf("%d segments after 1,300 requests of 408 a segment, want at least 4", n)
	}
	ping <- struct{}{}
	next(`"delta":{}`) // relayed, so the read was journaled

	// The node flushes every second: within a generous deadline, the
	// flushes recycle all but the segment with the stream's renewed count
	// and the one appended to.
	eventually.True(t, "at most 2 journal segments after a silent stream's renewal", func() bool { return segments() <= 2 })
	stopped = true
	close(stop)
	next("[DONE]")
}
