// Package journal is a node's usage journal: every settled request (and a
// stream's running count as it relays) is appended here before its answer is
// released, so that usage answered survives the process being killed before
// the next flush to the store.
//
// The journal is a directory of segment files of fixed-size records, each
// mapped into memory. An append reserves a slot with one atomic add and copies
// the record into the mapping: no system call and no allocation. The kernel
// owns the mapped pages, so a record written is kept when the process dies,
// even by SIGKILL; what a power loss or kernel crash can lose is bounded by
// the sync interval, at which the mapping is written to disk (msync). Each
// record carries its sequence number and a CRC32C, written last, so a slot
// half-written when the process died is detected and skipped.
package journal

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RecordSize is the size of a record on disk. Segments older versions
// wrote hold records of 160 bytes (legacyRecordSize), which are still read.
const RecordSize = 192

// Longest key id and model name a record holds whole; a longer model name is
// kept as its first bytes and a hash (see Record.Model).
const (
	MaxKeyID = 32
	MaxModel = 64
)

// Kind says what a record is.
type Kind uint8

const (
	// Settle is a request's final usage, counted once.
	Settle Kind = 1
	// Progress is a stream's usage so far (cumulative), superseded by a
	// later Progress or the Settle of the same stream.
	Progress Kind = 2
)

// Record is one entry of the journal.
type Record struct {
	Kind   Kind
	Seq    int64 // set by Append; the order of appends
	Month  int32 // yyyymm
	Stream uint64
	// Counts, the cost in pico-dollars. Cached is the part of Prompt the
	// provider served from its cache, CacheWrite the part it wrote to it
	// (each 0 in records of earlier versions, which had no place for it).
	// Requests is at most MaxRequests.
	Requests, Prompt, Cached, CacheWrite, Completion, Spent int64
	KeyID, Model                                            string
}

// MaxRequests is the most requests one record counts (a record is one
// request; replay settles a stream as one).
const MaxRequests = 1<<32 - 1

// layout of a record, little endian:
//
//	0  crc32c of [4:192)   4 kind|layout2|layout3  5 key length  6 model length  7 zero
//	8  seq   16 month (int32) 20 requests (uint32)
//	24 cached  32 prompt  40 completion  48 spent  56 stream
//	64 key id [32]  96 model [64]  160 cache write  168 zero [24]
//
// A record is written into a segment of its size only, named for it
// ("<base>.192.journal", see segmentName). Segments of older versions are
// named "<base>.journal" and hold 160-byte records, the layout above up to
// 160 (the checksum of [4:160), no cache-write count), which are read as they
// were written, with no cache-write tokens: a journal an older version left
// replays after an upgrade. Of those, the records written before cached
// tokens were counted have the layout2 bit clear, 20 zero and 24 requests
// (int64), and are read with no cached tokens either. An older version
// ignores (and logs) a segment whose name it cannot parse, so after a
// downgrade it leaves the 192-byte segments alone rather than read them as
// 160-byte records; upgrading again replays what they hold that the store
// has not applied.
const (
	offKind, offKeyLen, offModelLen                 = 4, 5, 6
	offSeq, offMonth, offReq                        = 8, 16, 20
	offCached, offPrompt, offCompl, offSpent        = 24, 32, 40, 48
	offReqV1                                        = 24
	offStream, offKey, offModel                     = 56, 64, 96
	offCacheWrite                                   = 160
	legacyRecordSize                                = 160
	layout2                                  byte   = 0x80
	layout3                                  byte   = 0x40
	headerMagic                                     = "tokenhub-journal-v2"
	segmentSuffix                                   = ".journal"
	nodeIDFile                                      = "node-id"
	defaultSegmentBytes                             = 32 << 20
	defaultSyncInterval                             = time.Second
	minSegmentRecords                               = 16
	maxSegmentBytes                          int64  = 1 << 30
	castagnoli                               uint32 = crc32.Castagnoli
)

var crcTable = crc32.MakeTable(castagnoli)

// Options configures a Journal.
type Options struct {
	// SegmentBytes is the size of a segment file; zero means 32 MiB
	// (about 175,000 records).
	SegmentBytes int64
	// SyncInterval is how often the mapping is written to disk, bounding
	// what a power loss can lose; zero means a second.
	SyncInterval time.Duration
	Log          *slog.Logger
}

