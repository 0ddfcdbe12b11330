package proxy

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/keys"
)

// forgeKey writes what an attacker can without any key: random bytes in a
// tokenhub key's form, with its CRC-32 checksum computed as keys does.
func forgeKey(t *testing.T) string {
	t.Helper()
	var raw [32]byte
	rand.Read(raw[:])
	summed := "sk-" + base64.RawURLEncoding.EncodeToString(raw[:])
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.ChecksumIEEE([]byte(summed)))
	forged := summed + base64.RawURLEncoding.EncodeToString(sum[:])
	if _, err := keys.ParseSecret([]byte(forged)); err != nil {
		t.Fatalf("the forged key is not well-formed: %v", err)
	}
	return forged
}

// TestBodyNeedsAKeyThatAuthenticates: only a key the store knows, unrevoked
// and unexpired, reserves body budget. Eight connections with a forged
// well-formed key (or a revoked, or an expired one) declaring 16 MiB and
// trickling would hold twice the default budget (64 MiB) until
// read_timeout; instead each is answered 401 from its headers, its body
// unread and its connection closed, nothing is reserved, and a real key's
// request is served meanwhile.
func TestBodyNeedsAKeyThatAuthenticates(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, "server: {read_timeout: 10m}\n"+yamlModels(up), "")
	good := g.newKey("all").Key
	revoked := g.newKey("all")
	g.admin("DELETE", "/v1/keys/"+revoked.ID, nil, http.StatusOK, nil)
	var expired apiKey
	g.admin("POST", "/v1/keys", map[string]any{"name": "short", "plan": "all", "expires_in": 1}, http.StatusCreated, &expired)
	eventually.True(t, "the key with expires_in 1 expired", func() bool {
		st, _, body := g.do("GET", "/v1/models", expired.Key, nil)
		return st == http.StatusUnauthorized && strings.Contains(string(body), "expired")
	})
	chat := []byte(`{"model":"mock","messages":[{"role":"user","content":"hi"}]}`)

	const conns = 8
	f := func(what, key, message string) {
		t.Helper()
		answers := make(chan string, conns)
		for range conns {
			c, br := dialDeclaring(t, g.url, "Bearer "+key, 16<<20, `{"model":"mock","messages":[`)
			go func() {
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					answers <- "no answer: " + err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				// After its answer the gateway closes the connection: the
				// unread body is never read as a next request.
				if _, err := br.ReadByte(); err != io.EOF {
					answers <- "connection left open after the answer: " + string(b)
					return
				}
				if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
					answers <- resp.Status + " " + string(b)
					return
				}
				answers <- string(b)
			}()
		}
		for i := range conns {
			a := <-answers
			if !strings.Contains(a, `"code":"invalid_api_key"`) || !strings.Contains(a, message) {
				t.Fatalf("%s key, connection %d of %d declaring 16 MiB: %s; want 401 invalid_api_key %q, Connection: close",
					what, i, conns, a, message)
			}
		}
		if got := g.srv.bodies.inUse(); got != 0 {
			t.Fatalf("%s key: %d body bytes reserved, want 0", what, got)
		}
		if st, _, b := g.do("POST", "/v1/chat/completions", good, chat); st != http.StatusOK {
			t.Fatalf("a real key's request after %d %s keys declared 16 MiB: %d %s", conns, what, st, b)
		}
	}
	f("forged", forgeKey(t), "Incorrect API key provided.")
	f("revoked", revoked.Key, "revoked")
	f("expired", expired.Key, "expired")
}

// TestBodyKeyRevokedWhileArriving: a key revoked while its request's body
// trickles in is refused once the body has arrived: the header hook's check
// stands for the handler only for keyCheckFor.
func TestBodyKeyRevokedWhileArriving(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, "server: {read_timeout: 10m}\n"+yamlModels(up), "")
	k := g.newKey("all")
	body := `{"model":"mock","messages":[{"role":"user","content":"hi"}]}`
	c, br := dialDeclaring(t, g.url, "Bearer "+k.Key, len(body), body[:10])
	eventually.True(t, "the body reserved", func() bool { return g.srv.bodies.inUse() == bodyCap(int64(len(body))) })
	g.admin("DELETE", "/v1/keys/"+k.ID, nil, http.StatusOK, nil)
	// Not synchronisation: the hook's check must be older than it may be
	// used for; any longer wait proves the same.
	time.Sleep(keyCheckFor + 10*time.Millisecond)
	if _, err := io.WriteString(c, body[10:]); err != nil {
		t.Fatal(err)
	}
	resp, got := readAnswer(t, c, br)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(got, "revoked") {
		t.Fatalf("a key revoked while its body arrived: %d %s, want 401 revoked", resp.StatusCode, got)
	}
	eventually.True(t, "the budget whole", func() bool { return g.srv.bodies.inUse() == 0 })
}

// TestBodyKeyLookedUpOnce: the header hook's lookup of a body's key is the
// request's only one, so the key cache's counts stay one per request.
func TestBodyKeyLookedUpOnce(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	good := g.newKey("all")
	revoked := g.newKey("all")
	g.admin("DELETE", "/v1/keys/"+revoked.ID, nil, http.StatusOK, nil)
	forged := forgeKey(t)
	lookups := func() uint64 {
		s := g.srv.registry.Stats()
		return s.Hits + s.NegativeHits + s.Misses + s.StaleHits + s.Unavailable
	}
	chat := []byte(`{"model":"mock","messages":[{"role":"user","content":"hi"}]}`)
	f := func(method, path, key string, body []byte, want int) {
		t.Helper()
		before := lookups()
		if st, _, b := g.do(method, path, key, body); st != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, st, b, want)
		}
		if n := lookups() - before; n != 1 {
			t.Fatalf("%s %s with a body of %d bytes: %d key lookups, want 1", method, path, len(body), n)
		}
	}
	for range 3 {
		f("POST", "/v1/chat/completions", good.Key, chat, http.StatusOK)
		f("POST", "/v1/chat/completions", forged, chat, http.StatusUnauthorized)
		f("POST", "/v1/chat/completions", revoked.Key, chat, http.StatusUnauthorized)
		f("POST", "/v1/embeddings", good.Key, []byte(`{"model":"mock","input":"hi"}`), http.StatusOK)
		f("GET", "/v1/models", good.Key, nil, http.StatusOK)
	}
}
