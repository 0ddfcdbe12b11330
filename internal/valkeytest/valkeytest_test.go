package valkeytest

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestStartDo(t *testing.T) {
	s := Start(t)
	f := func(want string, args ...string) {
		t.Helper()
		if got := s.Do(t, args...); got != want {
			t.Fatalf("Do(%q) = %q, want %q", args, got, want)
		}
	}
	f("PONG", "PING")
	f("OK", "SET", "k", "v")
	f("v", "GET", "k")
	f("string", "TYPE", "k")
	f("(nil)", "GET", "missing")
	f("2", "SADD", "set", "a", "b")
	f("[a b]", "SORT", "set", "ALPHA")
	f("0", "PUBSUB", "NUMPAT")
}

func TestClient(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Do(ctx, c.B().Set().Key("k").Value("from client").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if got := s.Do(t, "GET", "k"); got != "from client" {
		t.Fatalf("GET k = %q, want the value the client set", got)
	}
}

func TestServersAreSeparate(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers share %s", a.Addr())
	}
	a.Do(t, "SET", "k", "a")
	if got := b.Do(t, "GET", "k"); got != "(nil)" {
		t.Fatalf("GET k on the other server = %q, want (nil)", got)
	}
}

func TestStopRestart(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	s.Do(t, "SET", "k", "kept")
	addr := s.Addr()

	s.Stop()
	if _, err := rawCommand(addr, time.Second, "PING"); err == nil {
		t.Fatal("PING after Stop succeeded, want a connection error")
	}
	s.Stop() // a second Stop does nothing

	s.Restart(t)
	if s.Addr() != addr {
		t.Fatalf("Addr() after Restart = %s, want %s", s.Addr(), addr)
	}
	if got := s.Do(t, "GET", "k"); got != "kept" {
		t.Fatalf("GET k after Restart = %q, want the value saved by Stop", got)
	}
	// A client made before the outage reconnects by itself.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		v, err := c.Do(ctx, c.B().Get().Key("k").Build()).ToString()
		if err == nil {
			if v != "kept" {
				t.Fatalf("GET k via the old client = %q, want kept", v)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("old client still failing after Restart: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCleanupKillsServer(t *testing.T) {
	var p *process
	t.Run("owner", func(t *testing.T) {
		p = Start(t).proc
	})
	select {
	case <-p.done:
	default:
		t.Fatalf("valkey-server (pid %d) still running after the test that started it ended", p.cmd.Process.Pid)
	}
	if p.cmd.ProcessState == nil || p.cmd.ProcessState.Exited() {
		t.Fatalf("valkey-server state %v, want killed by the cleanup", p.cmd.ProcessState)
	}
}

// recorder is a testing.TB that records how Start gave up instead of ending
// the real test.
type recorder struct {
	testing.TB
	how, msg string
}

func (r *recorder) Skip(args ...any)  { r.how, r.msg = "skip", fmt.Sprint(args...); runtime.Goexit() }
func (r *recorder) Fatal(args ...any) { r.how, r.msg = "fatal", fmt.Sprint(args...); runtime.Goexit() }
func (r *recorder) Fatalf(format string, args ...any) {
	r.how, r.msg = "fatal", fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestMissingBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	f := func(ci, want string) {
		t.Helper()
		t.Setenv("CI", ci)
		r := &recorder{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			Start(r)
		}()
		<-done
		if r.how != want || !strings.Contains(r.msg, "make deps") {
			t.Fatalf("Start without valkey-server, CI=%q: %s %q; want %s with how to install it", ci, r.how, r.msg, want)
		}
	}
	f("", "skip")
	f("false", "skip")
	f("true", "fatal")
}

func TestPauseResume(t *testing.T) {
	s := Start(t)
	s.Pause(t)
	if reply, err := rawCommand(s.Addr(), 200*time.Millisecond, "PING"); err == nil {
		t.Fatalf("PING to a paused server = %q, want a timeout", reply)
	}
	s.Resume(t)
	if got := s.Do(t, "PING"); got != "PONG" {
		t.Fatalf("PING after Resume = %q, want PONG", got)
	}
	s.Pause(t)
	s.Stop() // a paused server stops too
	s.Restart(t)
	if got := s.Do(t, "PING"); got != "PONG" {
		t.Fatalf("PING after Restart = %q, want PONG", got)
	}
}

func TestCluster(t *testing.T) {
	s := StartCluster(t)
	if got := s.Do(t, "CLUSTER", "KEYSLOT", "{a}:x"); got != s.Do(t, "CLUSTER", "KEYSLOT", "{a}:y") {
		t.Fatalf("names with one hash tag in different slots")
	}
	s.Do(t, "MSET", "{a}:x", "1", "{a}:y", "2")
	// The rule a standalone server does not enforce.
	c := s.Client(t)
	err := c.Do(context.Background(), c.B().Arbitrary("MSET").Keys("x", "y").Args("1", "2").Build()).Error()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("MSET across slots = %v, want CROSSSLOT", err)
	}
	s.Stop()
	s.Restart(t)
	if got := s.Do(t, "GET", "{a}:y"); got != "2" {
		t.Fatalf("GET after Restart = %q, want 2", got)
	}
}
