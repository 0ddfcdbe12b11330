package node

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/tokenhub/tokenhub/config"
)

// TestOpenFailedBoltLeavesNoStore: a store that failed to open is not kept,
// so Close does not run on a typed nil inside the Store interface.
func TestOpenFailedBoltLeavesNoStore(t *testing.T) {
	dir := t.TempDir()
	notADir := filepath.Join(dir, "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte("admin_key: test-admin-key-0123456789abcdefghijklmnopqrstuvwxyz\nstore: {path: "+notADir+"}\n"+
		"models: [{name: m, routes: [{upstream: u}]}]\nupstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1'}]\n"),
		"test.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	n, err := Open(context.Background(), cfg, Options{})
	if err == nil {
		n.Close()
		t.Fatal("Open on a store path that is a file succeeded")
	}
	if n != nil && n.store != nil {
		t.Fatalf("Open failed (%v) but kept store %#v", err, n.store)
	}
}
