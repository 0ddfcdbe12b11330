package proxy

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/internal/upstreamtest"
)

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
			dropper := upstreamtest.Start(t, upstreamtest.Drop)
			answerThenDrop := upstreamtest.Start(t, upstreamtest.Answer, upstreamtest.Drop)
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
`, dropper.URL, answerThenDrop.URL, goodURL), "")
			key := g.newKey("all").Key

			t.Run("fresh connection", func(t *testing.T) {
				st, hdr, body := g.do("POST", "/v1/chat/completions", key, resendBody("drop", stream))
				wantErrorBody(t, st, hdr, body, http.StatusBadGateway, "upstream_error")
				if n := dropper.Receipts(); n != 1 {
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
				if n := answerThenDrop.Receipts(); n != 2 {
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
					before := dropper.Receipts()
					st, hdr, body := g.do("POST", "/v1/chat/completions", key, resendBody("drop-or-good", stream))
					toDropper, toGood := dropper.Receipts()-before, int(good.Requests())-served
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
				up := upstreamtest.Start(t, upstreamtest.Answer) // one answer per connection, then it is closed
				g := startGateway(t, strings.Replace(yamlModels(up.URL), "base_url: ", check.config+"base_url: ", 1), "")
				key := g.newKey("all").Key
				for i := range 5 {
					st, _, body := g.do("POST", "/v1/chat/completions", key, resendBody("mock", stream))
					if st != http.StatusOK {
						t.Fatalf("request %d: %d %s", i, st, body)
					}
					if n := up.Receipts(); n != int64(i+1) {
						t.Fatalf("after %d requests the upstream received %d", i+1, n)
					}
					upstreamtest.WaitPeerClosed(t, up.URL) // the connection the gateway pooled is now closed
					time.Sleep(check.idle)                 // the request began before the sleep: it idles past idle
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
			up := upstreamtest.Start(t, upstreamtest.Answer) // one answer per connection, then it is closed
			g := startGateway(t, strings.Replace(yamlModels(up.URL), "base_url: ", "stale_check_after: 1h, base_url: ", 1), "")
			key := g.newKey("all").Key
			if st, _, body := g.do("POST", "/v1/chat/completions", key, resendBody("mock", stream)); st != http.StatusOK {
				t.Fatalf("first request: %d %s", st, body)
			}
			upstreamtest.WaitPeerClosed(t, up.URL)
			st, hdr, body := g.do("POST", "/v1/chat/completions", key, resendBody("mock", stream))
			wantErrorBody(t, st, hdr, body, http.StatusBadGateway, "upstream_error")
			if n := up.Receipts(); n != 1 {
				t.Fatalf("the upstream received %d requests, want 1: the second was written to a closed connection", n)
			}
			if st, _, body := g.do("POST", "/v1/chat/completions", key, resendBody("mock", stream)); st != http.StatusOK {
				t.Fatalf("request after the failed one: %d %s", st, body)
			}
			if n := up.Receipts(); n != 2 {
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
