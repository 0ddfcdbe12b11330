// Package valkeytest runs real valkey-server processes for tests: each on its
// own free loopback port, each stopped when the test that started it ends. It
// lets the Valkey code be tested against the server it runs against in
// production, including outages (Stop) and recoveries (Restart).
package valkeytest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valkey-io/valkey-go"
)

const (
	// readyTimeout bounds how long a fresh server may take to answer PING.
	// valkey-server starts in a few milliseconds; the margin is for loaded CI
	// machines and the race detector.
	readyTimeout = 5 * time.Second
	// stopTimeout is how long Stop waits for a graceful exit before SIGKILL.
	stopTimeout = 5 * time.Second
	// startAttempts is how many free ports Start tries: between picking a
	// port and the server binding it, another process may take it.
	startAttempts = 3
	// commandTimeout bounds Do and the readiness probes.
	commandTimeout = 5 * time.Second
)

// installHint says how to get valkey-server when it is missing.
const installHint = "valkey-server is not on PATH; install it with `make deps` (Debian/Ubuntu: apt-get install valkey-server)"

// Server is one valkey-server process owned by a test. Its methods are safe
// for concurrent use.
type Server struct {
	bin     string
	dir     string
	port    int
	cluster bool

	mu     sync.Mutex
	proc   *process // nil while stopped
	paused bool
}

// process is one run of valkey-server; Restart makes a new one.
type process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // Wait's result, set before done is closed
}

// Start runs a valkey-server on a free 127.0.0.1 port, with no background
// saves or append-only file (only Stop saves), waits until it answers PING
// and kills it when t ends. Without valkey-server
// on PATH it skips t, or fails it when CI=true so CI cannot pass by skipping.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// start is Start, and StartCluster when cluster is set.
func start(t testing.TB, cluster bool) *Server {
	t.Helper()
	bin, err := exec.LookPath("valkey-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("valkeytest: " + installHint)
		}
		t.Skip("valkeytest: " + installHint)
	}
	s := &Server{bin: bin, dir: t.TempDir(), cluster: cluster}
	// Registered after TempDir, so it runs first: the directory is removed
	// only once the server that writes into it is gone.
	t.Cleanup(s.close)
	for range startAttempts {
		if s.port, err = freePort(); err != nil {
			t.Fatalf("valkeytest: %v", err)
		}
		var p *process
		if p, err = s.start(); err == nil {
			s.mu.Lock()
			s.proc = p
			s.mu.Unlock()
			return s
		}
	}
	t.Fatalf("valkeytest: %v", err)
	return nil
}

// Addr returns the server's host:port. It stays the same across Restart.
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Stop shuts the server down with SIGTERM and waits for it to exit, so that
// clients see an outage: connections are closed and new ones refused. It
// first asks the server to SAVE, so Restart brings back the same data, as a
// restart of a persistent server would. Stopping a stopped server does
// nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	p, paused := s.proc, s.paused
	s.proc, s.paused = nil, false
	s.mu.Unlock()
	if p == nil {
		return
	}
	if paused {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
	// Best effort: if SAVE fails the restarted server is merely empty.
	_, _ = rawCommand(s.Addr(), time.Second, "SAVE")
	p.stop(syscall.SIGTERM)
}

// Restart starts the server again on the same port and directory after Stop,
// and waits until it answers PING. Clients made before keep working once they
// reconnect. It retries for a few seconds when the port cannot be bound yet.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	running := s.proc != nil
	s.mu.Unlock()
	if running {
		t.Fatal("valkeytest: Restart of a running server; call Stop first")
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		p, err := s.start()
		if err == nil {
			s.mu.Lock()
			s.proc = p
			s.mu.Unlock()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("valkeytest: restart on %s: %v", s.Addr(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Pause freezes the server with SIGSTOP: the kernel still accepts
// connections, but nothing answers, as with a hung or partitioned server.
// Resume or Stop ends it.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGSTOP, true)
}

// Resume lets a paused server run again with SIGCONT.
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGCONT, false)
}

// signal sends sig to the running server and records whether it is paused.
func (s *Server) signal(t testing.TB, sig syscall.Signal, paused bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		t.Fatalf("valkeytest: %v to a stopped server", sig)
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("valkeytest: %v: %v", sig, err)
	}
	s.paused = paused
}

