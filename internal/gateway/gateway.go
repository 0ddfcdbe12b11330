// Package gateway is one tokenhub node's wiring: config -> stores -> gate ->
// upstreams -> servers, and how they start, reload and close. cmd/tokenhub
// and the tests that run whole nodes open gateways through it, so both run
// the same wiring. It sits above proxy, keys and limits and nothing below it
// imports it.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/tokenhub/tokenhub/affinity"
	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/keys"
	"github.com/tokenhub/tokenhub/limits"
	"github.com/tokenhub/tokenhub/limits/journal"
	"github.com/tokenhub/tokenhub/proxy"
)

// Node is one gateway process's worth of parts: the store (embedded, or the
// shared Valkey), the key registry in front of it, the listener for other
// nodes' invalidations, and the HTTP server.
type Node struct {
	Server   *proxy.Server
	Registry *keys.Registry
	Gate     *limits.Gate
	// Invalidator is nil with the embedded store (one node, nothing to hear).
	Invalidator *keys.Invalidator
	// AdminKeyFile is where the generated admin key was found or written; empty
	// when admin_key comes from the config.
	AdminKeyFile string

	store  keys.Store
	ledger limits.Ledger
	// responseIDs remembers which upstream and key created each stored
	// response (affinity): in Valkey beside the keys, or its own bbolt file.
	responseIDs affinity.Store
	journal     *journal.Journal
	// cancel ends the node's background loops; running joins them.
	cancel  context.CancelFunc
	running sync.WaitGroup
}

// Open opens the store the config names, seeds the config's plans and
// builds the server. Serve starts it; Close releases everything.
func Open(ctx context.Context, cfg *config.Config, log *slog.Logger) (n *Node, err error) {
	if log == nil {
		log = slog.Default()
	}
	n = &Node{}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	// Made before the store, so that they see every Valkey call.
	metrics := proxy.NewMetrics()
	var valkeyStore *keys.ValkeyStore
	if v := cfg.Store.Valkey; v != nil {
		opts := v.StoreOptions()
		opts.Observe = metrics.ObserveValkey
		valkeyStore, err = keys.OpenValkey(ctx, opts)
		if err != nil {
			return n, err
		}
		n.store = valkeyStore
	} else {
		// Assigned only on success: a nil *BoltStore in n.store would be a
		// non-nil Store, and Close would run on it.
		boltStore, err := keys.OpenBolt(cfg.Store.Path)
		if err != nil {
			return n, err
		}
		n.store = boltStore
	}

	idOpts := affinity.Options{Retention: cfg.Store.Responses.Retention, MaxIDs: cfg.Store.Responses.MaxIDs}
	if valkeyStore != nil {
		n.responseIDs = affinity.NewValkey(valkeyStore.Client(), cfg.Store.Valkey.Prefix, cfg.Store.Valkey.Timeout, idOpts)
	} else {
		// Assigned only on success, as the store is.
		boltIDs, err := affinity.OpenBolt(cfg.Store.Path, idOpts)
		if err != nil {
			return n, err
		}
		n.responseIDs = boltIDs
	}

	n.Registry, err = keys.NewRegistry(n.store, keys.RegistryOptions{
		MaxKeys: cfg.Cache.MaxKeys, NegativeTTL: cfg.Cache.NegativeTTL, StaleIfError: cfg.Cache.StaleIfError,
	})
	if err != nil {
		return n, err
	}
	if err = n.Registry.SeedPlans(ctx, proxy.KeyPlans(cfg.Plans)); err != nil {
		return n, fmt.Errorf("gateway: seed plans from config: %w", err)
	}
	if valkeyStore != nil {
		// Made before any goroutine starts, so that its error needs no
		// unwinding; it bounds the cache's age from now on, which only errs
		// on the side of re-reading.
		n.Invalidator, err = keys.NewInvalidator(n.Registry, keys.NewValkeyPubSub(valkeyStore.Client(), cfg.Store.Valkey.Prefix),
			keys.InvalidatorOptions{StaleAfter: cfg.Cache.StaleAfter, Logger: log})
		if err != nil {
			return n, err
		}
	}

	// The journal before the Gate: its directory holds the node's id.
	n.journal, err = journal.Open(cfg.Store.JournalDir(), journal.Options{
		SegmentBytes: int64(cfg.Store.Journal.SegmentSize), SyncInterval: cfg.Store.Journal.SyncInterval, Log: log,
	})
	if err != nil {
		return n, fmt.Errorf("gateway: usage journal: %w", err)
	}
	if valkeyStore != nil {
		// Rate limits and budgets are global: nodes lease slices of each key's
		// buckets and budget from Valkey (see limits.NewValkeyGate).
		n.Gate, err = limits.NewValkeyGate(limits.ValkeyOptions{
			Client: valkeyStore.Client(), Prefix: cfg.Store.Valkey.Prefix, Timeout: cfg.Store.Valkey.Timeout,
			// The journal directory's id, unique to it (the journal locks
			// its directory): a restarted node, or one given a dead node's
			// directory, speaks for that node, its usage and its leases.
			NodeID: n.journal.NodeID(),
		}, log)
		if err != nil {
			return n, err
		}
	} else {
		if n.ledger, err = limits.OpenBoltLedger(cfg.Store.Path); err != nil {
			return n, err
		}
		n.Gate = limits.NewGate(n.ledger, log)
	}

	n.Gate.UseJournal(n.journal)
	// Before serving and before the flushes start: what the last run
	// answered and did not record goes into the store first.
	if _, err = n.Gate.Replay(ctx); err != nil {
		return n, err
	}

	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.running.Go(func() { n.Gate.Run(runCtx, time.Second) })
	if n.Invalidator != nil {
		n.running.Go(func() { n.Invalidator.Run(runCtx) })
	}

	adminKey := cfg.AdminKey
	if adminKey == "" {
		var created bool
		if adminKey, n.AdminKeyFile, created, err = keys.LoadOrCreateAdminKey(cfg.Store.Path); err != nil {
			return n, err
		}
		// The path, never the secret: logs are read by more people than keys should be.
		log.Info("admin key", "file", n.AdminKeyFile, "created", created)
	}
	n.Server, err = proxy.New(proxy.Options{Config: cfg, Registry: n.Registry, Gate: n.Gate, AdminKey: adminKey, Logger: log, Metrics: metrics,
		ResponseIDs: n.responseIDs})
	if err != nil {
		return n, err
	}
	n.running.Go(func() { n.Server.WatchStore(runCtx, n.storeReachable) })
	return n, nil
}

