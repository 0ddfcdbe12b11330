package keys

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Bucket names of the bbolt file.
const (
	bucketKeys   = "keys"   // key id → key record
	bucketHashes = "hashes" // raw 32-byte secret hash → key id
	bucketPlans  = "plans"  // plan name → plan record
	// bucketPlanUsers maps a plan name to how many unrevoked keys name it
	// (8 bytes big-endian; absent means none), so that DeletePlan checks one
	// entry instead of every key. PutKey maintains it in the transaction
	// that writes the key. Files from before it existed lack the bucket;
	// OpenBolt derives it from the keys, once, when it creates it.
	bucketPlanUsers = "plan-users"
)

// boltLockTimeout is how long OpenBolt waits for another process to release
// the database file before giving up; long enough to ride out a restart,
// short enough that a second instance fails fast instead of hanging.
const boltLockTimeout = time.Second

// BoltStore is the embedded Store: one bbolt file, fsynced on every write, so
// records survive restarts and crashes. Only one process may open it at a time.
type BoltStore struct {
	db   *bolt.DB
	path string
}

// OpenBolt opens or creates dir/tokenhub.db, creating dir with mode 0700 if it
// does not exist.
func OpenBolt(dir string) (*BoltStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keys: open %s: %w", dir, err)
	}
	path := filepath.Join(dir, "tokenhub.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: boltLockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("keys: open %s: locked by another tokenhub process? (%w)", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{bucketKeys, bucketHashes, bucketPlans} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return fmt.Errorf("bucket %s: %w", name, err)
			}
		}
		return derivePlanUsers(tx)
	})
	if err != nil {
		db.Close() //nolint:errcheck // opening failed: that error is returned
		return nil, fmt.Errorf("keys: open %s: %w", path, err)
	}
	return &BoltStore{db: db, path: path}, nil
}

// derivePlanUsers creates bucketPlanUsers from the stored keys if the file
// does not have it yet. It runs in OpenBolt's transaction, which holds the
// file's only writer, so no key write can slip between the count and the
// bucket's creation.
func derivePlanUsers(tx *bolt.Tx) error {
	if tx.Bucket([]byte(bucketPlanUsers)) != nil {
		return nil
	}
	users, err := tx.CreateBucket([]byte(bucketPlanUsers))
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucketPlanUsers, err)
	}
	return tx.Bucket([]byte(bucketKeys)).ForEach(func(_, rec []byte) error {
		k, err := decodeKey(rec)
		if err != nil {
			return err
		}
		if !k.RevokedAt.IsZero() {
			return nil
		}
		return addPlanUser(users, k.Plan, 1)
	})
}

// addPlanUser adds delta to plan's count of unrevoked keys, removing the
// entry at zero.
func addPlanUser(users *bolt.Bucket, plan string, delta int64) error {
	var n uint64
	if b := users.Get([]byte(plan)); len(b) == 8 {
		n = binary.BigEndian.Uint64(b)
	}
	n = uint64(int64(n) + delta)
	if int64(n) <= 0 {
		return users.Delete([]byte(plan))
	}
	return users.Put([]byte(plan), binary.BigEndian.AppendUint64(nil, n))
}

// planUsers returns how many unrevoked keys name plan.
func planUsers(users *bolt.Bucket, plan string) uint64 {
	if b := users.Get([]byte(plan)); len(b) == 8 {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// Path returns the database file's path.
func (s *BoltStore) Path() string { return s.path }

// PutKey implements Store.
func (s *BoltStore) PutKey(ctx context.Context, k *Key) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("keys: put key %s: %w", k.ID, err)
	}
	if k.ID == "" {
		return fmt.Errorf("keys: put key: %w: empty id", ErrInvalidKey)
	}
	rec, err := encodeKey(k)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		keys, hashes := tx.Bucket([]byte(bucketKeys)), tx.Bucket([]byte(bucketHashes))
		if owner := hashes.Get(k.Hash[:]); owner != nil && string(owner) != k.ID {
			return fmt.Errorf("%w: hash already belongs to key %s", ErrInvalidKey, owner)
		}
		var prev *Key
		if old := keys.Get([]byte(k.ID)); old != nil {
			var err error
			if prev, err = decodeKey(old); err != nil {
				return err
			}
		}
		if err := checkPut(prev, k); err != nil {
			return err
		}
		if err := putPlanUsers(tx, prev, k); err != nil {
			return err
		}
		if prev != nil && prev.Hash != k.Hash {
			if err := hashes.Delete(prev.Hash[:]); err != nil {
				return err
			}
		}
		if err := keys.Put([]byte(k.ID), rec); err != nil {
			return err
		}
		return hashes.Put(k.Hash[:], []byte(k.ID))
	})
	if err != nil {
		return fmt.Errorf("keys: put key %s: %w", k.ID, err)
	}
	k.Revision++
	return nil
}

// checkPut enforces PutKey's compare-and-set and terminal revocation: k may
// replace prev (nil when there is no stored record) only if it was derived
// from it and does not clear its revocation.
func checkPut(prev, k *Key) error {
	var stored uint64
	if prev != nil {
		stored = prev.Revision
	}
	if k.Revision != stored {
		return fmt.Errorf("%w: revision %d, stored %d", ErrConflict, k.Revision, stored)
	}
	if prev != nil && !prev.RevokedAt.IsZero() && k.RevokedAt.IsZero() {
		return fmt.Errorf("%w: a revoked key cannot be restored", ErrRevoked)
	}
	return nil
}

