package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// valkeyHint says how to get valkey-server when it is missing.
const valkeyHint = "`make deps` installs it (Debian/Ubuntu: apt-get install valkey-server), or point -valkey at one"

// valkeyStartAttempts is how many free ports startValkey tries: between
// picking a port and the server binding it, another process may take it.
const valkeyStartAttempts = 3

// startValkey runs bin as a throwaway valkey-server on a free loopback port,
// with nothing saved to disk and its working files inside dir, and waits
// until it answers PING.
func startValkey(ctx context.Context, bin, dir string) (proc *process, addr string, err error) {
	data := filepath.Join(dir, "valkey")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, "", fmt.Errorf("valkey: %w", err)
	}
	for range valkeyStartAttempts {
		if addr, err = freeAddr(); err != nil {
			return nil, "", err
		}
		_, port, _ := net.SplitHostPort(addr)
		proc, err = startProcess("valkey-server", filepath.Join(dir, "valkey.log"), bin,
			"--port", port, "--bind", "127.0.0.1", "--protected-mode", "no",
			"--save", "", "--appendonly", "no", "--dir", data)
		if err != nil {
			return nil, "", err
		}
		if err = waitPing(ctx, proc, addr); err == nil {
			return proc, addr, nil
		}
		proc.stop(5 * time.Second)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", err
}

// waitPing polls addr with PING until the server answers PONG, the process
// exits, ctx ends or startupTimeout passes.
func waitPing(ctx context.Context, p *process, addr string) error {
	return waitUntil(ctx, p, p.name+" on "+addr, "PING", 20*time.Millisecond, func() error {
		reply, err := ping(addr)
		if err == nil && reply != "+PONG" {
			err = fmt.Errorf("reply %q", reply)
		}
		return err
	})
}

// ping sends an inline PING over a fresh connection and returns the reply's
// first line: no client library is needed to probe a server still starting.
func ping(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return "", err
	}
	defer conn.Close() //nolint:errcheck // a probe connection: its answer was read
	if err := conn.SetDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		return "", err
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}