// Journal is one node's journal. Append is safe for concurrent use.
type Journal struct {
	dir    string
	lock   *os.File
	nodeID string
	log    *slog.Logger
	slots  int64 // records per segment, the header slot included
	sync   time.Duration

	cur atomic.Pointer[segment]

	mu      sync.Mutex // rotation, release, sync, close
	segs    []*segment // oldest first; the last is cur
	closed  bool
	stop    chan struct{}
	stopped chan struct{}
	streams atomic.Uint64
	failed  atomic.Bool
}

// segment is one mapped file: slot 0 is a header, slots 1.. records whose
// seq is base + slot - 1.
type segment struct {
	path      string
	f         *os.File
	data      []byte
	base      int64
	slots     int64
	next      atomic.Int64 // next free slot
	committed atomic.Int64 // records written
	// pins counts the Pins on records of the segment: open streams whose
	// latest record is here. Release keeps the segment while it is not 0.
	pins atomic.Int64
	// legacy: written by an older version, in 160-byte records; only read.
	legacy bool
}

// Pin keeps the segment holding a stream's latest record from being
// removed by Release, however much is appended and applied after it: the
// stream has not settled, so that record is what a replay bills if the
// process dies now. The zero Pin holds nothing. A Pin belongs to one
// stream and is used by one goroutine at a time.
type Pin struct {
	seg  *segment
	slot int64
}

// Open opens the journal in dir, creating it, and starts a new segment for
// appends; the records already there stay for Records until Release.
func Open(dir string, o Options) (*Journal, error) {
	if o.SegmentBytes == 0 {
		o.SegmentBytes = defaultSegmentBytes
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = defaultSyncInterval
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	switch {
	case o.SegmentBytes < minSegmentRecords*RecordSize || o.SegmentBytes > maxSegmentBytes:
		return nil, fmt.Errorf("journal: segment size %d is not between %d and %d bytes", o.SegmentBytes, minSegmentRecords*RecordSize, maxSegmentBytes)
	case o.SyncInterval < 0:
		return nil, fmt.Errorf("journal: sync interval %v is negative", o.SyncInterval)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: create %s: %w", dir, err)
	}
	j := &Journal{dir: dir, log: o.Log, slots: o.SegmentBytes / RecordSize, sync: o.SyncInterval,
		stop: make(chan struct{}), stopped: make(chan struct{})}
	var err error
	if j.lock, err = lockDir(dir); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if j.nodeID, err = loadOrCreateNodeID(dir); err != nil {
		j.lock.Close() //nolint:errcheck // opening failed: that error is returned
		return nil, err
	}
	if err := j.openSegments(); err != nil {
		j.unmapAll()   //nolint:errcheck // opening failed: that error is returned
		j.lock.Close() //nolint:errcheck // likewise
		return nil, err
	}
	// Sequence numbers go on from the last segment's, and never below the
	// clock in microseconds: a store that holds sequence numbers of a node
	// (Valkey, by node id) then never sees one go back, even when every
	// segment was removed.
	base := time.Now().UnixMicro()
	if n := len(j.segs); n > 0 {
		last := j.segs[n-1]
		base = max(base, last.base+last.slots-1)
	}
	seg, err := j.create(base)
	if err != nil {
		j.unmapAll()   //nolint:errcheck // opening failed: that error is returned
		j.lock.Close() //nolint:errcheck // likewise
		return nil, err
	}
	j.segs = append(j.segs, seg)
	j.cur.Store(seg)
	j.streams.Store(uint64(time.Now().UnixNano()))
	go j.syncLoop()
	return j, nil
}

// NodeID is the id stored in the journal's directory, made at its first
// Open: a node that opens the directory again, or another given it, speaks
// for the same node.
func (j *Journal) NodeID() string { return j.nodeID }

// StreamID returns an id for a stream's Progress records, unique in this
// journal across restarts.
func (j *Journal) StreamID() uint64 { return j.streams.Add(1) }

func loadOrCreateNodeID(dir string) (string, error) {
	path := filepath.Join(dir, nodeIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" {
			return "", fmt.Errorf("journal: %s is empty; remove it to make a new node id", path)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("journal: read node id: %w", err)
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("journal: node id: %w", err)
	}
	host, _ := os.Hostname()
	id := host + "-" + hex.EncodeToString(raw[:])
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("journal: write node id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("journal: write node id: %w", err)
	}
	return id, nil
}

// segmentName is the file name of the segment whose first record has seq
// base: the base and the record size, so that the size a segment was
// written with is known from its directory entry, durable before any record.
func segmentName(base int64) string {
	return fmt.Sprintf("%020d.%d%s", base, RecordSize, segmentSuffix)
}

// parseSegmentName reads a segment's base from its name, and whether it is
// one of an older version ("<base>.journal", 160-byte records).
func parseSegmentName(name string) (base int64, legacy, ok bool) {
	stem, found := strings.CutSuffix(name, segmentSuffix)
	if !found {
		return 0, false, false
	}
	stem, size, sized := strings.Cut(stem, ".")
	if sized && size != strconv.Itoa(RecordSize) {
		return 0, false, false
	}
	base, err := strconv.ParseInt(stem, 10, 64)
	if err != nil {
		return 0, false, false
	}
	return base, !sized, true
}

// openSegments maps the segments found in dir, oldest first.
func (j *Journal) openSegments() error {
	entries, err := os.ReadDir(j.dir)
	if err != nil {
		return fmt.Errorf("journal: list %s: %w", j.dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, segmentSuffix) {
			continue
		}
		base, legacy, ok := parseSegmentName(name)
		if !ok {
			j.log.Warn("journal: ignoring a file that is not a segment", "file", name)
			continue
		}
		seg, err := j.mapExisting(filepath.Join(j.dir, name), base, legacy)
		if err != nil {
			j.log.Error("journal: skipping an unreadable segment", "file", name, "err", err)
			continue
		}
		j.segs = append(j.segs, seg)
	}
	slices.SortFunc(j.segs, func(a, b *segment) int { return cmp.Compare(a.base, b.base) })
	return nil
}

func (j *Journal) mapExisting(path string, base int64, legacy bool) (*segment, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close() //nolint:errcheck // only read so far; the failure above is returned
		return nil, err
	}
	recordSize := int64(RecordSize)
	if legacy {
		recordSize = legacyRecordSize
	}
	size := st.Size() / recordSize * recordSize
	if size < 2*recordSize {
		f.Close() //nolint:errcheck // only read so far
		return nil, fmt.Errorf("%d bytes is shorter than a header and a record", st.Size())
	}
	data, err := mmap(f, int(size))
	if err != nil {
		f.Close() //nolint:errcheck // only read so far; the failure above is returned
		return nil, err
	}
	seg := &segment{path: path, f: f, data: data, base: base, slots: size / recordSize, legacy: legacy}
	seg.next.Store(seg.slots) // full: never appended to again
	seg.committed.Store(seg.slots - 1)
	return seg, nil
}