// Client returns a new client of the server for test assertions, closed when
// t ends.
func (s *Server) Client(t testing.TB) valkey.Client {
	t.Helper()
	c, err := s.newClient()
	if err != nil {
		t.Fatalf("valkeytest: client of %s: %v", s.Addr(), err)
	}
	t.Cleanup(c.Close)
	return c
}

// Do runs a raw command, such as Do(t, "CLIENT", "KILL", "TYPE", "pubsub"),
// and returns its reply as text: strings and numbers as they are, nil as
// "(nil)", arrays as "[a b c]". Each call uses a new connection, so a
// connection broken by Stop or CLIENT KILL never fails the next Do. A command
// the server refuses fails t.
func (s *Server) Do(t testing.TB, args ...string) string {
	t.Helper()
	c, err := s.newClient()
	if err != nil {
		t.Fatalf("valkeytest: client of %s: %v", s.Addr(), err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	msg, err := c.Do(ctx, c.B().Arbitrary(args...).Build()).ToMessage()
	if valkey.IsValkeyNil(err) {
		return "(nil)"
	}
	if err != nil {
		t.Fatalf("valkeytest: %s: %v", strings.Join(args, " "), err)
	}
	v, err := msg.ToAny()
	if err != nil {
		t.Fatalf("valkeytest: %s: reply: %v", strings.Join(args, " "), err)
	}
	return fmt.Sprint(v)
}

// newClient returns a client of the server that the caller must close.
func (s *Server) newClient() (valkey.Client, error) {
	return valkey.NewClient(valkey.ClientOption{
		InitAddress:       []string{s.Addr()},
		ForceSingleClient: true,
		DisableCache:      true,
		Dialer:            net.Dialer{Timeout: time.Second},
	})
}

// close is the cleanup of Start: it kills the server, without the graceful
// shutdown of Stop since nothing will read its data again.
func (s *Server) close() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		// SIGKILL ends a paused process too.
		p.stop(syscall.SIGKILL)
	}
}

// start runs valkey-server on s.port and waits until it answers PING, and
// for a cluster until it serves every slot.
func (s *Server) start() (*process, error) {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--dir", s.dir,
	}
	if s.cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	}
	cmd := exec.Command(s.bin, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	err := p.waitReady(s.Addr())
	if err == nil && s.cluster {
		err = s.claimSlots()
	}
	if err != nil {
		p.stop(syscall.SIGKILL)
		return nil, fmt.Errorf("valkey-server on %s: %w", s.Addr(), err)
	}
	return p, nil
}

// waitReady polls addr with PING until the server answers PONG, it exits, or
// readyTimeout passes.
func (p *process) waitReady(addr string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("exited (%v) before answering PING; output:\n%s", p.err, p.out)
		default:
		}
		reply, err := rawCommand(addr, 200*time.Millisecond, "PING")
		if err == nil && reply == "+PONG" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG within %v (last reply %q, error %v); output:\n%s", readyTimeout, reply, err, p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and waits for the process to exit, killing it if it has not
// exited after stopTimeout.
func (p *process) stop(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// rawCommand sends one inline command over a fresh connection and returns the
// first line of the reply. It needs no client library, so it can probe a
// server that is still starting.
func rawCommand(addr string, timeout time.Duration, cmd string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close() //nolint:errcheck // a probe connection
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	if _, err := conn.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close() //nolint:errcheck // only used to find a free port
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, fmt.Errorf("find a free port: unexpected address %v", l.Addr())
	}
	return addr.Port, nil
}

// syncBuffer collects a process's output, written by os/exec's copying
// goroutine and read by failure messages.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
