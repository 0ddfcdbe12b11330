package keys_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/keys"
	"github.com/tokenhub/tokenhub/keys/storetest"
	bolterrors "go.etcd.io/bbolt/errors"
)

func TestBoltStore(t *testing.T) {
	storetest.Run(t, storetest.Factory{
		Open: func(t *testing.T) keys.Store {
			s, err := keys.OpenBolt(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Reopen: func(t *testing.T, old keys.Store) keys.Store {
			dir := filepath.Dir(old.(*keys.BoltStore).Path())
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			s, err := keys.OpenBolt(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	})
}

func TestOpenBoltLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := keys.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// bbolt's flock is per open file, so a second open in this process
	// contends exactly like a second tokenhub process would.
	s2, err := keys.OpenBolt(dir)
	if err == nil {
		s2.Close()
		t.Fatal("second OpenBolt of the same dir succeeded, want a lock error")
	}
	if !errors.Is(err, bolterrors.ErrTimeout) || !strings.Contains(err.Error(), "locked by another tokenhub process?") {
		t.Fatalf("second OpenBolt error = %q, want a timeout naming the other process", err)
	}
}

func TestOpenBoltCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "nested")
	s, err := keys.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := func(path string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Fatalf("%s has mode %v, want %v", path, got, want)
		}
	}
	f(dir, 0o700)
	f(s.Path(), 0o600)
	if s.Path() != filepath.Join(dir, "tokenhub.db") {
		t.Fatalf("Path() = %s, want dir/tokenhub.db", s.Path())
	}
}

func TestOpenBoltNotADirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := keys.OpenBolt(file); err == nil {
		s.Close()
		t.Fatal("OpenBolt on a regular file succeeded")
	}
}

func TestMemStoreConforms(t *testing.T) {
	storetest.Run(t, storetest.Factory{
		Open: func(t *testing.T) keys.Store { return keys.NewMemStoreForTest() },
		Reopen: func(t *testing.T, old keys.Store) keys.Store {
			return keys.ReopenMemStoreForTest(old)
		},
	})
}
