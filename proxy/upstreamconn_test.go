package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// socketState is a loopback socket's line in /proc/net/tcp: its TCP state
// ("01" established, "08" close-wait) and whether bytes wait in its receive
// queue; found is false once the socket left the table (reset).
func socketState(t *testing.T, local net.Addr) (state string, queued, found bool) {
	t.Helper()
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp to watch TCP states: %v", err)
	}
	suffix := fmt.Sprintf(":%04X", local.(*net.TCPAddr).Port)
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasSuffix(f[1], suffix) {
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
			for deadline := time.Now().Add(10 * time.Second); !arrived(socketState(t, raw.LocalAddr())); time.Sleep(2 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("what the peer did never reached the socket")
				}
			}
			c.SetWriteDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck // a request begins
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
	reset := func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() }                 //nolint:errcheck
	chatty := func(c net.Conn) { c.Write([]byte("HTTP/1.1 408 Request Timeout\r\n\r\n")) } //nolint:errcheck
	established := func(state string, _, _ bool) bool { return state == "01" }
	finReceived := func(state string, _, _ bool) bool { return state == "08" }
	resetReceived := func(_ string, _, found bool) bool { return !found }
	bytesQueued := func(_ string, queued, _ bool) bool { return queued }

	f("reused, alive: written", true, alive, established, false)
	f("reused, closed by the upstream: not sent", true, closed, finReceived, true)
	f("reused, reset by the upstream: not sent", true, reset, resetReceived, true)
	f("reused, unasked bytes from the upstream: not sent", true, chatty, bytesQueued, true)
	f("fresh, reset by the upstream: the write fails before a byte, not sent", false, reset, resetReceived, true)
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
			io.Copy(io.Discard, c) //nolint:errcheck
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
