package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/valkeytest"
	"github.com/tokenhub/tokenhub/internal/valkeyx"
	"github.com/tokenhub/tokenhub/keys"
)

// cacheSettings are the config's cache defaults, which keys takes explicitly.
var cacheSettings = keys.RegistryOptions{MaxKeys: 10_000, NegativeTTL: 2 * time.Second, StaleIfError: 4 * time.Second}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("upstreams: [{name: m, base_url: \"inproc://mock\"}]\nmodels: [{name: mock, routes: [{upstream: m}]}]\n"), 0o600)
	os.WriteFile(bad, []byte("models: [{name: x, routes: [{upstream: nowhere}]}]\n"), 0o600)
	ops := func(name, extra string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("upstreams: [{name: m, base_url: \"inproc://mock\"}]\nmodels: [{name: mock, routes: [{upstream: m}]}]\n"+extra), 0o600)
		return p
	}

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
	f("check-config -config "+ops("tls.yaml", "tls: {cert_file: /etc/hostname}\n"), 1,
		"tls.key_file: missing while tls.cert_file is set; set both to PEM files, or neither to serve plain HTTP")
	f("check-config -config "+ops("tlsfile.yaml", "tls: {cert_file: "+dir+"/no.pem, key_file: "+dir+"/no.key}\n"), 1,
		"tls.cert_file: open "+dir+"/no.pem: no such file or directory; name a readable PEM certificate file")
	f("check-config -config "+ops("admin.yaml", "admin: {listen: nowhere}\n"), 1,
		`admin.listen: "nowhere" is not host:port; write e.g. 127.0.0.1:9090, or remove it to serve the admin API on listen`)
	f("check-config -config "+ops("adminok.yaml", "admin: {listen: \"127.0.0.1:9090\", pprof: true}\n"), 0, "config ok")
	f("frobnicate", 2, "unknown command")
	f("migrate -config "+good, 1, "no store.valkey block")
}

// TestMigrate copies an embedded store into a real Valkey: keys resolve there
// with their plans, and revocations come along.
func TestMigrate(t *testing.T) {
	v := valkeytest.Start(t)
	dir := t.TempDir()
	ctx := context.Background()
	bolt, err := keys.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := keys.NewRegistry(bolt, cacheSettings)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.PutPlan(ctx, &keys.Plan{Name: "team", Models: []string{"mock"}}); err != nil {
		t.Fatal(err)
	}
	_, live, err := reg.CreateKey(ctx, keys.KeySpec{Name: "live", Plan: "team"})
	if err != nil {
		t.Fatal(err)
	}
	gone, goneSecret, err := reg.CreateKey(ctx, keys.KeySpec{Name: "gone", Plan: "team"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.RevokeKey(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	reg.Close()
	bolt.Close()

	cfg := filepath.Join(dir, "valkey.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("admin_key: 0123456789abcdef0123\nstore: {path: %s, valkey: {addrs: [%q], prefix: migrated, timeout: 10s}}\n"+
		"upstreams: [{name: m, base_url: \"inproc://mock\"}]\nmodels: [{name: mock, routes: [{upstream: m}]}]\n", dir, v.Addr())), 0o600)
	var out, errOut bytes.Buffer
	if code := run([]string{"migrate", "-config", cfg}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "copied 2 keys and 1 plans") {
		t.Fatalf("migrate: exit %d: %s%s", code, out.String(), errOut.String())
	}

	dst, err := keys.OpenValkey(ctx, valkeyx.Options{Addrs: []string{v.Addr()}, Prefix: "migrated"})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	vreg, err := keys.NewRegistry(dst, cacheSettings)
	if err != nil {
		t.Fatal(err)
	}
	defer vreg.Close()
	if _, p, err := vreg.Authenticate(ctx, []byte(live)); err != nil || p.Name != "team" {
		t.Fatalf("migrated key: plan %v, err %v", p, err)
	}
	if _, _, err := vreg.Authenticate(ctx, []byte(goneSecret)); !errors.Is(err, keys.ErrRevoked) {
		t.Fatalf("migrated revoked key: %v, want ErrRevoked", err)
	}
	// Running it again changes nothing.
	if code := run([]string{"migrate", "-config", cfg}, &out, &errOut); code != 0 {
		t.Fatalf("second migrate: exit %d: %s", code, errOut.String())
	}
}