// putPlanUsers is PutKey's part in the plan-users invariant: an unrevoked
// key may be written only onto a plan that exists, and the counts follow
// the key from prev (the stored record, nil when none) to k.
func putPlanUsers(tx *bolt.Tx, prev, k *Key) error {
	active := k.RevokedAt.IsZero()
	if active && tx.Bucket([]byte(bucketPlans)).Get([]byte(k.Plan)) == nil {
		return fmt.Errorf("plan %q: %w", k.Plan, ErrPlanNotFound)
	}
	users := tx.Bucket([]byte(bucketPlanUsers))
	if prev != nil && prev.RevokedAt.IsZero() {
		if err := addPlanUser(users, prev.Plan, -1); err != nil {
			return err
		}
	}
	if active {
		return addPlanUser(users, k.Plan, 1)
	}
	return nil
}

// KeyByID implements Store.
func (s *BoltStore) KeyByID(ctx context.Context, id string) (*Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("keys: key %s: %w", id, err)
	}
	var k *Key
	err := s.db.View(func(tx *bolt.Tx) error {
		rec := tx.Bucket([]byte(bucketKeys)).Get([]byte(id))
		if rec == nil {
			return ErrNotFound
		}
		var err error
		k, err = decodeKey(rec)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("keys: key %s: %w", id, err)
	}
	return k, nil
}

// KeyByHash implements Store.
func (s *BoltStore) KeyByHash(ctx context.Context, hash [32]byte) (*Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("keys: key by hash: %w", err)
	}
	var k *Key
	err := s.db.View(func(tx *bolt.Tx) error {
		id := tx.Bucket([]byte(bucketHashes)).Get(hash[:])
		if id == nil {
			return ErrNotFound
		}
		rec := tx.Bucket([]byte(bucketKeys)).Get(id)
		if rec == nil {
			return fmt.Errorf("hash index names key %s, which does not exist", id)
		}
		var err error
		k, err = decodeKey(rec)
		return err
	})
	if err != nil {
		// The hash is as good as the secret for tokenhub itself, so the error
		// names only a prefix of it.
		return nil, fmt.Errorf("keys: key by hash %x…: %w", hash[:4], err)
	}
	return k, nil
}

// Keys implements Store.
func (s *BoltStore) Keys(ctx context.Context) ([]*Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("keys: list keys: %w", err)
	}
	var all []*Key
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketKeys)).ForEach(func(_, rec []byte) error {
			k, err := decodeKey(rec)
			if err != nil {
				return err
			}
			all = append(all, k)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("keys: list keys: %w", err)
	}
	SortKeys(all)
	return all, nil
}

// PutPlan implements Store.
func (s *BoltStore) PutPlan(ctx context.Context, p *Plan) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("keys: put plan %s: %w", p.Name, err)
	}
	if err := copyPlan(p).Compile(); err != nil {
		return fmt.Errorf("keys: put plan: %w", err)
	}
	rec, err := encodePlan(p)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketPlans)).Put([]byte(p.Name), rec)
	})
	if err != nil {
		return fmt.Errorf("keys: put plan %s: %w", p.Name, err)
	}
	return nil
}

// Plan implements Store.
func (s *BoltStore) Plan(ctx context.Context, name string) (*Plan, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("keys: plan %s: %w", name, err)
	}
	if !ValidName(name) {
		return nil, fmt.Errorf("keys: plan %q: %w", name, ErrNotFound)
	}
	var p *Plan
	err := s.db.View(func(tx *bolt.Tx) error {
		rec := tx.Bucket([]byte(bucketPlans)).Get([]byte(name))
		if rec == nil {
			return ErrNotFound
		}
		var err error
		p, err = decodePlan(rec)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("keys: plan %s: %w", name, err)
	}
	return p, nil
}

// Plans implements Store.
func (s *BoltStore) Plans(ctx context.Context) ([]*Plan, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("keys: list plans: %w", err)
	}
	var all []*Plan
	// bbolt iterates in byte order of the keys, which is the order of names.
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketPlans)).ForEach(func(_, rec []byte) error {
			p, err := decodePlan(rec)
			if err != nil {
				return err
			}
			all = append(all, p)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("keys: list plans: %w", err)
	}
	return all, nil
}

// DeletePlan implements Store.
func (s *BoltStore) DeletePlan(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("keys: delete plan %s: %w", name, err)
	}
	if !ValidName(name) {
		return fmt.Errorf("keys: delete plan %q: %w", name, ErrNotFound)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketPlans))
		if b.Get([]byte(name)) == nil {
			return ErrNotFound
		}
		if n := planUsers(tx.Bucket([]byte(bucketPlanUsers)), name); n > 0 {
			return fmt.Errorf("%w by %d unrevoked keys", ErrPlanInUse, n)
		}
		return b.Delete([]byte(name))
	})
	if err != nil {
		return fmt.Errorf("keys: delete plan %s: %w", name, err)
	}
	return nil
}

// Close implements Store. Closing twice is harmless, and so is closing the
// nil *BoltStore a failed OpenBolt returns: callers that keep it in a Store
// interface hold a non-nil interface around it, and clean up with Close.
func (s *BoltStore) Close() error {
	if s == nil || s.db == nil {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("keys: close %s: %w", s.path, err)
	}
	return nil
}
