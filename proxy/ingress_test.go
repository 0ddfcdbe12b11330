package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// rawExchange writes raw to a new connection to the gateway, half-closes
// it when closeWrite is set, and reads the answer until the server closes
// the connection. Every read has a deadline far above any honest answer but
// below the gateway's read_timeout in these tests, so a hang fails.
func rawExchange(t *testing.T, url, raw string, closeWrite bool) (status int, answer string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	if closeWrite {
		c.(*net.TCPConn).CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil && !isConnReset(err) {
		t.Fatalf("read the answer: %v (got %q)", err, b)
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(b))), nil)
	if err != nil {
		t.Fatalf("no HTTP answer (%v): %q", err, b)
	}
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

func isConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestMalformedRequestsLogNoSecrets sends requests fasthttp cannot parse,
// each carrying a user key, the admin key and prompt bytes, and proves that
// none of them reaches any log line, and that each is answered promptly with
// a 4xx (the gateway's read_timeout is far longer than the test's wait).
func TestMalformedRequestsLogNoSecrets(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	var log logBuffer
	g := startNodeLogging(t, "store: {path: "+t.TempDir()+"}\nserver: {read_timeout: 10m}\n"+yamlModels(up), &log)
	userKey := g.newKey("all").Key
	const prompt = "PROMPT-MARKER-7f3a"
	body := `{"model":"mock","messages":[{"role":"user","content":"` + prompt + `"}]}`
	f := func(name, raw string, closeWrite bool) {
		t.Run(name, func(t *testing.T) {
			for _, key := range []string{userKey, g.adminKey} {
				r := strings.ReplaceAll(raw, "KEY", key)
				r = strings.ReplaceAll(r, "BODY", body)
				status, answer := rawExchange(t, g.url, r, closeWrite)
				if status < 400 || status > 499 {
					t.Fatalf("status %d, want a 4xx: %q", status, answer)
				}
			}
		})
	}
	f("cut off before the blank line",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\nX-Prompt: "+prompt+"\r\n", true)
	f("duplicate Content-Length",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nBODY", false)
	f("bad Transfer-Encoding",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\nBODY", false)
	f("NUL in a header",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\nX-Prompt: a\x00"+prompt+"\r\nContent-Length: 5\r\n\r\nBODY", false)
	f("bare LF line ends",
		"POST /v1/chat/completions HTTP/1.1\nHost: x\nAuthorization: Bearer KEY\nX-Prompt: "+prompt+"\nContent-Length: 5\n\nBODY", false)
	f("bare LF line ends, cut off",
		"POST /v1/chat/completions HTTP/1.1\nHost: x\nAuthorization: Bearer KEY\nX-Prompt: "+prompt+"\n", true)
	f("broken chunk",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\nTransfer-Encoding: chunked\r\n\r\nzz"+prompt+"\r\nBODY", false)
	f("space before the colon",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer KEY\r\nContent-Length: 5\r\n\r\nBODY", false)

	logged := log.String()
	for _, secret := range []string{userKey, g.adminKey, userKey[3:20], g.adminKey[:20], prompt} {
		if strings.Contains(logged, secret) {
			t.Errorf("the log holds %q:\n%s", secret, logged)
		}
	}
}
