// Command tokenhub runs the gateway.
//
//	tokenhub [-config FILE]               serve (embedded defaults without -config)
//	tokenhub check-config [-config FILE]  validate a config file and exit
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
	"syscall"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/keys"
	"github.com/tokenhub/tokenhub/proxy"
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
	case "serve":
		if err := serve(*configPath, stderr); err != nil {
			fmt.Fprintln(stderr, "tokenhub:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "tokenhub: unknown command %q (serve, check-config, version)\n", cmd)
	return 2
}

func serve(configPath string, stderr io.Writer) error {
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)

	store, err := keys.OpenBolt(cfg.Store.Path)
	if err != nil {
		return err
	}
	defer store.Close()
	reg, err := keys.NewRegistry(store, keys.RegistryOptions{MaxKeys: cfg.Cache.MaxKeys, NegativeTTL: cfg.Cache.NegativeTTL})
	if err != nil {
		return err
	}
	defer reg.Close()
	if err := reg.SeedPlans(context.Background(), cfg.Plans); err != nil {
		return fmt.Errorf("seed plans from config: %w", err)
	}

	adminKey := cfg.AdminKey
	if adminKey == "" {
		secret, path, created, err := keys.LoadOrCreateAdminKey(cfg.Store.Path)
		if err != nil {
			return err
		}
		adminKey = secret
		// The path, never the secret: logs are read by more people than keys should be.
		log.Info("admin key", "file", path, "created", created)
	}

	srv, err := proxy.New(proxy.Options{Config: cfg, Registry: reg, AdminKey: adminKey, Logger: log})
	if err != nil {
		return err
	}
	defer srv.Close()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (config field listen): %w", cfg.Listen, err)
	}
	log.Info("tokenhub listening", "addr", ln.Addr().String(), "version", version, "store", cfg.Store.Path)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case err := <-served:
		return err
	case s := <-sig:
		log.Info("shutting down", "signal", s.String(), "deadline", cfg.Server.ShutdownTimeout.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
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
