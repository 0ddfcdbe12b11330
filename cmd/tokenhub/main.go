// Command tokenhub runs the gateway.
//
//	tokenhub [-config FILE]               serve (embedded defaults without -config);
//	                                      SIGHUP reloads the file, SIGTERM or SIGINT drains and exits
//	tokenhub check-config [-config FILE]  validate a config file and exit
//	tokenhub migrate -config FILE [-from DIR]  copy an embedded store into the config's Valkey
//	tokenhub version                      print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/gateway"
	"github.com/tokenhub/tokenhub/keys"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("tokenhub "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config `file` (YAML); the embedded defaults when empty")
	showVersion := fs.Bool("version", false, "print the version and exit")
	from := fs.String("from", "", "migrate: the embedded store `dir` to copy from (default: the config's store.path)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		cmd = "version"
	}
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, "tokenhub", version)
		return 0
	case "check-config":
		if _, err := config.Load(*configPath); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintln(stdout, "config ok")
		return 0
	case "migrate":
		if err := migrate(*configPath, *from, stdout); err != nil {
			fmt.Fprintln(stderr, "tokenhub:", err)
			return 1
		}
		return 0
	case "serve":
		if err := serve(*configPath, stderr); err != nil {
			fmt.Fprintln(stderr, "tokenhub:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "tokenhub: unknown command %q (serve, check-config, migrate, version)\n", cmd)
	return 2
}

func serve(configPath string, stderr io.Writer) error {
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	for _, name := range cfg.DroppedUpstreams {
		log.Info("optional upstream left out: its api_key is empty", "upstream", name)
	}

	node, err := gateway.Open(context.Background(), cfg, log)
	if err != nil {
		return err
	}
	defer node.Close()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (config field listen): %w", cfg.Listen, err)
	}
	var adminLn net.Listener
	if cfg.Admin.Listen != "" {
		if adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			ln.Close() //nolint:errcheck // the other listener failed: that error is the one reported
			return fmt.Errorf("listen on %s (config field admin.listen): %w", cfg.Admin.Listen, err)
		}
	}
	store := "embedded " + cfg.Store.Path
	if cfg.Store.Valkey != nil {
		store = "valkey " + strings.Join(cfg.Store.Valkey.Addrs, ",")
	}
	attrs := []any{"addr", ln.Addr().String(), "version", version, "store", store, "tls", cfg.TLS.Enabled()}
	if adminLn != nil {
		attrs = append(attrs, "admin_addr", adminLn.Addr().String())
	}
	log.Info("tokenhub listening", attrs...)

	// Signals are caught before serving, so none arriving at start is lost.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	served := make(chan error, 2)
	go func() { served <- node.Serve(ln) }()
	if adminLn != nil {
		go func() { served <- node.ServeAdmin(adminLn) }()
	}
	for {
		select {
		case err := <-served:
			return err
		case s := <-sig:
			if s == syscall.SIGHUP {
				// Reload logs its outcome; a refused file leaves the old config serving.
				node.Reload(context.Background()) //nolint:errcheck // Reload logs what it refused and keeps the old config
				continue
			}
			return shutdown(node, cfg.Server.ShutdownTimeout, s, sig, log)
		}
	}
}

// shutdown drains the node: in-flight requests and streams run on for up to
// timeout (or until a second SIGINT or SIGTERM), then what remains is cut;
// every request's spend is settled before the deferred Node.Close flushes it.
func shutdown(node *gateway.Node, timeout time.Duration, s os.Signal, sig <-chan os.Signal, log *slog.Logger) error {
	log.Info("shutting down: no new connections; in-flight requests may finish", "signal", s.String(), "deadline", timeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		for {
			select {
			case s := <-sig:
				if s != syscall.SIGHUP {
					log.Warn("second signal: cutting in-flight requests now", "signal", s.String())
					cancel()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	start := time.Now()
	if err := node.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("shut down; flushing usage", "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// migrate copies the embedded store at from into the Valkey store the
// config names, so a one-node deployment can grow without re-issuing keys.
func migrate(configPath, from string, stdout io.Writer) error {
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	v := cfg.Store.Valkey
	if v == nil {
		return errors.New("migrate: the config has no store.valkey block to copy into")
	}
	if from == "" {
		from = cfg.Store.Path
	}
	ctx := context.Background()
	src, err := keys.OpenBolt(from)
	if err != nil {
		return err
	}
	defer src.Close() //nolint:errcheck // only read from
	dst, err := keys.OpenValkey(ctx, v.StoreOptions())
	if err != nil {
		return err
	}
	defer dst.Close() //nolint:errcheck // every write was acknowledged by Valkey before this
	nKeys, nPlans, err := keys.CopyStore(ctx, dst, src)
	if err != nil {
		return err
	}
	// Running nodes may have cached "unknown" for keys that now exist.
	if err := keys.NewValkeyPubSub(dst.Client(), v.Prefix).Publish(ctx, keys.AllInvalidation); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "copied %d keys and %d plans from %s into valkey %s (prefix %s)\n", nKeys, nPlans, from, strings.Join(v.Addrs, ","), v.Prefix)
	return nil
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
