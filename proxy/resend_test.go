package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// rawUpstream is an OpenAI-like upstream on a plain TCP listener whose
// connections follow a script, the way a misbehaving provider or a load
// balancer in front of one does. It counts receipts: requests it has read
// whole, which a provider would run and bill.
type rawUpstream struct {
	url      string
	receipts atomic.Int64
	script   []rawStep

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// rawStep is what a connection does with the request at its position.
type rawStep int

const (
	// answer: a 200 with a chat completion, or a short event stream when the
	// request asks for text/event-stream, framed by Content-Length.
	answer rawStep = iota
	// drop: read the whole request, then close without a byte of answer (a
	// provider that crashed or was cut off mid-work).
	drop
)

// startRawUpstream serves script on every connection; after the script the
// connection is closed, as an upstream's idle timeout closes it.
func startRawUpstream(t *testing.T, script ...rawStep) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveRaw(t, ln, "http", script...)
}

// serveRaw is startRawUpstream on ln, whose base URL has scheme.
func serveRaw(t *testing.T, ln net.Listener, scheme string, script ...rawStep) *rawUpstream {
	t.Helper()
	u := &rawUpstream{url: scheme + "://" + ln.Addr().String() + "/v1", script: script, conns: map[net.Conn]struct{}{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			if u.closed {
				u.mu.Unlock()
				c.Close()
				return
			}
			u.conns[c] = struct{}{}
			u.wg.Add(1)
			u.mu.Unlock()
			go u.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		u.closed = true
		for c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

// rawStreamBody is a whole chat stream with its usage, as OpenAI sends it
// when asked for usage.
const rawStreamBody = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n" +
	"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n" +
	"data: [DONE]\n\n"

func (u *rawUpstream) serve(c net.Conn) {
	defer u.wg.Done()
	defer func() {
		u.mu.Lock()
		delete(u.conns, c)
		u.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReader(c)
	for _, step := range u.script {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		u.receipts.Add(1)
		if step == drop {
			return
		}
		ct, body := "application/json", string(staticChatBody)
		if req.Header.Get("Accept") == "text/event-stream" {
			ct, body = "text/event-stream", rawStreamBody
		}
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", ct, len(body), body); err != nil {
			return
		}
	}
}

// waitPeerClosed waits until the gateway's connections to the upstream at
// url have all seen the upstream close them (TCP state CLOSE_WAIT in
// /proc/net/tcp): the state of a pooled keep-alive connection the upstream
// closed while it was idle.
func waitPeerClosed(t *testing.T, url string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(strings.TrimSuffix(url[strings.Index(url, "//")+2:], "/v1"))
	p, _ := strconv.Atoi(port)
	remote := fmt.Sprintf(":%04X", p)
	const established, closeWait = "01", "08"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		table, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Skipf("no /proc/net/tcp to watch TCP states: %v", err)
		}
		open, halfClosed := 0, 0
		for _, line := range strings.Split(string(table), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 4 || !strings.HasSuffix(f[2], remote) {
				continue
			}
			switch f[3] {
			case established:
				open++
			case closeWait:
				halfClosed++
			}
		}
		if open == 0 && halfClosed > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s the gateway holds %d open and %d upstream-closed connections to %s; want only upstream-closed ones", open, halfClosed, url)
		}
	}
}

func resendBody(model string, stream bool) []byte {
	return []byte(`{"model":"` + model + `","stream":` + strconv.FormatBool(stream) + `,"messages":[{"role":"user","content":"bill me once"}]}`)
}

