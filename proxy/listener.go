package proxy

import (
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// retryListener keeps accepting through errors that pass: out of file
// descriptors (EMFILE, ENFILE), out of buffers, or a connection aborted
// before it was accepted. fasthttp takes every Accept error but a timeout as
// the end of the listener, so without this a burst of connections past the
// open-file limit would stop the gateway for good. It backs off as net/http
// does, from 5ms to 1s, and logs once per burst.
type retryListener struct {
	net.Listener
	log *slog.Logger
}

func (l retryListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil || !transientAcceptError(err) {
			return c, err
		}
		if delay == 0 {
			delay = 5 * time.Millisecond
			l.log.Warn("accept failed; retrying", "addr", l.Addr().String(), "err", err)
		} else {
			delay = min(2*delay, time.Second)
		}
		time.Sleep(delay)
	}
}

func transientAcceptError(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ECONNRESET)
}

// errBareLF is a request whose header lines end in LF without CR.
var errBareLF = errors.New("proxy: request header line ends with a bare LF")

// clientListener wraps each accepted connection in a clientConn: the check of
// its first request's header block for bare LF line ends, and its slot in the
// node's body budget.
type clientListener struct {
	net.Listener
	bodies *bodyBudget
}

func (l clientListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	return &clientConn{Conn: c, body: bodySlot{budget: l.bodies}}, nil
}

// clientConn is a client connection as the servers see it (ctx.Conn(), with
// TLS or without: the TLS connection is under it).
//
// It refuses a bare LF in the first header block read from it. fasthttp
// waits for CRLFCRLF to end a header block, so a client ending lines in bare
// LF (which RFC 9112 lets a server refuse) would wait, holding the
// connection, until read_timeout; with the check it gets a 400 at once.
// Only the first request is checked: later ones on a keep-alive connection
// come from a client that has already shown it sends CRLF, and scanning every
// read would cost the hot path; a body may hold bare LFs anyway.
//
// It holds what the request being read on it reserved of the body budget;
// Close gives that back, whatever path the request took.
type clientConn struct {
	net.Conn
	done    bool // the first header block has ended (or was refused)
	crlfRun int  // how much of CRLFCRLF the bytes read so far end with
	prev    byte
	scanned int
	body    bodySlot
}

func (c *clientConn) bodySlot() *bodySlot { return &c.body }

// Close gives back the connection's body reservation and closes it; the
// safety net for a request that ends with neither its handler nor the error
// handler run (a failed "100 Continue" write, a hijack's close).
func (c *clientConn) Close() error {
	c.body.close()
	return c.Conn.Close()
}

// strictLinesScanMax bounds the scan: a header block longer than fasthttp's
// read buffer is refused by fasthttp itself (431).
const strictLinesScanMax = 8 << 10

func (c *clientConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.done || n <= 0 {
		return n, err
	}
	for _, b := range p[:n] {
		switch {
		case b == '\n' && c.prev != '\r':
			c.done = true
			return n, errBareLF
		case b == '\r' && (c.crlfRun == 0 || c.crlfRun == 2):
			c.crlfRun++
		case b == '\n' && (c.crlfRun == 1 || c.crlfRun == 3):
			c.crlfRun++
		default:
			c.crlfRun = 0
		}
		c.prev = b
		c.scanned++
		// A block starting with CRLF (a blank line before the request,
		// which RFC 9112 tolerates) is not its end.
		if c.crlfRun == 4 && c.scanned > 4 || c.scanned >= strictLinesScanMax {
			c.done = true
			break
		}
	}
	return n, err
}