// create makes and maps a new segment whose first record has seq base.
func (j *Journal) create(base int64) (*segment, error) {
	path := filepath.Join(j.dir, segmentName(base))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: create segment: %w", err)
	}
	size := j.slots * RecordSize
	// Blocks allocated now: a full disk is an error here, at a rotation,
	// not a SIGBUS at the first store to a page of a sparse file. (Mapping
	// with MAP_POPULATE as well cost appends more than it saved: the
	// first store to each page faults anyway, for dirty tracking.)
	if err := allocate(f, size); err != nil {
		f.Close()       //nolint:errcheck // never used: the failure above is returned
		os.Remove(path) //nolint:errcheck // likewise; a leftover is skipped at open
		return nil, fmt.Errorf("journal: size segment: %w", err)
	}
	// The directory entry must reach the disk too, or a power loss could
	// lose a whole segment whose pages were synced.
	if err := syncDir(j.dir); err != nil {
		f.Close()       //nolint:errcheck // never used: the failure above is returned
		os.Remove(path) //nolint:errcheck // likewise
		return nil, fmt.Errorf("journal: create segment: %w", err)
	}
	data, err := mmap(f, int(size))
	if err != nil {
		f.Close()       //nolint:errcheck // never used: the failure above is returned
		os.Remove(path) //nolint:errcheck // likewise
		return nil, fmt.Errorf("journal: map segment: %w", err)
	}
	copy(data, headerMagic)
	binary.LittleEndian.PutUint64(data[32:], uint64(base))
	seg := &segment{path: path, f: f, data: data, base: base, slots: j.slots}
	seg.next.Store(1)
	return seg, nil
}

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("journal: closed")

