package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("upstreams: [{name: m, base_url: \"inproc://mock\"}]\nmodels: [{name: mock, routes: [{upstream: m}]}]\n"), 0o600)
	os.WriteFile(bad, []byte("models: [{name: x, routes: [{upstream: nowhere}]}]\n"), 0o600)

	f := func(args string, wantCode int, wantOut string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := run(strings.Fields(args), &out, &errOut)
		if code != wantCode || !strings.Contains(out.String()+errOut.String(), wantOut) {
			t.Fatalf("tokenhub %s: exit %d, output %q%q; want exit %d containing %q", args, code, out.String(), errOut.String(), wantCode, wantOut)
		}
	}
	f("version", 0, "tokenhub dev")
	f("-version", 0, "tokenhub dev")
	f("check-config", 0, "config ok") // the embedded default
	f("check-config -config "+good, 0, "config ok")
	f("check-config -config "+bad, 1, `no upstream named "nowhere"`)
	f("check-config -config "+filepath.Join(dir, "missing.yaml"), 1, "missing.yaml")
	f("frobnicate", 2, "unknown command")
}
