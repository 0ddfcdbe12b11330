// Command tokenhub-mock serves the OpenAI-compatible fake upstream of package
// internal/mock over HTTP, for benchmarking a gateway against it by hand.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tokenhub/tokenhub/internal/mock"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tokenhub-mock:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:9100", "address to serve on")
	var o mock.Options
	flag.DurationVar(&o.Latency, "latency", 0, "delay before an answer, or before a stream's first chunk")
	flag.IntVar(&o.Chunks, "chunks", mock.DefaultChunks, "words per answer (content chunks per stream) unless max_tokens is lower")
	flag.DurationVar(&o.ChunkInterval, "interval", 0, "gap between stream chunks")
	flag.IntVar(&o.EmbeddingDims, "embedding-dims", mock.DefaultEmbeddingDims, "embedding length unless the request sets dimensions")
	flag.IntVar(&o.Status, "status", 0, "answer every request with this HTTP status and an OpenAI error (0: answer normally)")
	flag.DurationVar(&o.RetryAfter, "retry-after", 0, "with -status 429 or 503: the retry-after the answers carry")
	flag.BoolVar(&o.Hang, "hang", false, "read every request and never answer it: a stalled provider")
	flag.Float64Var(&o.ErrorRate, "error-rate", 0, "fraction of requests (0 to 1) answered 500, spread evenly")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	slog.Info("tokenhub-mock serving", "addr", ln.Addr().String())
	m := mock.New(o)
	go func() {
		<-ctx.Done()
		m.Close() // answers the requests -hang holds, so shutdown can finish
	}()
	// Let streams in flight finish, but not for ever.
	return mock.Serve(ctx, ln, m.HTTPServer(), 10*time.Second)
}