// Append writes r as the next record and returns its sequence number. It
// does not allocate, and makes no system call except when a segment fills
// (once every SegmentBytes/192 records). KeyID longer than MaxKeyID is an
// error; a Model longer than MaxModel is kept as its first 47 bytes, '#' and
// 16 hex digits of its FNV-1a hash.
func (j *Journal) Append(r *Record) (int64, error) {
	if err := check(r); err != nil {
		return 0, err
	}
	return j.append(r, nil)
}

// check refuses a record encode cannot hold whole.
func check(r *Record) error {
	if len(r.KeyID) > MaxKeyID {
		return fmt.Errorf("journal: key id of %d bytes is over %d", len(r.KeyID), MaxKeyID)
	}
	if r.Requests < 0 || r.Requests > MaxRequests {
		return fmt.Errorf("journal: %d requests in one record is not from 0 to %d", r.Requests, int64(MaxRequests))
	}
	return nil
}

// AppendPinned is Append for a stream's running count: once r is written,
// p holds r's segment instead of the one it held, so r is kept until the
// stream's Unpin. When the append fails, p still holds the stream's
// previous record, the latest one journaled.
func (j *Journal) AppendPinned(r *Record, p *Pin) (int64, error) {
	if err := check(r); err != nil {
		return 0, err
	}
	return j.append(r, p)
}

// Renew appends a copy of p's record, with a new seq, and moves p to it,
// when that record is in a segment appended to no more: a stream that
// relays nothing new for long then keeps at most the segments filled since
// its last Renew, not every one since its last text. It does nothing for
// the zero Pin or a record in the segment being appended to (one atomic
// load), so it can be called after every read of a stream.
func (j *Journal) Renew(p *Pin) error {
	if p.seg == nil || p.seg == j.cur.Load() {
		return nil
	}
	_, err := j.append(nil, p)
	return err
}

// Unpin lets Release remove p's segment once its records are applied: the
// stream settled (its Settle record, appended first, is what a replay
// bills now). p becomes the zero Pin.
func (j *Journal) Unpin(p *Pin) {
	if p.seg != nil {
		p.seg.pins.Add(-1)
	}
	*p = Pin{}
}

// append writes r into the next slot, or without r a copy of p's record
// with its seq renewed; with p, it moves p to that slot once written.
func (j *Journal) append(r *Record, p *Pin) (int64, error) {
	for {
		seg := j.cur.Load()
		if seg == nil {
			return 0, ErrClosed
		}
		slot := seg.next.Add(1) - 1
		if slot < seg.slots {
			seq := seg.base + slot - 1
			b := seg.data[slot*RecordSize : (slot+1)*RecordSize]
			if r != nil {
				encode(b, r, seq)
			} else {
				// p's segment is mapped: it is pinned, and Close unmaps
				// only once the slot reserved here is written.
				reseq(b, p.seg.data[p.slot*RecordSize:(p.slot+1)*RecordSize], seq)
			}
			if p != nil {
				// The new pin is counted before the record is, and the old
				// one released after: Release, which reads committed and
				// then pins, never finds neither segment pinned.
				seg.pins.Add(1)
				seg.committed.Add(1)
				if p.seg != nil {
					p.seg.pins.Add(-1)
				}
				p.seg, p.slot = seg, slot
			} else {
				seg.committed.Add(1)
			}
			return seq, nil
		}
		if err := j.rotate(seg); err != nil {
			return 0, err
		}
	}
}

// rotate replaces full with a new segment, unless another append did.
func (j *Journal) rotate(full *segment) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrClosed
	}
	if j.cur.Load() != full {
		return nil
	}
	seg, err := j.create(full.base + full.slots - 1)
	if err != nil {
		if !j.failed.Swap(true) {
			j.log.Error("journal: cannot start a new segment; usage is not journaled until it can", "err", err)
		}
		return err
	}
	j.failed.Store(false)
	j.segs = append(j.segs, seg)
	j.cur.Store(seg)
	return nil
}

