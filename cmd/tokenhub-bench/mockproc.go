package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// mockEnv, set to 1 in this program's environment, makes it serve the mock
// upstream instead of benchmarking: that is how the benchmark runs the mock
// in a process of its own, whose CPU time and memory are the mock's alone.
const mockEnv = "TOKENHUB_BENCH_MOCK"

// startMock runs the mock, answering as o says, in a child process on a free
// loopback port, its log in dir/name.log, and waits until it answers.
func startMock(ctx context.Context, dir, name string, o mock.Options) (*process, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", fmt.Errorf("%s: find this program to run the mock: %w", name, err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	args := []string{"-listen", addr, "-latency", o.Latency.String(), "-chunks", strconv.Itoa(o.Chunks),
		"-interval", o.ChunkInterval.String(), "-embedding-dims", strconv.Itoa(o.EmbeddingDims),
		"-status", strconv.Itoa(o.Status), "-retry-after", o.RetryAfter.String(), "-hang=" + strconv.FormatBool(o.Hang),
		"-error-rate", strconv.FormatFloat(o.ErrorRate, 'g', -1, 64)}
	proc, err := startProcessEnv(name, filepath.Join(dir, name+".log"), []string{mockEnv + "=1"}, exe, args...)
	if err != nil {
		return nil, "", err
	}
	if err := readyOrStop(ctx, proc, "http://"+addr+"/v1/models"); err != nil {
		return nil, "", err
	}
	return proc, addr, nil
}

// serveMock is the mock's process: it serves until SIGTERM or SIGINT, then
// lets answers in flight finish for a few seconds.
func serveMock(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("tokenhub-bench (mock)", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve on")
	var o mock.Options
	fs.DurationVar(&o.Latency, "latency", 0, "delay before an answer, or before a stream's first event")
	fs.IntVar(&o.Chunks, "chunks", 0, "words per answer unless max_tokens is lower; 0 for the mock's default")
	fs.DurationVar(&o.ChunkInterval, "interval", 0, "gap between a stream's events")
	fs.IntVar(&o.EmbeddingDims, "embedding-dims", 0, "embedding length; 0 for the mock's default")
	fs.IntVar(&o.Status, "status", 0, "answer every request with this status and an OpenAI error; 0 to answer normally")
	fs.DurationVar(&o.RetryAfter, "retry-after", 0, "with -status 429 or 503: the retry-after the answers carry")
	fs.BoolVar(&o.Hang, "hang", false, "read every request and never answer it")
	fs.Float64Var(&o.ErrorRate, "error-rate", 0, "fraction of requests answered 500, spread evenly")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ln, err := net.Listen("tcp4", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "mock: listen:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := mock.New(o)
	go func() {
		<-ctx.Done()
		m.Close() // answers the requests -hang holds, so the server can stop
	}()
	if err := mock.Serve(ctx, ln, m.HTTPServer(), 5*time.Second); err != nil {
		fmt.Fprintln(stderr, "mock:", err)
		return 1
	}
	return 0
}
