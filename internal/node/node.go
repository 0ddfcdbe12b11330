// Package node is one tokenhub node's state below HTTP: the key store
// (embedded bbolt, or the shared Valkey), the key registry in front of it,
// the listener for other nodes' invalidations, the usage journal and its
// replay, the limits gate, the admin key, and the background loops that
// keep them current. internal/gateway puts the HTTP server (package proxy)
// on top of it, and so do proxy's own tests: there is one wiring.
//
// A Node owns one base context. It is cancelled at the shutdown's cut (Cut)
// or at Close, whichever comes first, and it is the parent of every store
// and gate call the node's requests and its invalidation make, so that
// none of them outlives the cut.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/affinity"
	"github.com/tokenhub/tokenhub/internal/tracing"
	"github.com/tokenhub/tokenhub/keys"
	"github.com/tokenhub/tokenhub/limits"
	"github.com/tokenhub/tokenhub/limits/journal"
)

// Options are what a Node takes besides its configuration.
type Options struct {
	Logger *slog.Logger
	// ObserveValkey, when set, is called after every Valkey command with its
	// duration and error: how the HTTP side's metrics see Valkey. It must
	// exist before the store is opened, so that it sees every call.
	ObserveValkey func(d time.Duration, err error)
	// SpansDropped, when set, counts the spans the trace exporter lost
	// (tracing.Options.Dropped).
	SpansDropped func(reason string, n int)
}

// Node is one node's stores, registry, gate and loops.
type Node struct {
	Registry *keys.Registry
	Gate     *limits.Gate
	// Invalidator is nil with the embedded store (one node, nothing to hear).
	Invalidator *keys.Invalidator
	// AdminKey authenticates the Keys and Plans APIs: the config's, or the
	// one found or generated in AdminKeyFile.
	AdminKey string
	// AdminKeyFile is where the generated admin key was found or written; empty
	// when admin_key comes from the config.
	AdminKeyFile string

	// ResponseIDs remembers which upstream and key created each stored
	// response (the Responses API's follow-ups): in Valkey beside the keys,
	// or a bbolt file of its own.
	ResponseIDs affinity.Store

	// Traces exports a span per inference request (telemetry.traces); nil
	// when tracing is off. Close flushes it.
	Traces *tracing.Tracer

	store   keys.Store
	ledger  limits.Ledger
	journal *journal.Journal

	// base is cancelled by Cut or Close (see the package comment).
	base context.Context
	cut  context.CancelFunc
	// flushes is the context of the gate's flushes; Close cancels it, after
	// the cut, because requests cut at the deadline settle after it and the
	// final flush must carry their spend. Each flush is bounded by a
	// deadline of its own.
	flushes     context.Context
	stopFlushes context.CancelFunc
	// running joins every goroutine the node starts (Go).
	running sync.WaitGroup
}

// Open opens the store the config names, seeds the config's plans, replays
// the usage journal into the store, builds the gate and starts the
// background loops. Close releases everything, on error too.
func Open(ctx context.Context, cfg *config.Config, o Options) (n *Node, err error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	n = &Node{}
	n.base, n.cut = context.WithCancel(context.Background())
	n.flushes, n.stopFlushes = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	var valkeyStore *keys.ValkeyStore
	if v := cfg.Store.Valkey; v != nil {
		opts := v.StoreOptions()
		opts.Observe = o.ObserveValkey
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
		n.ResponseIDs = affinity.NewValkey(valkeyStore.Client(), cfg.Store.Valkey.Prefix, cfg.Store.Valkey.Timeout, idOpts)
	} else {
		// Assigned only on success, as the store is.
		boltIDs, err := affinity.OpenBolt(cfg.Store.Path, idOpts)
		if err != nil {
			return n, err
		}
		n.ResponseIDs = boltIDs
	}

	n.Registry, err = keys.NewRegistry(n.store, keys.RegistryOptions{
		MaxKeys: cfg.Cache.MaxKeys, NegativeTTL: cfg.Cache.NegativeTTL, StaleIfError: cfg.Cache.StaleIfError,
	})
	if err != nil {
		return n, err
	}
	if err = n.Registry.SeedPlans(ctx, KeyPlans(cfg.Plans)); err != nil {
		return n, fmt.Errorf("node: seed plans from config: %w", err)
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
		return n, fmt.Errorf("node: usage journal: %w", err)
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

	// The node's id names it in its spans' resource (service.instance.id).
	if n.Traces, err = tracing.New(cfg.Telemetry.Traces, tracing.Options{Logger: log, Dropped: o.SpansDropped, InstanceID: n.journal.NodeID()}); err != nil {
		return n, err
	}
	if n.Traces != nil {
		// The endpoint has no credentials in it (config refuses them); the
		// headers, which do, are not logged.
		log.Info("exporting traces", "endpoint", cfg.Telemetry.Traces.Endpoint, "sample", cfg.Telemetry.Traces.Sample)
	}

	n.Gate.UseJournal(n.journal)
	// Before serving and before the flushes start: what the last run
	// answered and did not record goes into the store first.
	if _, err = n.Gate.Replay(ctx); err != nil {
		return n, err
	}

	n.running.Go(func() { n.Gate.Run(n.flushes, time.Second) })
	if n.Invalidator != nil {
		n.Go(n.Invalidator.Run)
	}

	n.AdminKey = cfg.AdminKey
	if n.AdminKey == "" {
		var created bool
		if n.AdminKey, n.AdminKeyFile, created, err = keys.LoadOrCreateAdminKey(cfg.Store.Path); err != nil {
			return n, err
		}
		// The path, never the secret: logs are read by more people than keys should be.
		log.Info("admin key", "file", n.AdminKeyFile, "created", created)
	}
	return n, nil
}

// Base is the node's base context: the parent of the store and gate calls
// its requests make. It is done once the shutdown reached its cut, or the
// node is closed.
func (n *Node) Base() context.Context { return n.base }

// Cut cancels the base context: the shutdown's deadline has passed, and the
// store and gate calls still waiting give up. The gate's flushes go on until
// Close. Cut may be called any number of times.
func (n *Node) Cut() { n.cut() }

// Go runs loop on a goroutine of its own until the base context is done,
// and Close joins it: how the HTTP side's loops (the store watcher) end with
// the node's.
func (n *Node) Go(loop func(ctx context.Context)) {
	n.running.Go(func() { loop(n.base) })
}

// StoreReachable reports whether keys can be read from the store: no read
// failed just now and, with Valkey, invalidation heartbeats make their
// round trip through it.
func (n *Node) StoreReachable() bool {
	return !n.Registry.StoreDown() && (n.Invalidator == nil || n.Invalidator.Healthy())
}

// Close cuts the base context, stops the gate's flushes and waits for every
// loop, the gate's final flush of usage among them; then it releases the
// journal, ledger, cache and store, each joining what it runs. Call it after
// the HTTP side's Shutdown, so that every request's spend has settled.
//
// With Valkey hung, the loops' calls give up as Close cancels them, but
// Close still waits for the gate's final flush (bounded at 5s by limits)
// and for a connection being dialed (the invalidator's resubscription):
// valkey-go's dial and handshake take no context and are bounded by the
// connection timeout, twice store.valkey.timeout.
func (n *Node) Close() {
	n.cut()
	n.stopFlushes()
	n.running.Wait()
	// Requests are over (Close follows the HTTP side's Shutdown): their
	// spans are queued, and go out within the bound.
	ctx, cancel := context.WithTimeout(context.Background(), traceFlushTimeout)
	if err := n.Traces.Shutdown(ctx); err != nil {
		slog.Default().Warn("flushing the traces", "err", err)
	}
	cancel()
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
	if n.Registry != nil {
		n.Registry.Close()
	}
	if n.ResponseIDs != nil {
		// Before the store: with Valkey it shares the store's client.
		if err := n.ResponseIDs.Close(); err != nil {
			slog.Default().Warn("closing the response ids", "err", err)
		}
	}
	if n.store != nil {
		// With Valkey this also fails the commands still waiting for a reply
		// (a hung server's): valkey-go closes its connections.
		if err := n.store.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			slog.Default().Warn("closing the store", "err", err)
		}
	}
}

// traceFlushTimeout bounds Close's wait for the last spans' export: a
// collector down or hung costs a shutdown this much, and those spans.
const traceFlushTimeout = 5 * time.Second

// KeyPlans converts the plans the file declares into the key store's
// plans, field by field; SeedPlans compiles them. config.Validate checked
// them by the same rules, so a node does not refuse a file check-config
// passed. Open seeds them at start, and proxy's Reload at each reload.
func KeyPlans(plans []*config.Plan) []*keys.Plan {
	out := make([]*keys.Plan, 0, len(plans))
	for _, p := range plans {
		out = append(out, &keys.Plan{
			Name: p.Name, Models: slices.Clone(p.Models), RPM: p.RPM, TPM: p.TPM,
			MaxRequestUSD: p.MaxRequestUSD, MonthlyUSD: p.MonthlyUSD,
		})
	}
	return out
}
