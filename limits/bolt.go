package limits

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
	bolt "go.etcd.io/bbolt"
)

// BoltLedger is the embedded Ledger: one bbolt file beside the key store.
// Gate flushes to it in batches (every second by default), so a crash loses
// at most the last batch, while requests never wait for a disk sync.
type BoltLedger struct {
	db *bolt.DB
}

var (
	usageBucket = []byte("usage")
	// appliedBucket holds, per "<key id>/<month>", the sequence number of
	// the newest journal record of that key-month in the usage bucket: the
	// records at or below it are applied and replay skips them.
	appliedBucket = []byte("journal-applied")
)

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
		if _, err := tx.CreateBucketIfNotExists(usageBucket); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(appliedBucket)
		return err
	}); err != nil {
		db.Close() //nolint:errcheck // opening failed: that error is returned
		return nil, fmt.Errorf("limits: init %s: %w", path, err)
	}
	return &BoltLedger{db: db}, nil
}

// usageRecord is MonthUsage as stored before records became binary (see
// appendRecord); such records are still read.
type usageRecord struct {
	Counts
	Spent  int64                  `json:"spent_pico_usd"`
	Models map[string]modelRecord `json:"models,omitempty"`
}

type modelRecord struct {
	Counts
	Spent int64 `json:"spent_pico_usd"`
}

// ledgerKey appends a record's key, "<key id>/<month>", to b.
func ledgerKey(b []byte, keyID string, month Month) []byte {
	b = append(b, keyID...)
	b = append(b, '/')
	return strconv.AppendInt(b, int64(month), 10)
}

// Load implements Ledger.
func (l *BoltLedger) Load(_ context.Context, keyID string, month Month) (*MonthUsage, error) {
	u := &MonthUsage{KeyID: keyID, Month: month}
	err := l.db.View(func(tx *bolt.Tx) error {
		return decodeUsage(tx.Bucket(usageBucket).Get(ledgerKey(nil, keyID, month)), u)
	})
	if err != nil {
		return nil, fmt.Errorf("limits: load usage of %s: %w", keyID, err)
	}
	return u, nil
}

// Add implements Ledger: every delta in one transaction. Each record is
// read, added to and written back in a compact binary form, built in one
// arena per call: with traffic spread over many keys a flush writes one
// record per key used, so its cost per record is what bounds it.
func (l *BoltLedger) Add(_ context.Context, deltas []*MonthUsage) error {
	err := l.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(usageBucket)
		// bbolt keeps the key and value slices until the transaction
		// commits; an arena that grows leaves earlier records in its old
		// array, which stays valid.
		arena := make([]byte, 0, 64*len(deltas))
		for _, d := range deltas {
			start := len(arena)
			arena = ledgerKey(arena, d.KeyID, d.Month)
			k := arena[start:len(arena):len(arena)]
			start = len(arena)
			var err error
			if arena, err = mergeRecord(arena, b.Get(k), d); err != nil {
				return fmt.Errorf("limits: usage of %s: %w", d.KeyID, err)
			}
			if err := b.Put(k, arena[start:len(arena):len(arena)]); err != nil {
				return err
			}
			if d.Seq > 0 {
				// In the same transaction as the counts: applied, and
				// known to be, together or not at all.
				if err := putApplied(tx.Bucket(appliedBucket), k, d.Seq); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("limits: add usage: %w", err)
	}
	return nil
}

func putApplied(b *bolt.Bucket, k []byte, seq int64) error {
	if old := b.Get(k); len(old) == 8 && int64(binary.BigEndian.Uint64(old)) >= seq {
		return nil
	}
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(seq))
	return b.Put(k, v)
}

