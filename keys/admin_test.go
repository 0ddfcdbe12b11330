package keys

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLoadOrCreateAdminKeyCreatesThenLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	secret, path, created, err := LoadOrCreateAdminKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !created || path != filepath.Join(dir, "admin.key") {
		t.Fatalf("first call: created=%v path=%s; want created at dir/admin.key", created, path)
	}
	if _, err := ParseSecret([]byte(secret)); err != nil {
		t.Fatalf("created admin secret is malformed: %v", err)
	}
	f := func(p string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Fatalf("%s has mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
	f(dir, 0o700)
	f(path, 0o600)
	if b, _ := os.ReadFile(path); string(b) != secret+"\n" {
		t.Fatalf("admin.key holds %q, want the secret and a newline", b)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".admin.key.tmp-*")); len(leftovers) != 0 {
		t.Fatalf("temporary files left behind: %v", leftovers)
	}

	again, _, created, err := LoadOrCreateAdminKey(dir)
	if err != nil || created || again != secret {
		t.Fatalf("second call = %q, created=%v, %v; want the same secret, not created", again, created, err)
	}
}

func TestLoadOrCreateAdminKeyTrims(t *testing.T) {
	dir := t.TempDir()
	secret, _ := NewSecret()
	if err := os.WriteFile(filepath.Join(dir, "admin.key"), []byte("  "+secret+"\r\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, _, created, err := LoadOrCreateAdminKey(dir)
	if err != nil || created || got != secret {
		t.Fatalf("LoadOrCreateAdminKey = %q, %v, %v; want the trimmed secret", got, created, err)
	}
}

func TestLoadOrCreateAdminKeyRejects(t *testing.T) {
	secret, _ := NewSecret()
	f := func(content string, mode os.FileMode, wantErr string) {
		t.Helper()
		dir := t.TempDir()
		path := filepath.Join(dir, "admin.key")
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // WriteFile's mode is subject to umask
			t.Fatal(err)
		}
		got, _, _, err := LoadOrCreateAdminKey(dir)
		if err == nil || !strings.Contains(err.Error(), wantErr) || got != "" {
			t.Fatalf("LoadOrCreateAdminKey(mode %v, %q) = %q, %v; want an error containing %q", mode, content, got, err, wantErr)
		}
		// The operator's file is left alone.
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Fatalf("admin.key was changed to %q", b)
		}
	}
	f(secret, 0o640, "chmod 600")
	f(secret, 0o604, "chmod 600")
	f(secret, 0o644, "chmod 600")
	f("", 0o600, ErrMalformedKey.Error())
	f("changeme", 0o600, ErrMalformedKey.Error())
	f(secret[:51], 0o600, ErrMalformedKey.Error())
}

func TestLoadOrCreateAdminKeyUnreadable(t *testing.T) {
	dir := t.TempDir()
	// A directory where the file should be: neither "missing" nor readable.
	if err := os.Mkdir(filepath.Join(dir, "admin.key"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := LoadOrCreateAdminKey(dir); err == nil {
		t.Fatal("LoadOrCreateAdminKey succeeded with a directory named admin.key")
	}
}

func TestLoadOrCreateAdminKeyConcurrentStarts(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	secrets := make([]string, n)
	var created int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, _, c, err := LoadOrCreateAdminKey(dir)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			secrets[i] = s
			if c {
				created++
			}
		})
	}
	wg.Wait()
	onDisk, err := readAdminKey(filepath.Join(dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range secrets {
		if s != onDisk {
			t.Fatalf("caller %d got %q, but admin.key holds %q", i, s, onDisk)
		}
	}
	if created != 1 {
		t.Fatalf("%d callers report creating the key, want exactly 1", created)
	}
}

func TestReadAdminKeyMissingIsNotExist(t *testing.T) {
	_, err := readAdminKey(filepath.Join(t.TempDir(), "admin.key"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("readAdminKey(missing) = %v, want ErrNotExist", err)
	}
}