// storeReachable reports whether keys can be read from the store: no read
// failed just now and, with Valkey, invalidation heartbeats make their
// round trip through it.
func (n *Node) storeReachable() bool {
	return !n.Registry.StoreDown() && (n.Invalidator == nil || n.Invalidator.Healthy())
}

// Serve accepts connections on ln until Shutdown.
func (n *Node) Serve(ln net.Listener) error { return n.Server.Serve(ln) }

// ServeAdmin accepts connections for the admin routes on ln until Shutdown;
// only when admin.listen is set.
func (n *Node) ServeAdmin(ln net.Listener) error { return n.Server.ServeAdmin(ln) }

// Reload reads the configuration file again and applies its upstreams,
// models, plans and TLS certificate; see proxy.Server.Reload.
func (n *Node) Reload(ctx context.Context) (*proxy.ReloadSummary, error) { return n.Server.Reload(ctx) }

// Shutdown stops accepting, lets open requests run until ctx ends, then cuts
// them and waits for their spend to settle; see proxy.Server.Shutdown.
func (n *Node) Shutdown(ctx context.Context) error { return n.Server.Shutdown(ctx) }

// Close stops the node's loops (the invalidation listener, the store
// watcher, the gate's flushes) and waits for them, the gate's final flush
// of usage among them; then it releases the journal, server, cache and
// store, each joining what it runs. Call it after Shutdown.
func (n *Node) Close() {
	if n.cancel != nil {
		n.cancel()
		n.running.Wait()
	}
	if n.journal != nil {
		// After the final flush: nothing settles any more.
		if err := n.journal.Close(); err != nil {
			slog.Default().Warn("closing the usage journal", "err", err)
		}
	}
	if n.ledger != nil {
		if err := n.ledger.Close(); err != nil {
			slog.Default().Warn("closing the usage ledger", "err", err)
		}
	}
	if n.Server != nil {
		n.Server.Close()
	}
	if n.Registry != nil {
		n.Registry.Close()
	}
	if n.responseIDs != nil {
		if err := n.responseIDs.Close(); err != nil {
			slog.Default().Warn("closing the response ids", "err", err)
		}
	}
	if n.store != nil {
		if err := n.store.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			slog.Default().Warn("closing the store", "err", err)
		}
	}
}