// TestTakenRequestIsNotSentAgain: an upstream that reads the whole request
// and closes without answering may have run it, and bills it: the client
// gets a 502 and no upstream, neither the same one on a new connection nor
// the next route, receives the request a second time. That holds on a fresh
// connection and on a pooled one that was alive when the request was written.
func TestTakenRequestIsNotSentAgain(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run("stream="+strconv.FormatBool(stream), func(t *testing.T) {
			dropper := startRawUpstream(t, drop)
			answerThenDrop := startRawUpstream(t, answer, drop)
			good, goodURL := startMock(t, mock.Options{})
			g := startGateway(t, fmt.Sprintf(`
upstreams:
  - {name: dropper, base_url: %q}
  - {name: answer-then-drop, base_url: %q}
  - {name: good, base_url: %q}
models:
  - {name: drop, routes: [{upstream: dropper}]}
  - {name: drop-second, routes: [{upstream: answer-then-drop}]}
  - {name: drop-or-good, routes: [{upstream: dropper, weight: 1000}, {upstream: good, weight: 1}]}
plans:
  - {name: all, models: ["*"]}
`, dropper.url, answerThenDrop.url, goodURL), "")
			key := g.newKey("all").Key

			t.Run("fresh connection", func(t *testing.T) {
				st, hdr, body := g.do("POST", "/v1/chat/completions", key, resendBody("drop", stream))
				wantErrorBody(t, st, hdr, body, http.StatusBadGateway, "upstream_error")
				if n := dropper.receipts.Load(); n != 1 {
					t.Fatalf("the upstream received the request %d times, want 1", n)
				}
			})
			t.Run("pooled connection", func(t *testing.T) {
				// The first request leaves a live pooled connection; the
				// second, written on it, is taken and dropped.
				if st, _, body := g.do("POST", "/v1/chat/completions", key, resendBody("drop-second", stream)); st != http.StatusOK {
					t.Fatalf("first request on the connection: %d %s", st, body)
				}
				st, hdr, body := g.do("POST", "/v1/chat/completions", key, resendBody("drop-second", stream))
				wantErrorBody(t, st, hdr, body, http.StatusBadGateway, "upstream_error")
				if n := answerThenDrop.receipts.Load(); n != 2 {
					t.Fatalf("2 requests reached the upstream %d times, want 2", n)
				}
			})
			t.Run("no failover", func(t *testing.T) {
				// With a second route, a dropped request must not fail over:
				// the first provider may have run it. Each request reaches
				// exactly one upstream; those that started on the dropper get
				// a 502.
				dropped, served := 0, int(good.Requests())
				for i := range 10 {
					before := dropper.receipts.Load()
					st, hdr, body := g.do("POST", "/v1/chat/completions", key, resendBody("drop-or-good", stream))
					toDropper, toGood := dropper.receipts.Load()-before, int(good.Requests())-served
					served += toGood
					switch {
					case toDropper == 1 && toGood == 0:
						wantErrorBody(t, st, hdr, body, http.StatusBadGateway, "upstream_error")
						dropped++
					case toDropper == 0 && toGood == 1 && st == http.StatusOK:
					default:
						t.Fatalf("request %d: %d %s; reached the dropper %d times and the next route %d times, want one upstream once",
							i, st, body[:min(len(body), 200)], toDropper, toGood)
					}
				}
				if dropped == 0 {
					t.Fatal("no request started on the dropping route (weight 1000 to 1)")
				}
			})
		})
	}
}

