package proxy

import (
	"context"
	"log/slog"
	"net"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/node"
)

// Node is internal/gateway.Node for tests inside package proxy, which
// reach into the Server and cannot import gateway (gateway imports proxy):
// the same internal/node state with a Server over it.
type Node struct {
	*node.Node
	Server *Server
}

// OpenNode is internal/gateway.Open for tests in package proxy.
func OpenNode(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Node, error) {
	metrics := NewMetrics()
	state, err := node.Open(ctx, cfg, node.Options{Logger: log, ObserveValkey: metrics.ObserveValkey, SpansDropped: metrics.SpansDropped})
	if err != nil {
		return nil, err
	}
	n := &Node{Node: state}
	if n.Server, err = New(Options{Config: cfg, Registry: n.Registry, Gate: n.Gate, AdminKey: n.AdminKey, Logger: log, Metrics: metrics, ResponseIDs: n.ResponseIDs,
		BaseContext: n.Base(), Traces: n.Traces}); err != nil {
		n.Node.Close()
		return nil, err
	}
	n.Go(func(ctx context.Context) { n.Server.WatchStore(ctx, n.StoreReachable) })
	return n, nil
}

func (n *Node) Serve(ln net.Listener) error      { return n.Server.Serve(ln) }
func (n *Node) ServeAdmin(ln net.Listener) error { return n.Server.ServeAdmin(ln) }
func (n *Node) Reload(ctx context.Context) (*ReloadSummary, error) {
	return n.Server.Reload(ctx)
}

// Shutdown is internal/gateway.Node.Shutdown.
func (n *Node) Shutdown(ctx context.Context) error {
	defer context.AfterFunc(ctx, n.Cut)()
	return n.Server.Shutdown(ctx)
}

// Close is internal/gateway.Node.Close.
func (n *Node) Close() {
	n.Node.Close()
	n.Server.Close()
}