func encode(b []byte, r *Record, seq int64) {
	b[offKind] = byte(r.Kind) | layout2 | layout3
	b[offKeyLen] = byte(len(r.KeyID))
	le := binary.LittleEndian
	le.PutUint64(b[offSeq:], uint64(seq))
	le.PutUint32(b[offMonth:], uint32(r.Month))
	le.PutUint32(b[offReq:], uint32(r.Requests))
	le.PutUint64(b[offCached:], uint64(r.Cached))
	le.PutUint64(b[offPrompt:], uint64(r.Prompt))
	le.PutUint64(b[offCompl:], uint64(r.Completion))
	le.PutUint64(b[offSpent:], uint64(r.Spent))
	le.PutUint64(b[offStream:], r.Stream)
	clear(b[offKey:])
	copy(b[offKey:offModel], r.KeyID)
	if len(r.Model) <= MaxModel {
		b[offModelLen] = byte(len(r.Model))
		copy(b[offModel:], r.Model)
	} else {
		b[offModelLen] = MaxModel
		n := copy(b[offModel:], r.Model[:MaxModel-17])
		b[offModel+n] = '#'
		h := fnv64a(r.Model)
		const digits = "0123456789abcdef"
		for i := range 16 {
			b[offModel+n+1+i] = digits[(h>>(60-4*i))&0xf]
		}
	}
	le.PutUint64(b[offCacheWrite:], uint64(r.CacheWrite))
	// The checksum last: a record the process died writing fails it.
	le.PutUint32(b[0:], crc32.Checksum(b[4:RecordSize], crcTable))
}

// reseq writes into b the record raw with seq in place of its own.
func reseq(b, raw []byte, seq int64) {
	copy(b[4:], raw[4:RecordSize])
	binary.LittleEndian.PutUint64(b[offSeq:], uint64(seq))
	binary.LittleEndian.PutUint32(b[0:], crc32.Checksum(b[4:RecordSize], crcTable))
}

func fnv64a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// Decode reads one record from b (RecordSize bytes). ok is false for a slot
// never written (all zero) and for one that fails its checksum or bounds
// (torn); torn tells them apart.
func Decode(b []byte, r *Record) (ok, torn bool) {
	return decode(b, r, false)
}

// decode is Decode for a slot of a segment of this version, or of an older
// one (legacy: 160 bytes, a record of layout 1 or 2).
func decode(b []byte, r *Record, legacy bool) (ok, torn bool) {
	size := RecordSize
	if legacy {
		size = legacyRecordSize
	}
	if len(b) < size {
		return false, true
	}
	b = b[:size]
	le := binary.LittleEndian
	if le.Uint32(b) != crc32.Checksum(b[4:], crcTable) {
		for _, c := range b {
			if c != 0 {
				return false, true
			}
		}
		return false, false
	}
	kl, ml := int(b[offKeyLen]), int(b[offModelLen])
	layout := b[offKind] & (layout2 | layout3)
	k := Kind(b[offKind] &^ layout)
	// A record has the layout of its segment's size: both bits in a
	// segment of this version, at most layout2 in an older one.
	wantLayout := layout == layout2|layout3
	if legacy {
		wantLayout = layout&layout3 == 0
	}
	if kl > MaxKeyID || ml > MaxModel || (k != Settle && k != Progress) || !wantLayout {
		return false, true
	}
	*r = Record{
		Kind:       k,
		Seq:        int64(le.Uint64(b[offSeq:])),
		Month:      int32(le.Uint32(b[offMonth:])),
		Prompt:     int64(le.Uint64(b[offPrompt:])),
		Completion: int64(le.Uint64(b[offCompl:])),
		Spent:      int64(le.Uint64(b[offSpent:])),
		Stream:     le.Uint64(b[offStream:]),
		KeyID:      string(b[offKey : offKey+kl]),
		Model:      string(b[offModel : offModel+ml]),
	}
	if layout&layout2 != 0 {
		r.Requests = int64(le.Uint32(b[offReq:]))
		r.Cached = int64(le.Uint64(b[offCached:]))
	} else {
		r.Requests = int64(le.Uint64(b[offReqV1:]))
	}
	if !legacy {
		r.CacheWrite = int64(le.Uint64(b[offCacheWrite:]))
	}
	return true, false
}

