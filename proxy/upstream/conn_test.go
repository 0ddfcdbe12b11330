package upstream

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/upstreamtest"
)

// socketState is a loopback socket's line in /proc/net/tcp: its TCP state
// ("01" established, "08" close-wait) and whether bytes wait in its receive
// queue; found is false once the socket left the table (reset).
func socketState(t *testing.T, local, remote net.Addr) (state string, queued, found bool) {
	t.Helper()
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp to watch TCP states: %v", err)
	}
	// Both ends: once this socket is gone its port is free, and another
	// connection (another test binary's, run beside) may take it.
	localPort := fmt.Sprintf(":%04X", local.(*net.TCPAddr).Port)
	remotePort := fmt.Sprintf(":%04X", remote.(*net.TCPAddr).Port)
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasSuffix(f[1], localPort) && strings.HasSuffix(f[2], remotePort) {
			return f[3], !strings.HasSuffix(f[4], ":00000000"), true
		}
	}
	return "", false, false
}

// TestUpstreamConnWritesOnlyToOpenConnections: the first write of a request
// on a connection the upstream closed, reset or wrote to unasked fails with
// errNotSent and leaves nothing on the wire, so the request may go elsewhere;
// on a live connection it is written.
func TestUpstreamConnWritesOnlyToOpenConnections(t *testing.T) {
	f := func(name string, reused bool, peer func(net.Conn), arrived func(state string, queued, found bool) bool, wantNotSent bool) {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			received, dialed := make(chan int, 1), make(chan struct{})
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				<-dialed // a reset before the dial returned would fail the dial
				peer(c)
				n, _ := io.Copy(io.Discard, c)
				received <- int(n)
				c.Close()
			}()
			raw, err := net.Dial("tcp", ln.Addr().String())
			close(dialed)
			if err != nil {
				t.Fatal(err)
			}
			u := &Upstream{conns: map[*upstreamConn]struct{}{}}
			conn, err := u.track(raw)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c := conn.(*upstreamConn)
			if reused {
				c.requests = 1 // a request went before on it
			}
			eventually.True(t, "what the peer did reaching the socket", func() bool { return arrived(socketState(t, raw.LocalAddr(), raw.RemoteAddr())) })
			c.SetWriteDeadline(time.Now().Add(5 * time.Second)) // a request begins
			n, err := c.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\n"))
			if got := errors.Is(err, errNotSent); got != wantNotSent || (got && n != 0) {
				t.Fatalf("write: %d bytes, err %v; want errNotSent %v", n, err, wantNotSent)
			}
			if wantNotSent {
				return
			}
			c.Close()
			if got := <-received; got != n {
				t.Fatalf("the peer received %d bytes of the %d written", got, n)
			}
		})
	}
	alive := func(net.Conn) {}
	closed := func(c net.Conn) { c.Close() }
	reset := func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() }
	chatty := func(c net.Conn) { c.Write([]byte("HTTP/1.1 408 Request Timeout\r\n\r\n")) }
	established := func(state string, _, _ bool) bool { return state == "01" }
	finReceived := func(state string, _, _ bool) bool { return state == "08" }
	resetReceived := func(_ string, _, found bool) bool { return !found }
	bytesQueued := func(_ string, queued, _ bool) bool { return queued }

	f("reused, alive: written", true, alive, established, false)
	f("reused, closed by the upstream: not sent", true, closed, finReceived, true)
	f("reused, reset by the upstream: not sent", true, reset, resetReceived, true)
	f("reused, unasked bytes from the upstream: not sent", true, chatty, bytesQueued, true)
	f("fresh, reset by the upstream: the write fails before a byte, not sent", false, reset, resetReceived, true)

	// Within stale_check_after of the previous request's start the probe is
	// skipped: the write goes to the closed connection, as the trade-off says.
	t.Run("reused within stale_check_after: not checked", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		u := &Upstream{conns: map[*upstreamConn]struct{}{}, staleCheck: time.Hour}
		conn, err := u.track(raw)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := conn.(*upstreamConn)
		c.SetWriteDeadline(time.Now().Add(5 * time.Second)) // the first request
		eventually.True(t, "the peer's FIN", func() bool { s, _, _ := socketState(t, raw.LocalAddr(), raw.RemoteAddr()); return s == "08" })
		c.SetWriteDeadline(time.Now().Add(5 * time.Second)) // the next, at once
		if n, err := c.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\n")); errors.Is(err, errNotSent) || n == 0 {
			t.Fatalf("write: %d bytes, err %v; want it written unchecked", n, err)
		}
	})
}

