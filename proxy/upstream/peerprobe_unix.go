//go:build linux || darwin || freebsd || netbsd || openbsd

package upstream

import (
	"net"
	"syscall"
)

// peerProbe looks at a connection's socket, without blocking and without
// consuming a byte, for what the upstream sent while it was idle: its FIN or
// reset when it closed it, or bytes nobody asked for.
type peerProbe struct {
	raw syscall.RawConn // nil when the connection has no socket
	// peek is made once per connection: a closure made per call would
	// allocate on every request.
	peek func(fd uintptr)
	n    int
	err  error
	buf  [1]byte
}

func (p *peerProbe) init(conn net.Conn) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return // the in-process mock's in-memory pipe
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	p.raw = raw
	p.peek = func(fd uintptr) {
		p.n, _, p.err = syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}
}

// peerClosed reports why the connection cannot carry a new request, or nil
// when nothing arrived on it: io.EOF when the upstream closed it, its reset,
// or errUnsolicited. Control, unlike Read, ignores the read deadline left
// from the previous request, which may have passed while the connection idled.
func (p *peerProbe) peerClosed() error {
	if p.raw == nil {
		return nil
	}
	if err := p.raw.Control(p.peek); err != nil {
		return nil // closed under us: the write will say so
	}
	switch {
	case p.err == syscall.EAGAIN || p.err == syscall.EWOULDBLOCK:
		return nil
	case p.err != nil:
		return p.err
	case p.n == 0:
		return errPeerClosed
	}
	return errUnsolicited
}
