//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package upstream

import "net"

// peerProbe has no way to look at a socket here: a pooled connection the
// upstream closed is then found out only after the request was written, and
// the request fails with a 502 rather than being retried.
type peerProbe struct{}

func (*peerProbe) init(net.Conn) {}

func (*peerProbe) peerClosed() error { return nil }
