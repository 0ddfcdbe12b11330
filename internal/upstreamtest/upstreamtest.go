// Package upstreamtest serves scripted OpenAI-like upstreams on loopback
// sockets for tests: each connection answers or drops the requests in the
// order its script says, the way a misbehaving provider or a load balancer
// in front of one does, and the server counts the requests it read whole.
// Tests of the upstream clients (proxy/upstream) and of the whole gateway
// (proxy) share it.
package upstreamtest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ChatBody is the chat completion an Answer step sends to a buffered request.
const ChatBody = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"mock","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`

// Server is an OpenAI-like upstream on a plain TCP listener whose
// connections follow a script, the way a misbehaving provider or a load
// balancer in front of one does. It counts receipts: requests it has read
// whole, which a provider would run and bill.
type Server struct {
	// URL is the base URL to configure the upstream with (".../v1").
	URL      string
	receipts atomic.Int64
	script   []Step

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Step is what a connection does with the request at its position.
type Step int

const (
	// Answer: a 200 with a chat completion, or a short event stream when the
	// request asks for text/event-stream, framed by Content-Length.
	Answer Step = iota
	// Drop: read the whole request, then close without a byte of answer (a
	// provider that crashed or was cut off mid-work).
	Drop
)

// Start serves script on every connection of a new loopback listener; after the script the
// connection is closed, as an upstream's idle timeout closes it.
func Start(t testing.TB, script ...Step) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return Serve(t, ln, "http", script...)
}

// Serve is Start on ln, whose base URL has scheme ("http", or "https" for
// a TLS listener). The test's cleanup closes ln and every connection and
// waits for them.
func Serve(t testing.TB, ln net.Listener, scheme string, script ...Step) *Server {
	t.Helper()
	u := &Server{URL: scheme + "://" + ln.Addr().String() + "/v1", script: script, conns: map[net.Conn]struct{}{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			if u.closed {
				u.mu.Unlock()
				c.Close() //nolint:errcheck // refused: the server is closing
				return
			}
			u.conns[c] = struct{}{}
			u.wg.Add(1)
			u.mu.Unlock()
			go u.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close() //nolint:errcheck // ends the accept loop
		u.mu.Lock()
		u.closed = true
		for c := range u.conns {
			c.Close() //nolint:errcheck // ends its serve loop
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

// StreamBody is a whole chat stream with its usage, as OpenAI sends it
// when asked for usage.
const StreamBody = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n" +
	"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n" +
	"data: [DONE]\n\n"

func (u *Server) serve(c net.Conn) {
	defer u.wg.Done()
	defer func() {
		u.mu.Lock()
		delete(u.conns, c)
		u.mu.Unlock()
		c.Close() //nolint:errcheck // the script is over
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
		if step == Drop {
			return
		}
		ct, body := "application/json", ChatBody
		if req.Header.Get("Accept") == "text/event-stream" {
			ct, body = "text/event-stream", StreamBody
		}
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", ct, len(body), body); err != nil {
			return
		}
	}
}

// WaitPeerClosed waits until the gateway's connections to the upstream at
// url have all seen the upstream close them (TCP state CLOSE_WAIT in
// /proc/net/tcp): the state of a pooled keep-alive connection the upstream
// closed while it was idle.
func WaitPeerClosed(t testing.TB, url string) {
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

// Receipts is how many requests the server has read whole: those a
// provider would run and bill.
func (u *Server) Receipts() int64 { return u.receipts.Load() }

// TLSListener listens on a loopback port with TLS, serving a fresh
// self-signed certificate for 127.0.0.1, which it returns for clients to
// trust.
func TLSListener(t testing.TB) (net.Listener, *x509.Certificate) {
	t.Helper()
	der, priv, cert := SelfSigned(t, "upstream")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pair := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: cert}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}), cert
}

// SelfSigned makes a self-signed ECDSA certificate for 127.0.0.1 named cn,
// valid for an hour either side of now: its DER bytes, key and parsed form.
func SelfSigned(t testing.TB, cn string) ([]byte, *ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return der, priv, cert
}
