package limits

import (
	"testing"

	"github.com/tokenhub/tokenhub/internal/valkeytest"
	"github.com/tokenhub/tokenhub/limits/journal"
)

// crashNode is one node's gate over a ledger that outlives it, a bbolt
// directory ("embedded") or a Valkey ("valkey"), with its journal in a
// directory of its own: the tests of what survives a crash start it, kill
// it and start it again.
type crashNode struct {
	t       *testing.T
	dir     string
	jdir    string
	srv     *valkeytest.Server
	prefix  string
	opts    journal.Options
	closers []func()
}

func newCrashNode(t *testing.T, store, prefix string, opts journal.Options) *crashNode {
	n := &crashNode{t: t, dir: t.TempDir(), jdir: t.TempDir(), prefix: prefix, opts: opts}
	if store == "valkey" {
		n.srv = valkeytest.Start(t)
	}
	return n
}

// start opens the journal and a gate that uses it, not replayed yet.
func (n *crashNode) start() (*Gate, *journal.Journal) {
	t := n.t
	j, err := journal.Open(n.jdir, n.opts)
	if err != nil {
		t.Fatal(err)
	}
	n.closers = append(n.closers, func() { j.Close() })
	var g *Gate
	if n.srv != nil {
		g = sharedGate(t, valkeyClient(t, n.srv), n.prefix, j.NodeID(), nil, ValkeyOptions{})
	} else {
		l, err := OpenBoltLedger(n.dir)
		if err != nil {
			t.Fatal(err)
		}
		n.closers = append(n.closers, func() { l.Close() })
		g = NewGate(l, quiet)
	}
	g.UseJournal(j)
	return g, j
}

// crash drops the node as SIGKILL would, without a flush, but for
// releasing what the kernel releases for a dead process: the journal's map
// and lock (its records were written to the map before), the ledger's lock.
func (n *crashNode) crash() {
	for _, c := range n.closers {
		c()
	}
	n.closers = nil
}
