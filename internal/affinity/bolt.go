package affinity

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BoltStore is the embedded Store: dir/responses.db, one node's memory.
// Remembers are durable when they return: each is in an fsynced bbolt
// transaction, which the Remembers running at once share (bbolt's Batch), so
// that under load the file's one writer and its fsync are not paid per
// response (BenchmarkRemember).
type BoltStore struct {
	db *bolt.DB
	o  Options
}

var (
	// idsBucket: id → record (appendRecord).
	idsBucket = []byte("ids")
	// ageBucket: created (8 bytes, big-endian unix ms) + id → nothing; its
	// byte order is the ids' age order, oldest first.
	ageBucket = []byte("by-age")
	// metaBucket holds countKey, how many ids idsBucket holds (bbolt counts
	// a bucket's keys only by walking it).
	metaBucket = []byte("meta")
	countKey   = []byte("count")
)

// sweepBatch is how many expired ids one Remember forgets at most, so that
// the first write after a long quiet spell does not hold the file's lock
// for long; each write forgets more than it adds while any are due.
const sweepBatch = 64

// batchDelay is how long a Remember waits for others to share its
// transaction.
const batchDelay = time.Millisecond

// OpenBolt opens (creating) dir/responses.db.
func OpenBolt(dir string, o Options) (*BoltStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("affinity: create %s: %w", dir, err)
	}
	path := filepath.Join(dir, "responses.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("affinity: open %s (locked by another tokenhub process?): %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{idsBucket, ageBucket, metaBucket} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close() //nolint:errcheck // opening failed: that error is returned
		return nil, fmt.Errorf("affinity: init %s: %w", path, err)
	}
	// A lone Remember waits at most this long for company before its
	// fsync; bbolt's default (10ms) would add more than the fsync costs.
	db.MaxBatchDelay = batchDelay
	return &BoltStore{db: db, o: o.withDefaults()}, nil
}

func ageKey(created time.Time, id string) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(id)), uint64(created.UnixMilli()))
	return append(b, id...)
}

// Remember implements Store. It stamps the record with the store's clock,
// forgets what is past the retention, then the oldest ids while the store
// is full.
func (s *BoltStore) Remember(_ context.Context, id string, r Record) error {
	if err := checkID(id); err != nil {
		return err
	}
	now := s.o.Now()
	r.Created = now
	// Batch may run this function again alone, after a shared transaction
	// failed: it reads everything it changes from tx, so a second run does
	// what one would.
	err := s.db.Batch(func(tx *bolt.Tx) error {
		ids, age, meta := tx.Bucket(idsBucket), tx.Bucket(ageBucket), tx.Bucket(metaBucket)
		count := readCount(meta)
		if old := ids.Get([]byte(id)); old != nil {
			if o, err := decodeRecord(old); err == nil {
				if err := age.Delete(ageKey(o.Created, id)); err != nil {
					return err
				}
			}
			count--
		}
		// The oldest first: what expired, then what the cap pushes out.
		c := age.Cursor()
		swept := 0
		for k, _ := c.First(); k != nil; k, _ = c.First() {
			due := swept < sweepBatch && len(k) >= 8 &&
				expired(Record{Created: time.UnixMilli(int64(binary.BigEndian.Uint64(k)))}, now, s.o.Retention)
			if !due && count < s.o.MaxIDs {
				break
			}
			if err := ids.Delete(k[8:]); err != nil {
				return err
			}
			if err := c.Delete(); err != nil {
				return err
			}
			count--
			swept++
		}
		if err := ids.Put([]byte(id), appendRecord(nil, r)); err != nil {
			return err
		}
		if err := age.Put(ageKey(now, id), nil); err != nil {
			return err
		}
		return writeCount(meta, count+1)
	})
	if err != nil {
		return fmt.Errorf("affinity: remember %s: %w", id, err)
	}
	return nil
}

func readCount(meta *bolt.Bucket) int64 {
	v := meta.Get(countKey)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

func writeCount(meta *bolt.Bucket, n int64) error {
	return meta.Put(countKey, binary.BigEndian.AppendUint64(nil, uint64(max(n, 0))))
}

// Lookup implements Store.
func (s *BoltStore) Lookup(_ context.Context, id string) (Record, bool, error) {
	if checkID(id) != nil {
		return Record{}, false, nil
	}
	var r Record
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(idsBucket).Get([]byte(id))
		if v == nil {
			return nil
		}
		var err error
		r, err = decodeRecord(v)
		found = err == nil
		return err
	})
	if err != nil {
		return Record{}, false, fmt.Errorf("affinity: look up %s: %w", id, err)
	}
	if !found || expired(r, s.o.Now(), s.o.Retention) {
		return Record{}, false, nil
	}
	return r, true, nil
}

// Forget implements Store.
func (s *BoltStore) Forget(_ context.Context, id string) error {
	if checkID(id) != nil {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		ids, meta := tx.Bucket(idsBucket), tx.Bucket(metaBucket)
		v := ids.Get([]byte(id))
		if v == nil {
			return nil
		}
		if r, err := decodeRecord(v); err == nil {
			if err := tx.Bucket(ageBucket).Delete(ageKey(r.Created, id)); err != nil {
				return err
			}
		}
		if err := ids.Delete([]byte(id)); err != nil {
			return err
		}
		return writeCount(meta, readCount(meta)-1)
	})
	if err != nil {
		return fmt.Errorf("affinity: forget %s: %w", id, err)
	}
	return nil
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }
