package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tokenhub/tokenhub/bench/load"
)

// valkeyScenario measures tokenhub nodes sharing a Valkey, the load split
// across them.
const valkeyScenario = "valkey"

// valkeyNodes starts a valkey-server, the mock and o.nodes tokenhub nodes
// sharing the Valkey, and measures chat completions spread over the nodes
// against the mock directly.
func valkeyNodes(ctx context.Context, o *options, logw io.Writer) (*report, error) {
	if err := o.checkThroughput(); err != nil {
		return nil, err
	}
	if o.nodes < 2 || o.nodes > maxNodes {
		return nil, fmt.Errorf("-nodes %d: want 2 to %d", o.nodes, maxNodes)
	}
	tokenhubBin, valkeyBin, err := clusterBinaries(o, valkeyScenario)
	if err != nil {
		return nil, err
	}
	adminKey, err := randomSecret()
	if err != nil {
		return nil, err
	}
	sc, err := load.NewScenario("chat", benchModel, o.maxTokens)
	if err != nil {
		return nil, err
	}

	st, err := startStack(ctx, logw, stackSpec{valkeyBin: valkeyBin})
	if err != nil {
		return nil, err
	}
	defer st.close()
	gw := gateway{plan: benchPlan(o.limits), adminKey: adminKey, valkeyAddr: st.valkeyAddr,
		routes: []mockRoute{{upstream: "bench", model: benchModel, mockAddr: st.mockAddr, maxConns: 1024}}}
	var nodes []*tokenhub
	procs := []*process{st.valkey}
	nodeAddrs := make([]string, 0, o.nodes)
	for i := range o.nodes {
		name := fmt.Sprintf("tokenhub-%d", i+1)
		// One client key is enough, created on the first node.
		start := startGateway
		if i == 0 {
			start = startTokenhub
		}
		th, err := start(ctx, tokenhubBin, st.dir, name, gw)
		if err != nil {
			return nil, err
		}
		st.onClose(th.proc)
		nodes = append(nodes, th)
		procs = append(procs, th.proc)
		nodeAddrs = append(nodeAddrs, th.addr)
		fmt.Fprintf(logw, "%s serving on %s\n", name, th.addr)
	}
	// The nodes' resident memory once started, summed.
	var idle int64
	for _, n := range nodes {
		if m, err := readMemory(n.proc.pid()); err == nil {
			idle += m.RSS
		}
	}
	name := fmt.Sprintf("tokenhub×%d", o.nodes)
	targets := []*target{
		st.targets[0], // the mock, directly
		{name: name, addrs: nodeAddrs, procs: pids(procs...), metrics: nodeAddrs, adminKey: adminKey},
	}
	// One key, created on the first node, used on every node: each reads it
	// from Valkey once and serves it from its cache after.
	sc.Request.Headers = append(sc.Request.Headers, load.Header{Name: "Authorization", Value: "Bearer " + nodes[0].key})
	plan := "no limits"
	if o.limits {
		plan = "every rate limit and budget, too high to refuse, leased from Valkey"
	}
	what := fmt.Sprintf("buffered chat completions of %d words, spread connection by connection over %d tokenhub nodes sharing one valkey-server; one key, its plan with %s",
		o.maxTokens, o.nodes, plan)
	rep, err := runThroughput(ctx, o, logw, valkeyScenario, what, sc.Request, targets)
	if err != nil {
		return nil, err
	}
	rep.IdleRSS = idle
	rep.Notes = append(rep.Notes,
		fmt.Sprintf("%s: its CPU and peak RSS are those of its %d nodes and valkey-server together; allocations are the nodes'", name, o.nodes),
		"nginx: not measured in this scenario (see chat)")
	return rep, nil
}