// Applied returns the sequence number of the newest journal record of a
// key-month the ledger holds (0 for none).
func (l *BoltLedger) Applied(_ context.Context, keyID string, month Month) (int64, error) {
	var seq int64
	err := l.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(appliedBucket).Get(ledgerKey(nil, keyID, month)); len(v) == 8 {
			seq = int64(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("limits: journal sequence of %s: %w", keyID, err)
	}
	return seq, nil
}

// A binary record opens with its version; JSON records open with '{'.
// recordV1 records hold four counts each (no cached tokens); recordV2 five
// (no cache-write tokens); recordV3, what is written now, six. All are read,
// so a ledger an older version wrote keeps its counts, and the first Add to
// a record rewrites it as recordV3. An older version refuses a recordV3
// record (an error, never a misread count).
const (
	recordV1 = 1
	recordV2 = 2
	recordV3 = 3
)

// appendCounts appends c as six uvarints (recordV3): each version's counts
// are the previous one's and one more, so an older record is a prefix.
func appendCounts(b []byte, c *Counts) []byte {
	b = binary.AppendUvarint(b, uint64(c.Requests))
	b = binary.AppendUvarint(b, uint64(c.PromptTokens))
	b = binary.AppendUvarint(b, uint64(c.CompletionTokens))
	b = binary.AppendUvarint(b, uint64(c.Spent))
	b = binary.AppendUvarint(b, uint64(c.CachedTokens))
	return binary.AppendUvarint(b, uint64(c.CacheWriteTokens))
}

// readCounts reads what appendCounts wrote in a record of version, which
// for recordV1 lacks the cached count and for recordV1 and recordV2 the
// cache-write count.
func readCounts(v []byte, version byte) (Counts, []byte, bool) {
	var f [6]uint64
	fields := f[:]
	switch version {
	case recordV1:
		fields = f[:4]
	case recordV2:
		fields = f[:5]
	}
	for i := range fields {
		x, n := binary.Uvarint(v)
		if n <= 0 {
			return Counts{}, nil, false
		}
		f[i], v = x, v[n:]
	}
	return Counts{Requests: int64(f[0]), PromptTokens: int64(f[1]), CompletionTokens: int64(f[2]), Spent: usd.Pico(f[3]),
		CachedTokens: int64(f[4]), CacheWriteTokens: int64(f[5])}, v, true
}

// binaryRecord reports whether v, a stored record, is binary (else JSON).
func binaryRecord(v []byte) bool { return v[0] == recordV1 || v[0] == recordV2 || v[0] == recordV3 }

// mergeRecord appends to b the record of old (binary, JSON, or nil for
// none) plus d: version, totals, the number of models, then each model's
// name (uvarint length, bytes) and counts. Models d does not touch are
// copied as they are, without decoding them into a map.
func mergeRecord(b, old []byte, d *MonthUsage) ([]byte, error) {
	if len(old) > 0 && !binaryRecord(old) {
		return mergeSlow(b, old, d) // a JSON record of an earlier version
	}
	var total Counts
	var models uint64
	var rest []byte
	var version byte
	if len(old) > 0 {
		var ok bool
		version = old[0]
		if total, rest, ok = readCounts(old[1:], version); ok {
			models, rest, ok = uvarint(rest)
		}
		if !ok {
			return b, errors.New("corrupt usage record")
		}
	}
	total.add(&d.Counts)
	start := len(b)
	b = append(b, recordV3)
	b = appendCounts(b, &total)
	countAt := len(b)
	b = binary.AppendUvarint(b, 0) // rewritten below when it is not 0
	n := uint64(0)
	seen := 0
	for range models {
		name, r, ok := readName(rest)
		if !ok {
			return b, errors.New("corrupt usage record")
		}
		c, r, ok := readCounts(r, version)
		if !ok {
			return b, errors.New("corrupt usage record")
		}
		rest = r
		if dc := d.Models[string(name)]; dc != nil { // no allocation: the compiler looks it up in place
			c.add(dc)
			seen++
		}
		b = appendModel(b, name, &c)
		n++
	}
	if seen < len(d.Models) {
		// Names new to the record, in no particular order: readers make a map.
		for name, c := range d.Models {
			if c.zero() || recordHas(old, name) {
				continue
			}
			b = appendModel(b, []byte(name), c)
			n++
		}
	}
	if n > 127 {
		// The count was written as one byte, which holds up to 127; a
		// larger one would need the models moved along.
		return mergeSlow(b[:start], old, d)
	}
	b[countAt] = byte(n)
	return b, nil
}

// mergeSlow merges through a MonthUsage: for JSON records, and for records
// of over 127 models.
func mergeSlow(b, old []byte, d *MonthUsage) ([]byte, error) {
	u := &MonthUsage{KeyID: d.KeyID, Month: d.Month}
	if err := decodeUsage(old, u); err != nil {
		return b, err
	}
	u.add(d)
	return appendRecord(b, u), nil
}

func appendModel(b, name []byte, c *Counts) []byte {
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	return appendCounts(b, c)
}

// appendRecord appends u as a binary record.
func appendRecord(b []byte, u *MonthUsage) []byte {
	b = append(b, recordV3)
	b = appendCounts(b, &u.Counts)
	b = binary.AppendUvarint(b, uint64(len(u.Models)))
	for name, c := range u.Models {
		b = appendModel(b, []byte(name), c)
	}
	return b
}

// recordHas reports whether the binary record v has a model named name.
func recordHas(v []byte, name string) bool {
	if len(v) == 0 {
		return false
	}
	_, rest, ok := readCounts(v[1:], v[0])
	if !ok {
		return false
	}
	models, rest, ok := uvarint(rest)
	for i := uint64(0); ok && i < models; i++ {
		var got []byte
		if got, rest, ok = readName(rest); ok {
			if string(got) == name {
				return true
			}
			_, rest, ok = readCounts(rest, v[0])
		}
	}
	return false
}

func uvarint(v []byte) (uint64, []byte, bool) {
	x, n := binary.Uvarint(v)
	if n <= 0 {
		return 0, nil, false
	}
	return x, v[n:], true
}

func readName(v []byte) ([]byte, []byte, bool) {
	l, v, ok := uvarint(v)
	if !ok || l > uint64(len(v)) {
		return nil, nil, false
	}
	return v[:l], v[l:], true
}

// decodeUsage reads a stored record, binary or JSON, into u.
func decodeUsage(v []byte, u *MonthUsage) error {
	if len(v) == 0 {
		return nil
	}
	if !binaryRecord(v) {
		return decodeJSONUsage(v, u)
	}
	total, rest, ok := readCounts(v[1:], v[0])
	models, rest, ok2 := uvarint(rest)
	if !ok || !ok2 {
		return fmt.Errorf("limits: decode usage of %s: corrupt record", u.KeyID)
	}
	u.Counts = total
	for range models {
		name, r, ok := readName(rest)
		if !ok {
			return fmt.Errorf("limits: decode usage of %s: corrupt record", u.KeyID)
		}
		c, r, ok := readCounts(r, v[0])
		if !ok {
			return fmt.Errorf("limits: decode usage of %s: corrupt record", u.KeyID)
		}
		rest = r
		if u.Models == nil {
			u.Models = make(map[string]*Counts)
		}
		u.Models[string(name)] = &c
	}
	return nil
}

func decodeJSONUsage(v []byte, u *MonthUsage) error {
	var rec usageRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return fmt.Errorf("limits: decode usage of %s: %w", u.KeyID, err)
	}
	u.Counts = rec.Counts
	u.Spent = usd.Pico(rec.Spent)
	for name, m := range rec.Models {
		if u.Models == nil {
			u.Models = make(map[string]*Counts)
		}
		c := m.Counts
		c.Spent = usd.Pico(m.Spent)
		u.Models[name] = &c
	}
	return nil
}

// Close implements Ledger.
func (l *BoltLedger) Close() error { return l.db.Close() }