// Records calls fn for every record in the journal, in sequence order within
// each segment and segments oldest first. Slots torn when a process died, or
// corrupted on disk, are skipped and logged (a count per segment), never an
// error. It is meant for replay at start, before appends.
func (j *Journal) Records(fn func(*Record) error) error {
	j.mu.Lock()
	segs := slices.Clone(j.segs)
	j.mu.Unlock()
	var r Record
	for _, seg := range segs {
		torn := 0
		size := int64(RecordSize)
		if seg.legacy {
			size = legacyRecordSize
		}
		for slot := int64(1); slot < min(seg.next.Load(), seg.slots); slot++ {
			ok, bad := decode(seg.data[slot*size:], &r, seg.legacy)
			if bad {
				torn++
			}
			if !ok {
				continue
			}
			if r.Seq != seg.base+slot-1 {
				torn++ // a record copied from elsewhere: its place says it is not this one
				continue
			}
			if err := fn(&r); err != nil {
				return err
			}
		}
		if torn > 0 {
			j.log.Warn("journal: skipped records that fail their checksum (torn by a crash, or corrupt)",
				"file", filepath.Base(seg.path), "records", torn)
		}
	}
	return nil
}

// Next is the sequence number the next append will get, or a lower one
// still being written.
func (j *Journal) Next() int64 {
	seg := j.cur.Load()
	if seg == nil {
		return 0
	}
	return seg.base + min(seg.next.Load(), seg.slots) - 1
}

// Release removes the oldest segments all of whose records are below seq
// (applied to the store) and written, up to the first that is not, the one
// appended to, or one pinned (holding the latest record of a stream not
// settled; see Pin). What is kept is always every record from some seq on:
// a stream's Progress is never kept without its Settle, which would make a
// replay take the stream for one cut by a crash and bill it twice.
func (j *Journal) Release(seq int64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	cur := j.cur.Load()
	keep := j.segs[:0]
	var errs []error
	for i, seg := range j.segs {
		end := seg.base + seg.slots - 1 // first seq after the segment
		// committed before pins: see append.
		if seg == cur || end > seq || seg.committed.Load() < seg.slots-1 || seg.pins.Load() != 0 {
			keep = append(keep, j.segs[i:]...)
			break
		}
		errs = append(errs, seg.close(), os.Remove(seg.path))
	}
	n := len(keep)
	copy(j.segs, keep)
	clear(j.segs[n:])
	j.segs = j.segs[:n]
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("journal: release: %w", err)
	}
	return nil
}

func (s *segment) close() error {
	err := munmap(s.data)
	s.data = nil
	return errors.Join(err, s.f.Close())
}

// Sync writes every segment's mapping to disk.
func (j *Journal) Sync() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.syncLocked()
}

func (j *Journal) syncLocked() error {
	var errs []error
	for _, seg := range j.segs {
		if seg.data != nil {
			errs = append(errs, msync(seg.data))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("journal: sync: %w", err)
	}
	return nil
}

func (j *Journal) syncLoop() {
	defer close(j.stopped)
	t := time.NewTicker(j.sync)
	defer t.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-t.C:
			if err := j.Sync(); err != nil {
				j.log.Error("journal: sync failed; a power loss could lose usage since the last sync", "err", err)
			}
		}
	}
}

// closedSlots is added to the current segment's slot counter at Close, so
// that every later append finds it full and, the journal closed, fails.
const closedSlots = 1 << 48

// Close syncs and unmaps the journal. An append racing with Close either
// completes before the unmapping or returns ErrClosed.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	j.cur.Store(nil)
	for _, seg := range j.segs {
		seg.next.Add(closedSlots)
	}
	j.mu.Unlock()
	close(j.stop)
	<-j.stopped
	j.mu.Lock()
	defer j.mu.Unlock()
	// Appends that reserved a slot before finish writing it (they are past
	// every wait); then the mappings can go.
	for deadline := time.Now().Add(time.Second); !j.written(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			j.log.Error("journal: appends still writing a second after close; leaving the journal mapped")
			return errors.Join(j.syncLocked(), j.lock.Close())
		}
	}
	return errors.Join(j.syncLocked(), j.unmapAll(), j.lock.Close())
}

// written reports whether every reserved slot was written, after Close.
func (j *Journal) written() bool {
	for _, seg := range j.segs {
		reserved := min(seg.next.Load()-closedSlots, seg.slots) - 1
		if seg.committed.Load() < reserved {
			return false
		}
	}
	return true
}

func (j *Journal) unmapAll() error {
	var errs []error
	for _, seg := range j.segs {
		if seg.data != nil {
			errs = append(errs, seg.close())
		}
	}
	j.segs = nil
	return errors.Join(errs...)
}

// syncDir makes dir's entries durable: a file created or removed in it is
// not, until its directory is synced.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
