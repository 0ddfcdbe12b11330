package valkeytest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// StartCluster is Start for a one-node Valkey Cluster that serves all 16384
// slots. It enforces what a standalone server lets pass: multi-key commands
// and scripts must keep to one slot. Clients detect cluster mode from it as
// from a real cluster. Each start takes about two seconds: a cluster node
// waits that long (CLUSTER_WRITABLE_DELAY) before it serves writes.
func StartCluster(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

// claimSlots assigns every slot to the node unless it already serves them
// (after Restart, nodes.conf remembers), then waits until the cluster
// reports itself ok.
func (s *Server) claimSlots() error {
	c, err := s.newClient()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	info := func() (string, error) {
		return c.Do(ctx, c.B().ClusterInfo().Build()).ToString()
	}
	st, err := info()
	if err != nil {
		return fmt.Errorf("cluster info: %w", err)
	}
	if strings.Contains(st, "cluster_slots_assigned:0\r\n") {
		if err := c.Do(ctx, c.B().ClusterAddslotsrange().StartSlotEndSlot().StartSlotEndSlot(0, 16383).Build()).Error(); err != nil {
			return fmt.Errorf("cluster addslotsrange: %w", err)
		}
	}
	for !strings.Contains(st, "cluster_state:ok\r\n") {
		if ctx.Err() != nil {
			return fmt.Errorf("cluster not ok within %v:\n%s", readyTimeout, st)
		}
		time.Sleep(20 * time.Millisecond)
		if st, err = info(); err != nil {
			return fmt.Errorf("cluster info: %w", err)
		}
	}
	return nil
}