// BenchmarkPeerProbe is the cost the probe adds to each request on a pooled
// connection: one non-blocking peek at a live loopback socket.
func BenchmarkPeerProbe(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var p peerProbe
	p.init(c)
	b.ReportAllocs()
	for b.Loop() {
		if err := p.peerClosed(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestUpstreamTLS: with an https upstream the handshake happens while
// dialing, so a failed one (an untrusted certificate) proves the request was
// never sent and may fail over; a pooled TLS connection the upstream closed
// (close_notify, then FIN) is found before the request is written and the
// request goes on a fresh one; a TLS request taken and dropped is not sent
// again.
func TestUpstreamTLS(t *testing.T) {
	upstream := func(raw *upstreamtest.Server, cert *x509.Certificate, trusted bool) *Upstream {
		c := config.Upstream{Name: "tls", BaseURL: raw.URL, ConnectTimeout: 5 * time.Second, FirstByteTimeout: 10 * time.Second,
			EventTimeout: 10 * time.Second, Timeout: 10 * time.Second, MaxConns: 8, MaxIdleConnDuration: time.Minute}
		u, err := New(&c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(u.Release)
		if trusted {
			u.tls.RootCAs = x509.NewCertPool()
			u.tls.RootCAs.AddCert(cert)
		}
		return u
	}
	call := func(u *Upstream) error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod("POST")
		req.SetRequestURIBytes(u.URI(Chat))
		req.SetBodyString(`{"model":"m"}`)
		if err := u.Do(req, resp, false, time.Now()); err != nil {
			return err
		}
		if resp.StatusCode() != 200 {
			return fmt.Errorf("status %d", resp.StatusCode())
		}
		return nil
	}

	t.Run("untrusted certificate: never sent", func(t *testing.T) {
		ln, cert := upstreamtest.TLSListener(t)
		raw := upstreamtest.Serve(t, ln, "https", upstreamtest.Answer)
		err := call(upstream(raw, cert, false))
		if err == nil || !NeverSent(err) || raw.Receipts() != 0 {
			t.Fatalf("err %v (never sent: %v), %d receipts; want a dial error and none", err, NeverSent(err), raw.Receipts())
		}
	})
	t.Run("pooled connection closed by the upstream: sent on a fresh one", func(t *testing.T) {
		ln, cert := upstreamtest.TLSListener(t)
		raw := upstreamtest.Serve(t, ln, "https", upstreamtest.Answer)
		u := upstream(raw, cert, true)
		for i := range 4 {
			if err := call(u); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			if n := raw.Receipts(); n != int64(i+1) {
				t.Fatalf("after %d requests %d receipts", i+1, n)
			}
			upstreamtest.WaitPeerClosed(t, raw.URL)
		}
	})
	t.Run("taken and dropped: not sent again", func(t *testing.T) {
		ln, cert := upstreamtest.TLSListener(t)
		raw := upstreamtest.Serve(t, ln, "https", upstreamtest.Drop)
		err := call(upstream(raw, cert, true))
		if err == nil || NeverSent(err) || raw.Receipts() != 1 {
			t.Fatalf("err %v (never sent: %v), %d receipts; want a dropped request received once", err, NeverSent(err), raw.Receipts())
		}
	})
}
