package keys

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// AdminKeyFile is the name of the file, in the data directory, that holds the
// admin API secret.
const AdminKeyFile = "admin.key"

// LoadOrCreateAdminKey returns the admin secret stored in dir/admin.key,
// creating dir (mode 0700) and the file (mode 0600, holding a new NewSecret)
// if it does not exist yet; created reports which happened. An existing file
// must not be readable by group or others, and must hold a well-formed secret,
// so that a truncated or hand-written weak token is not silently accepted.
func LoadOrCreateAdminKey(dir string) (secret, path string, created bool, err error) {
	path = filepath.Join(dir, AdminKeyFile)
	secret, err = readAdminKey(path)
	if err == nil {
		return secret, path, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", path, false, err
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", path, false, fmt.Errorf("keys: admin key: %w", err)
	}
	secret, err = NewSecret()
	if err != nil {
		return "", path, false, fmt.Errorf("keys: admin key: %w", err)
	}
	won, err := writeFileOnce(path, []byte(secret+"\n"))
	if err != nil {
		return "", path, false, fmt.Errorf("keys: admin key %s: %w", path, err)
	}
	if !won {
		// Another process created the file between our read and our write;
		// its secret is the one in effect.
		secret, err = readAdminKey(path)
		return secret, path, false, err
	}
	return secret, path, true, nil
}

// readAdminKey reads and checks an existing admin key file. Errors for a
// missing file wrap fs.ErrNotExist.
func readAdminKey(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("keys: admin key: %w", err)
	}
	defer f.Close() //nolint:errcheck // only read from
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("keys: admin key: %w", err)
	}
	// Windows reports synthetic permission bits, so the check would only
	// ever fail there.
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("keys: admin key %s is readable by group or others (mode %v); run `chmod 600 %s`", path, fi.Mode().Perm(), path)
	}
	// A secret is 52 bytes; the limit only stops a wrong file from being
	// read whole.
	b, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return "", fmt.Errorf("keys: admin key %s: %w", path, err)
	}
	secret := strings.TrimSpace(string(b))
	if _, err := ParseSecret([]byte(secret)); err != nil {
		return "", fmt.Errorf("keys: admin key %s: %w; delete the file to have a new one generated", path, err)
	}
	return secret, nil
}

// writeFileOnce atomically creates path with data and mode 0600, unless path
// already exists, in which case it reports false. Readers never see a partial
// file: data is written and synced under a temporary name first.
func writeFileOnce(path string, data []byte) (bool, error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone already once linked or renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close() //nolint:errcheck // the failure above is the one returned
		return false, err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close() //nolint:errcheck // the failure above is the one returned
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close() //nolint:errcheck // the failure above is the one returned
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	// A hard link, unlike rename, fails if path exists, so two processes
	// starting together cannot each believe their own secret is in effect.
	// Where links are unsupported, fall back to rename.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			return false, err
		}
	}
	// Make the new directory entry itself durable.
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close() //nolint:errcheck // a directory opened only to sync it
		if err != nil {
			return false, err
		}
	}
	return true, nil
}
