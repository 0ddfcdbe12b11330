package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/keys"
)

// TestServeUnusableStore starts tokenhub on an embedded store it cannot
// open: it must exit 1 saying why, not crash (a second tokenhub on a store in
// use died with SIGSEGV in BoltStore.Close).
func TestServeUnusableStore(t *testing.T) {
	f := func(storePath, want string) {
		t.Helper()
		dir := t.TempDir()
		cfg := filepath.Join(dir, "tokenhub.yaml")
		os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nstore: {path: "+storePath+"}\n"+
			"upstreams: [{name: m, base_url: \"inproc://mock\"}]\nmodels: [{name: mock, routes: [{upstream: m}]}]\n"), 0o600)
		var out, errOut bytes.Buffer
		code := run([]string{"-config", cfg}, &out, &errOut)
		if code != 1 || !strings.Contains(errOut.String(), want) {
			t.Fatalf("tokenhub on store %s: exit %d, stderr %q; want exit 1 containing %q", storePath, code, errOut.String(), want)
		}
	}

	inUse := t.TempDir()
	s, err := keys.OpenBolt(inUse)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f(inUse, "locked by another tokenhub process")

	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	f(notDir, "not a directory")

	if os.Geteuid() != 0 { // root writes through any mode bits
		readOnly := t.TempDir()
		os.Chmod(readOnly, 0o500)
		defer os.Chmod(readOnly, 0o700)
		f(readOnly, "permission denied")
	}
}
