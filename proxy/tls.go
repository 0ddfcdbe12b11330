package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/tokenhub/tokenhub/config"
)

// certificate is the TLS certificate the listeners serve. A reload swaps it
// whole, so a handshake gets the old pair or the new one, never a mix, and
// connections already open keep theirs.
type certificate struct {
	current atomic.Pointer[tls.Certificate]
	config  *tls.Config
}

func newCertificate(c config.TLS) (*certificate, error) {
	cert, err := loadCertificate(c)
	if err != nil {
		return nil, err
	}
	ct := &certificate{}
	ct.current.Store(cert)
	ct.config = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"}, // fasthttp speaks HTTP/1.1 only
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return ct.current.Load(), nil },
	}
	return ct, nil
}

// loadCertificate reads the pair the config names. config.Validate has
// checked it already; this read is the one served, and the files may have
// changed since.
func loadCertificate(c config.TLS) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("proxy: tls.cert_file %s and tls.key_file %s: %w", c.CertFile, c.KeyFile, err)
	}
	return &cert, nil
}

// listener returns ln as the servers accept on it: through passing accept
// errors, with TLS when the config has a certificate, and with the first
// request's line ends checked on the plain text and a slot in the body
// budget (see clientConn).
func (s *Server) listener(ln net.Listener) net.Listener {
	ln = retryListener{Listener: ln, log: s.log}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls.config)
	}
	return clientListener{Listener: ln, bodies: &s.bodies}
}
