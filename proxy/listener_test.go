package proxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"
)

// flakyListener fails its first Accepts with errs, then accepts a pipe.
type flakyListener struct {
	net.Listener
	errs []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	c, _ := net.Pipe()
	return c, nil
}

// TestRetryListener: out of file descriptors and aborted connections pass;
// the listener keeps accepting. Any other error ends it, as before.
func TestRetryListener(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	emfile := &net.OpError{Op: "accept", Err: syscall.EMFILE}
	l := retryListener{Listener: &flakyListener{Listener: ln, errs: []error{emfile, syscall.ECONNABORTED, emfile}}, log: quiet}
	c, err := l.Accept()
	if err != nil || c == nil {
		t.Fatalf("after passing errors: %v %v", c, err)
	}
	c.Close()
	closed := errors.New("use of closed network connection")
	l = retryListener{Listener: &flakyListener{Listener: ln, errs: []error{closed}}, log: quiet}
	if _, err := l.Accept(); err != closed {
		t.Fatalf("a final error came back as %v", err)
	}
}