// TestStaleKeepAliveIsRetried: an upstream that closes a keep-alive
// connection while it is idle in the pool never saw the next request, so the
// gateway finds it closed before writing a byte and sends the request on a
// fresh connection: it succeeds, and the upstream receives it once. That
// holds for every reuse with stale_check_after: 0, and by default for a
// connection idle past the default 100ms (the test waits that long; idle
// timeouts of real upstreams are seconds).
func TestStaleKeepAliveIsRetried(t *testing.T) {
	defaults, err := config.Parse([]byte(yamlModels("http://127.0.0.1:1/v1")), "test", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if defaults.Upstreams[0].StaleCheckAfter <= 0 {
		t.Fatalf("default stale_check_after %s", defaults.Upstreams[0].StaleCheckAfter)
	}
	for _, check := range []struct {
		name   string
		config string
		idle   time.Duration
	}{
		{"every reuse", "stale_check_after: 0s, ", 0},
		{"idle past the default", "", defaults.Upstreams[0].StaleCheckAfter},
	} {
		for _, stream := range []bool{false, true} {
			t.Run(check.name+"/stream="+strconv.FormatBool(stream), func(t *testing.T) {
				up := startRawUpstream(t, answer) // one answer per connection, then it is closed
				g := startGateway(t, strings.Replace(yamlModels(up.url), "base_url: ", check.config+"base_url: ", 1), "")
				key := g.newKey("all").Key
				for i := range 5 {
					st, _, body := g.do("POST", "/v1/chat/completions", key, resendBody("mock", stream))
					if st != http.StatusOK {
						t.Fatalf("request %d: %d %s", i, st, body)
					}
					if n := up.receipts.Load(); n != int64(i+1) {
						t.Fatalf("after %d requests the upstream received %d", i+1, n)
					}
					waitPeerClosed(t, up.url) // the connection the gateway pooled is now closed
					time.Sleep(check.idle)    // the request began before the sleep: it idles past idle
				}
			})
		}
	}
}

// TestStaleKeepAliveWithinTheCheckWindow is the trade-off of
// stale_check_after: a pooled connection the upstream closed sooner than that
// after its previous request began is written to unchecked, so the request
// fails with a 502; it is still never sent twice, and the next request gets
// a fresh connection.
func TestStaleKeepAliveWithinTheCheckWindow(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run("stream="+strconv.FormatBool(stream), func(t *testing.T) {
			up := startRawUpstream(t, answer) // one answer per connection, then it is closed
			g := startGateway(t, strings.Replace(yamlModels(up.url), "base_url: ", "stale_check_after: 1h, base_url: ", 1), "")
			key := g.newKey("all").Key
			if st, _, body := g.do("POST", "/v1/chat/completions", key, resendBody("mock", stream)); st != http.StatusOK {
				t.Fatalf("first request: %d %s", st, body)
			}
			waitPeerClosed(t, up.url)
			st, hdr, body := g.do("POST", "/v1/chat/completions", key, resendBody("mock", stream))
			wantErrorBody(t, st, hdr, body, http.StatusBadGateway, "upstream_error")
			if n := up.receipts.Load(); n != 1 {
				t.Fatalf("the upstream received %d requests, want 1: the second was written to a closed connection", n)
			}
			if st, _, body := g.do("POST", "/v1/chat/completions", key, resendBody("mock", stream)); st != http.StatusOK {
				t.Fatalf("request after the failed one: %d %s", st, body)
			}
			if n := up.receipts.Load(); n != 2 {
				t.Fatalf("the upstream received %d requests, want 2", n)
			}
		})
	}
}

// TestConnectRefusedFailsOver: a route nothing listens on never received the
// request, so the next route answers it.
func TestConnectRefusedFailsOver(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run("stream="+strconv.FormatBool(stream), func(t *testing.T) {
			good, goodURL := startMock(t, mock.Options{})
			g := startGateway(t, fmt.Sprintf(`
upstreams:
  - {name: dead, base_url: %q, connect_timeout: 2s}
  - {name: good, base_url: %q}
models:
  - {name: m, routes: [{upstream: dead, weight: 1000}, {upstream: good, weight: 1}]}
plans:
  - {name: all, models: ["*"]}
`, deadURL(t), goodURL), "")
			key := g.newKey("all").Key
			for i := range 5 {
				if st, _, body := g.do("POST", "/v1/chat/completions", key, resendBody("m", stream)); st != http.StatusOK {
					t.Fatalf("request %d: %d %s", i, st, body)
				}
			}
			if n := good.Requests(); n != 5 {
				t.Fatalf("the next route served %d of 5", n)
			}
		})
	}
}
