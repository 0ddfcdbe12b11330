package limits

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BoltLedger is the embedded Ledger: one bbolt file beside the key store.
// Gate flushes to it in batches (every second by default), so a crash loses
// at most the last batch, while requests never wait for a disk sync.
type BoltLedger struct {
	db *bolt.DB
}

var usageBucket = []byte("usage")

// OpenBoltLedger opens (creating) dir/usage.db.
func OpenBoltLedger(dir string) (*BoltLedger, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("limits: create %s: %w", dir, err)
	}
	path := filepath.Join(dir, "usage.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("limits: open %s (locked by another tokenhub process?): %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(usageBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("limits: init %s: %w", path, err)
	}
	return &BoltLedger{db: db}, nil
}

// usageRecord is MonthUsage as stored, with money as an integer string.
type usageRecord struct {
	Counts
	Spent  int64                  `json:"spent_pico_usd"`
	Models map[string]modelRecord `json:"models,omitempty"`
}

type modelRecord struct {
	Counts
	Spent int64 `json:"spent_pico_usd"`
}

func ledgerKey(keyID string, month Month) []byte {
	return strconv.AppendInt([]byte(keyID+"/"), int64(month), 10)
}

// Load implements Ledger.
func (l *BoltLedger) Load(_ context.Context, keyID string, month Month) (*MonthUsage, error) {
	u := &MonthUsage{KeyID: keyID, Month: month}
	err := l.db.View(func(tx *bolt.Tx) error {
		return decodeUsage(tx.Bucket(usageBucket).Get(ledgerKey(keyID, month)), u)
	})
	if err != nil {
		return nil, fmt.Errorf("limits: load usage of %s: %w", keyID, err)
	}
	return u, nil
}

// Add implements Ledger: every delta in one transaction.
func (l *BoltLedger) Add(_ context.Context, deltas []*MonthUsage) error {
	err := l.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(usageBucket)
		for _, d := range deltas {
			k := ledgerKey(d.KeyID, d.Month)
			u := &MonthUsage{KeyID: d.KeyID, Month: d.Month}
			if err := decodeUsage(b.Get(k), u); err != nil {
				return err
			}
			u.add(d)
			rec := usageRecord{Counts: u.Counts, Spent: int64(u.Spent), Models: map[string]modelRecord{}}
			rec.Counts.Spent = 0
			for name, c := range u.Models {
				mc := *c
				mc.Spent = 0
				rec.Models[name] = modelRecord{Counts: mc, Spent: int64(c.Spent)}
			}
			v, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := b.Put(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("limits: add usage: %w", err)
	}
	return nil
}

func decodeUsage(v []byte, u *MonthUsage) error {
	if v == nil {
		return nil
	}
	var rec usageRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return fmt.Errorf("limits: decode usage of %s: %w", u.KeyID, err)
	}
	u.Counts = rec.Counts
	u.Spent = PicoUSD(rec.Spent)
	for name, m := range rec.Models {
		if u.Models == nil {
			u.Models = make(map[string]*Counts)
		}
		c := m.Counts
		c.Spent = PicoUSD(m.Spent)
		u.Models[name] = &c
	}
	return nil
}

// Close implements Ledger.
func (l *BoltLedger) Close() error { return l.db.Close() }
