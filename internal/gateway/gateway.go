// Package gateway is one tokenhub process: the node's state (internal/node)
// with the HTTP server (proxy) on top, and how they serve, reload, shut down
// and close. cmd/tokenhub and the tests that run whole nodes open gateways
// through it. It sits above proxy and nothing imports it but cmd/tokenhub.
package gateway

import (
	"context"
	"log/slog"
	"net"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/node"
	"github.com/tokenhub/tokenhub/proxy"
)

// Node is one gateway process: the node's state below HTTP (stores,
// registry, invalidation, journal, gate, loops and admin key; see
// internal/node) and the HTTP server on top of it.
type Node struct {
	*node.Node
	Server *proxy.Server
}

// Open opens the node's state the config names and builds the server over
// it. Serve starts it; Close releases everything.
func Open(ctx context.Context, cfg *config.Config, log *slog.Logger) (n *Node, err error) {
	if log == nil {
		log = slog.Default()
	}
	// Made before the store, so that they see every Valkey call.
	metrics := proxy.NewMetrics()
	state, err := node.Open(ctx, cfg, node.Options{Logger: log, ObserveValkey: metrics.ObserveValkey, SpansDropped: metrics.SpansDropped})
	if err != nil {
		return nil, err
	}
	n = &Node{Node: state}
	n.Server, err = proxy.New(proxy.Options{Config: cfg, Registry: n.Registry, Gate: n.Gate, AdminKey: n.AdminKey, Logger: log, Metrics: metrics, ResponseIDs: n.ResponseIDs,
		BaseContext: n.Base(), Traces: n.Traces})
	if err != nil {
		n.Close()
		return nil, err
	}
	n.Go(func(ctx context.Context) { n.Server.WatchStore(ctx, n.StoreReachable) })
	return n, nil
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
// them and waits for their spend to settle; see proxy.Server.Shutdown. The
// cut also cuts the node's base context, so the store and gate calls that
// requests still wait on give up, a hung Valkey's among them.
func (n *Node) Shutdown(ctx context.Context) error {
	defer context.AfterFunc(ctx, n.Cut)()
	return n.Server.Shutdown(ctx)
}

// Close stops the node's loops and waits for them, the gate's final flush
// of usage among them, releases the node's state, then the server's
// upstreams. Call it after Shutdown.
func (n *Node) Close() {
	n.Node.Close()
	if n.Server != nil {
		n.Server.Close()
	}
}
