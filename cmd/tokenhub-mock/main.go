// Command tokenhub-mock serves the fake upstream of package internal/mock over
// HTTP, OpenAI's API and Anthropic's Messages API (/v1/messages) side by side,
// for benchmarking or trying a gateway against it by hand.
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
	flag.IntVar(&o.Status, "status", 0, "answer every request with this HTTP status (529: Anthropic's overloaded_error)")
	flag.IntVar(&o.Anthropic.CacheReadInputTokens, "anthropic-cache-read", 0, "cache_read_input_tokens every Messages usage reports")
	flag.IntVar(&o.Anthropic.CacheCreationInputTokens, "anthropic-cache-creation", 0, "cache_creation_input_tokens every Messages usage reports")
	flag.BoolVar(&o.Anthropic.ToolUse, "anthropic-tool-use", false, "call the first tool whenever a Messages request offers tools")
	flag.IntVar(&o.Anthropic.StreamErrorAfter, "anthropic-stream-error-after", 0, "end Messages streams with an overloaded_error event after this many deltas")
	flag.IntVar(&o.Status, "status", 0, "answer every request with this HTTP status and an OpenAI error (0: answer normally)")
	flag.DurationVar(&o.RetryAfter, "retry-after", 0, "with -status 429 or 503: the retry-after the answers carry")
	flag.BoolVar(&o.Hang, "hang", false, "read every request and never answer it: a stalled provider")
	flag.Float64Var(&o.ErrorRate, "error-rate", 0, "fraction of requests (0 to 1) answered 500, spread evenly")
	flag.Parse()
	if o.Status != 0 && (o.Status < 400 || o.Status > 599) {
		return fmt.Errorf("-status %d: want 0 or an HTTP error status, 400 to 599", o.Status)
	}
	// The key is a secret: it comes from the environment, never a flag that
	// ps would show.
	o.Anthropic.APIKey = os.Getenv("TOKENHUB_MOCK_ANTHROPIC_API_KEY")

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
