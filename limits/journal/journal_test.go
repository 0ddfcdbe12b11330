package journal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func open(t testing.TB, dir string, o Options) *Journal {
	t.Helper()
	if o.Log == nil {
		o.Log = quiet
	}
	j, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func all(t testing.TB, j *Journal) []Record {
	t.Helper()
	var rs []Record
	if err := j.Records(func(r *Record) error { rs = append(rs, *r); return nil }); err != nil {
		t.Fatal(err)
	}
	return rs
}

func rec(i int64) Record {
	return Record{Kind: Settle, Month: 202612, Requests: 1, Prompt: i, Completion: 2 * i, Spent: 3 * i,
		KeyID: "key_0123456789abcdef01234567", Model: "mock"}
}

// TestAppendSurvivesReopen: records appended (from many goroutines, over
// several segments) are all read back after the journal is reopened without
// Close, as after SIGKILL, each with a distinct seq in its segment's order.
func TestAppendSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{SegmentBytes: 64 * RecordSize, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				r := rec(int64(g*1000 + i))
				if _, err := j.Append(&r); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// No Close: the mapping's pages are the kernel's, as when killed.
	j.abandon()
	j2 := open(t, dir, Options{SegmentBytes: 64 * RecordSize})
	rs := all(t, j2)
	if len(rs) != 800 {
		t.Fatalf("read %d records, want 800", len(rs))
	}
	seen := map[int64]bool{}
	var sum int64
	for i, r := range rs {
		if seen[r.Seq] || (i > 0 && r.Seq <= rs[i-1].Seq) {
			t.Fatalf("record %d: seq %d repeated or out of order", i, r.Seq)
		}
		seen[r.Seq] = true
		if r.Completion != 2*r.Prompt || r.KeyID != "key_0123456789abcdef01234567" || r.Model != "mock" {
			t.Fatalf("record %d: %+v", i, r)
		}
		sum += r.Prompt
	}
	if want := int64(8*99*100/2 + 1000*(0+1+2+3+4+5+6+7)*100); sum != want {
		t.Fatalf("prompt tokens sum %d, want %d", sum, want)
	}
	if j2.NodeID() != j.NodeID() || j2.NodeID() == "" {
		t.Fatalf("node id %q then %q; want one stable id", j.NodeID(), j2.NodeID())
	}
	if next := j2.Next(); next <= rs[len(rs)-1].Seq {
		t.Fatalf("next seq %d after a reopen is not above the last, %d", next, rs[len(rs)-1].Seq)
	}
}

// TestTornRecordsAreSkipped: a record half-written (its checksum wrong) and
// a flipped byte are skipped with a log line; the records around them are
// read, and the journal opens.
func TestTornRecordsAreSkipped(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{SegmentBytes: 64 * RecordSize})
	for i := range 5 {
		r := rec(int64(i))
		if _, err := j.Append(&r); err != nil {
			t.Fatal(err)
		}
	}
	seg := j.cur.Load()
	seg.data[2*RecordSize+offPrompt] ^= 1          // record 1: a bit flipped
	clear(seg.data[4*RecordSize : 4*RecordSize+4]) // record 3: checksum never written
	j.Close()
	var logged bytes.Buffer
	j2 := open(t, dir, Options{SegmentBytes: 64 * RecordSize, Log: slog.New(slog.NewTextHandler(&logged, nil))})
	rs := all(t, j2)
	var got []int64
	for _, r := range rs {
		got = append(got, r.Prompt)
	}
	if len(got) != 3 || got[0] != 0 || got[1] != 2 || got[2] != 4 {
		t.Fatalf("read prompts %v, want [0 2 4]", got)
	}
	if !strings.Contains(logged.String(), "records=2") {
		t.Fatalf("log %q does not count the 2 torn records", logged.String())
	}
}

// TestReleaseRemovesAppliedSegments: segments whose records are all below
// the released seq go; the one appended to stays, and so does one with a
// record not yet applied.
func TestReleaseRemovesAppliedSegments(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{SegmentBytes: 16 * RecordSize}) // 15 records a segment
	var seqs []int64
	for i := range 50 {
		r := rec(int64(i))
		seq, err := j.Append(&r)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	files := func() int {
		m, _ := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
		return len(m)
	}
	if n := files(); n != 4 {
		t.Fatalf("%d segments for 50 records of 15 a segment, want 4", n)
	}
	if err := j.Release(seqs[20]); err != nil { // records 0..19 applied: the first segment only
		t.Fatal(err)
	}
	if n := files(); n != 3 {
		t.Fatalf("%d segments after releasing the first, want 3", n)
	}
	if err := j.Release(j.Next()); err != nil {
		t.Fatal(err)
	}
	if n := files(); n != 1 {
		t.Fatalf("%d segments after releasing all, want the current one", n)
	}
	if rs := all(t, j); len(rs) != 5 || rs[0].Prompt != 45 {
		t.Fatalf("kept records %v, want the current segment's 45..49", rs)
	}
}

// TestPinKeepsAStreamsLatestRecord: the segment holding a stream's latest
// record stays through releases of everything after it, and so do those
// after it (a Progress is never kept without what follows it), while those
// before it go; Renew copies the record forward so the old ones can go too;
// after Unpin nothing is kept for it. Reopened as after SIGKILL, the
// journal still holds the stream's count.
func TestPinKeepsAStreamsLatestRecord(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentBytes: 16 * RecordSize} // 15 records a segment
	j, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	files := func() int {
		m, _ := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
		return len(m)
	}
	fill := func(n int) {
		for i := range n {
			r := rec(int64(i))
			if _, err := j.Append(&r); err != nil {
				t.Fatal(err)
			}
		}
	}
	progress := func(completion int64) Record {
		return Record{Kind: Progress, Month: 202612, Stream: 77, Requests: 1, Prompt: 10, Completion: completion,
			Spent: 3 * completion, KeyID: "key_silent", Model: "mock"}
	}
	// latest is the stream's last record in a journal reopened from dir.
	latest := func() Record {
		t.Helper()
		j.abandon()
		j, err = Open(dir, Options{SegmentBytes: o.SegmentBytes, Log: quiet})
		if err != nil {
			t.Fatal(err)
		}
		var last Record
		for _, r := range all(t, j) {
			if r.Stream == 77 && r.Seq > last.Seq {
				last = r
			}
		}
		return last
	}

	var p Pin
	fill(20) // the first segment full, the second begun
	first := progress(3)
	if _, err := j.AppendPinned(&first, &p); err != nil {
		t.Fatal(err)
	}
	second := progress(9)
	if second.Seq, err = j.AppendPinned(&second, &p); err != nil { // supersedes the first, in the same segment
		t.Fatal(err)
	}
	fill(60) // four segments more
	if err := j.Release(j.Next()); err != nil {
		t.Fatal(err)
	}
	if n := files(); n != 5 {
		t.Fatalf("%d segments after releasing all, want 5: the pinned one and those after it, not the one before", n)
	}
	if got := latest(); got.Completion != 9 || got.Kind != Progress {
		t.Fatalf("stream's latest record after a crash %+v, want its Progress of 9", got)
	}

	// A Pin does not outlive its process; here the same one is made on the
	// reopened journal's segment, to renew it.
	p = Pin{}
	for _, seg := range j.segs {
		if seg.base <= second.Seq && second.Seq < seg.base+seg.slots-1 {
			p = Pin{seg: seg, slot: second.Seq - seg.base + 1}
			seg.pins.Add(1)
		}
	}
	if p.seg == nil {
		t.Fatal("the pinned segment is gone after a reopen")
	}
	before := j.Next()
	if err := j.Renew(&p); err != nil {
		t.Fatal(err)
	}
	if j.Next() != before+1 || p.seg != j.cur.Load() {
		t.Fatal("Renew did not copy the record into the current segment")
	}
	if err := j.Renew(&p); err != nil || j.Next() != before+1 {
		t.Fatalf("a second Renew in the same segment appended (%v)", err)
	}
	fill(15)
	if err := j.Release(j.Next()); err != nil {
		t.Fatal(err)
	}
	if n := files(); n != 2 {
		t.Fatalf("%d segments after a renew and a release, want 2: the renewed one and the current one", n)
	}
	if got := latest(); got.Completion != 9 || got.Prompt != 10 || got.Spent != 27 || got.KeyID != "key_silent" || got.Seq != before {
		t.Fatalf("stream's latest record after renew and a crash %+v, want its Progress of 9 at seq %d", got, before)
	}

	p = Pin{}
	for _, seg := range j.segs {
		if seg.base <= before && before < seg.base+seg.slots-1 {
			p = Pin{seg: seg, slot: before - seg.base + 1}
			seg.pins.Add(1)
		}
	}
	fill(15)
	j.Unpin(&p)
	if p != (Pin{}) {
		t.Fatal("Unpin left the pin set")
	}
	if err := j.Release(j.Next()); err != nil {
		t.Fatal(err)
	}
	if n := files(); n != 1 {
		t.Fatalf("%d segments after unpin and a release, want the current one", n)
	}
	j.Close()
}

// TestPinsHoldUnderConcurrentRelease: streams journal their counts, pinned,
// and renew them, while other appends fill segments and a flusher releases
// everything as applied, all at once. Reopened as after SIGKILL, every
// stream's latest record holds its last count.
func TestPinsHoldUnderConcurrentRelease(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentBytes: 16 * RecordSize}
	j, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	const streams, counts = 6, 200
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() { // other requests settling
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			r := rec(int64(i))
			if _, err := j.Append(&r); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() { // flushes: everything appended is applied
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := j.Release(j.Next()); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var relays sync.WaitGroup
	for s := range streams {
		relays.Go(func() {
			var p Pin
			for c := int64(1); c <= counts; c++ {
				r := Record{Kind: Progress, Month: 202612, Stream: uint64(s + 1), Requests: 1, Completion: c, KeyID: "key_s", Model: "mock"}
				if _, err := j.AppendPinned(&r, &p); err != nil {
					t.Error(err)
					return
				}
				for range 3 { // reads without text
					if err := j.Renew(&p); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	relays.Wait()
	close(done)
	wg.Wait()
	if err := j.Release(j.Next()); err != nil {
		t.Fatal(err)
	}
	j.abandon()
	j2 := open(t, dir, o)
	last := map[uint64]Record{}
	for _, r := range all(t, j2) {
		if r.Kind == Progress && r.Seq > last[r.Stream].Seq {
			last[r.Stream] = r
		}
	}
	for s := range uint64(streams) {
		if got := last[s+1].Completion; got != counts {
			t.Errorf("stream %d: latest count after a crash %d, want %d", s+1, got, counts)
		}
	}
}

// TestLongModelNameKeepsAHash: model names over MaxModel bytes are kept
// distinct by a hash of the whole name; a key id over MaxKeyID is refused.
func TestLongModelNameKeepsAHash(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	long := strings.Repeat("m", 100)
	for _, model := range []string{long + "a", long + "b"} {
		r := rec(1)
		r.Model = model
		if _, err := j.Append(&r); err != nil {
			t.Fatal(err)
		}
	}
	rs := all(t, j)
	if len(rs) != 2 || rs[0].Model == rs[1].Model || len(rs[0].Model) != MaxModel || !strings.HasPrefix(rs[0].Model, long[:47]+"#") {
		t.Fatalf("models %q and %q", rs[0].Model, rs[1].Model)
	}
	r := rec(1)
	r.KeyID = strings.Repeat("k", MaxKeyID+1)
	if _, err := j.Append(&r); err == nil {
		t.Fatal("appended a key id over MaxKeyID")
	}
}

// FuzzDecode: any bytes, as a torn or corrupted slot, decode to a record
// that passed its checksum or to nothing; never a panic, never a string
// longer than its bound.
func FuzzDecode(f *testing.F) {
	var b [RecordSize]byte
	r := rec(7)
	encode(b[:], &r, 42)
	f.Add(b[:])
	f.Add(b[:RecordSize/2])
	f.Add(make([]byte, RecordSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Record
		ok, torn := Decode(data, &r)
		if ok && (torn || len(r.KeyID) > MaxKeyID || len(r.Model) > MaxModel) {
			t.Fatalf("decoded %+v, torn %v", r, torn)
		}
	})
}

// FuzzRecordsTornTail: a segment whose tail is overwritten by arbitrary
// bytes (a torn write, a corrupt disk) still opens, yields the records
// before the damage intact, and never a record whose seq is not its place.
func FuzzRecordsTornTail(f *testing.F) {
	f.Add(uint16(3), []byte{1, 2, 3})
	f.Add(uint16(0), bytes.Repeat([]byte{0xff}, 3*RecordSize))
	f.Fuzz(func(t *testing.T, at uint16, tail []byte) {
		dir := t.TempDir()
		j := open(t, dir, Options{SegmentBytes: 16 * RecordSize})
		for i := range 10 {
			r := rec(int64(i))
			if _, err := j.Append(&r); err != nil {
				t.Fatal(err)
			}
		}
		seg := j.cur.Load()
		off := RecordSize + int(at)%(10*RecordSize)
		copy(seg.data[off:], tail)
		j.Close()
		j2 := open(t, dir, Options{SegmentBytes: 16 * RecordSize})
		intact := (off - RecordSize) / RecordSize
		rs := all(t, j2)
		if len(rs) < intact {
			t.Fatalf("%d records read, want at least the %d before the damage", len(rs), intact)
		}
		for i, r := range rs {
			if i < intact && r.Prompt != int64(i) {
				t.Fatalf("record %d: %+v", i, r)
			}
		}
	})
}

func TestOpenRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{{SegmentBytes: RecordSize}, {SegmentBytes: 2 << 30}, {SyncInterval: -1}} {
		if _, err := Open(t.TempDir(), o); err == nil {
			t.Errorf("opened with %+v", o)
		}
	}
	// One journal, one process: a second Open of a directory in use fails.
	busy := t.TempDir()
	open(t, busy, Options{})
	if _, err := Open(busy, Options{Log: quiet}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second open of a journal in use: %v", err)
	}
	// A node id file that is empty is an error that says what to do.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, nodeIDFile), nil, 0o600)
	if _, err := Open(dir, Options{Log: quiet}); err == nil || !strings.Contains(err.Error(), "remove it") {
		t.Errorf("empty node id: %v", err)
	}
}

func BenchmarkAppend(b *testing.B) {
	b.Run("sync 1s", func(b *testing.B) { benchAppend(b, Options{}) })
	b.Run("no sync", func(b *testing.B) { benchAppend(b, Options{SyncInterval: time.Hour}) })
}

// BenchmarkAppendPinned is a stream's Progress: a pinned append, then a
// Renew as on a read without text (nothing to copy while the segment is
// the same), on each goroutine's own stream.
func BenchmarkAppendPinned(b *testing.B) {
	j := open(b, b.TempDir(), Options{})
	r := rec(1)
	r.Kind = Progress
	b.ReportAllocs()
	start := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		var p Pin
		for pb.Next() {
			if _, err := j.AppendPinned(&r, &p); err != nil {
				b.Fatal(err)
			}
			if err := j.Renew(&p); err != nil {
				b.Fatal(err)
			}
		}
		j.Unpin(&p)
	})
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

func benchAppend(b *testing.B, o Options) {
	j := open(b, b.TempDir(), o)
	r := rec(1)
	b.ReportAllocs()
	// CPU time per append, user and system (page faults) together: on a
	// machine shared with other work the wall time says more about the
	// neighbours than about the append.
	start := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := j.Append(&r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// abandon drops j as SIGKILL would: no sync, no more appends.
func (j *Journal) abandon() {
	close(j.stop)
	<-j.stopped
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closed = true
	j.cur.Store(nil)
	j.unmapAll()
	j.lock.Close() // the kernel drops a killed process's locks
}

// TestCachedTokensSurviveReopen: a record's cached tokens (any int64 count,
// not only small ones) are read back after a reopen without Close, as
// after SIGKILL, with its other counts.
func TestCachedTokensSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{SegmentBytes: 64 * RecordSize, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{Kind: Settle, Month: 202612, Requests: 1, Prompt: 2006, Cached: 1920, Completion: 300, Spent: 336_900_000, KeyID: "key_a", Model: "gpt-4o-mini"},
		{Kind: Progress, Month: 202612, Stream: 9, Requests: 1, Prompt: 1 << 40, Cached: 1<<40 - 1, Completion: 7, Spent: 1, KeyID: "key_b", Model: "m"},
		{Kind: Settle, Month: 202612, Requests: MaxRequests, Prompt: 5, KeyID: "key_c", Model: "m"},
	}
	for i := range want {
		if want[i].Seq, err = j.Append(&want[i]); err != nil {
			t.Fatal(err)
		}
	}
	j.abandon()
	got := all(t, open(t, dir, Options{SegmentBytes: 64 * RecordSize}))
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("record %d read back as\n%+v\nwant\n%+v", i, got[i], want[i])
		}
	}
	over := Record{Kind: Settle, Requests: MaxRequests + 1, KeyID: "k"}
	if _, err := j.Append(&over); err == nil {
		t.Fatal("appended a record of more requests than it can hold")
	}
}

// encodeV1 writes r as versions before cached tokens did, into a 160-byte
// slot: requests at 24 as an int64, no cached count, no layout bit.
func encodeV1(b []byte, r *Record, seq int64) {
	clear(b[:legacyRecordSize])
	b[offKind] = byte(r.Kind)
	b[offKeyLen] = byte(len(r.KeyID))
	b[offModelLen] = byte(len(r.Model))
	le := binary.LittleEndian
	le.PutUint64(b[offSeq:], uint64(seq))
	le.PutUint32(b[offMonth:], uint32(r.Month))
	le.PutUint64(b[24:], uint64(r.Requests))
	le.PutUint64(b[32:], uint64(r.Prompt))
	le.PutUint64(b[40:], uint64(r.Completion))
	le.PutUint64(b[48:], uint64(r.Spent))
	le.PutUint64(b[56:], r.Stream)
	copy(b[offKey:], r.KeyID)
	copy(b[offModel:], r.Model)
	le.PutUint32(b[0:], crc32.Checksum(b[4:legacyRecordSize], crcTable))
}

// encodeV2 writes r as the version before cache-write tokens did, into a
// 160-byte slot: the layout2 bit, requests at 20, cached at 24.
func encodeV2(b []byte, r *Record, seq int64) {
	clear(b[:legacyRecordSize])
	b[offKind] = byte(r.Kind) | layout2
	b[offKeyLen] = byte(len(r.KeyID))
	b[offModelLen] = byte(len(r.Model))
	le := binary.LittleEndian
	le.PutUint64(b[offSeq:], uint64(seq))
	le.PutUint32(b[offMonth:], uint32(r.Month))
	le.PutUint32(b[20:], uint32(r.Requests))
	le.PutUint64(b[24:], uint64(r.Cached))
	le.PutUint64(b[32:], uint64(r.Prompt))
	le.PutUint64(b[40:], uint64(r.Completion))
	le.PutUint64(b[48:], uint64(r.Spent))
	le.PutUint64(b[56:], r.Stream)
	copy(b[offKey:], r.KeyID)
	copy(b[offModel:], r.Model)
	le.PutUint32(b[0:], crc32.Checksum(b[4:legacyRecordSize], crcTable))
}

// writeLegacySegment writes a segment file as versions before cache-write
// tokens did: named "<base>.journal", a header, then 160-byte records, the
// first slots filled by fill and the rest never written.
func writeLegacySegment(t *testing.T, dir string, base int64, fill ...func(b []byte, seq int64)) string {
	t.Helper()
	data := make([]byte, 16*legacyRecordSize)
	copy(data, "tokenhub-journal-v1")
	binary.LittleEndian.PutUint64(data[32:], uint64(base))
	for i, f := range fill {
		f(data[(i+1)*legacyRecordSize:], base+int64(i))
	}
	path := filepath.Join(dir, fmt.Sprintf("%020d.journal", base))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOlderRecordsStillRead: a journal an older version left replays after
// an upgrade: its segment of 160-byte records, one record without cached
// tokens (layout 1) and one with (layout 2), reads as it was written, with
// no cache-write tokens, beside a record of this version in a segment of
// its own; once applied, the old segment is removed like any other.
func TestOlderRecordsStillRead(t *testing.T) {
	dir := t.TempDir()
	base := time.Now().UnixMicro() - 1_000_000 // written a second ago
	v1 := Record{Kind: Progress, Month: 202611, Stream: 77, Requests: 1, Prompt: 40, Completion: 12, Spent: 9_000, KeyID: "key_old", Model: "mock"}
	v2 := Record{Kind: Settle, Month: 202611, Requests: 1, Prompt: 40, Cached: 32, Completion: 12, Spent: 8_000, KeyID: "key_v2", Model: "mock"}
	v1.Seq, v2.Seq = base, base+1
	old := writeLegacySegment(t, dir,
		base, func(b []byte, seq int64) { encodeV1(b, &v1, seq) }, func(b []byte, seq int64) { encodeV2(b, &v2, seq) })
	j, err := Open(dir, Options{SegmentBytes: 64 * RecordSize, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	cur := Record{Kind: Settle, Month: 202611, Requests: 1, Prompt: 40, Cached: 16, CacheWrite: 20, Completion: 12, Spent: 7_000, KeyID: "key_new", Model: "mock"}
	if cur.Seq, err = j.Append(&cur); err != nil {
		t.Fatal(err)
	}
	if cur.Seq <= v2.Seq {
		t.Fatalf("appended seq %d, not above the old segment's %d", cur.Seq, v2.Seq)
	}
	j.abandon()
	j = open(t, dir, Options{SegmentBytes: 64 * RecordSize})
	got := all(t, j)
	if len(got) != 3 || got[0] != v1 || got[1] != v2 || got[2] != cur {
		t.Fatalf("read %+v\nwant %+v, %+v and %+v", got, v1, v2, cur)
	}
	if err := j.Release(j.Next()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("the old segment, applied, is still there (%v)", err)
	}
}

// TestCacheWriteTokensSurviveReopen: a record's cache-write tokens (any
// int64 count) are read back after a reopen without Close, as after
// SIGKILL, with its other counts; its segment's name says its record size,
// and a segment of a size this version does not know is left alone.
func TestCacheWriteTokensSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{SegmentBytes: 64 * RecordSize, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{Kind: Settle, Month: 202612, Requests: 1, Prompt: 3000, Cached: 1000, CacheWrite: 1500, Completion: 300, Spent: 123_456_789, KeyID: "key_a", Model: "claude-sonnet-4-5"},
		{Kind: Progress, Month: 202612, Stream: 9, Requests: 1, Prompt: 1 << 41, Cached: 1 << 40, CacheWrite: 1<<40 - 1, Completion: 7, Spent: 1, KeyID: "key_b", Model: strings.Repeat("m", MaxModel)},
		{Kind: Settle, Month: 202612, Requests: MaxRequests, Prompt: 5, CacheWrite: 5, KeyID: strings.Repeat("k", MaxKeyID), Model: "m"},
	}
	for i := range want {
		if want[i].Seq, err = j.Append(&want[i]); err != nil {
			t.Fatal(err)
		}
	}
	j.abandon()
	// A segment of a later version's record size: not read, not removed.
	later := filepath.Join(dir, fmt.Sprintf("%020d.256.journal", 1))
	if err := os.WriteFile(later, make([]byte, 16*256), 0o600); err != nil {
		t.Fatal(err)
	}
	j2 := open(t, dir, Options{SegmentBytes: 64 * RecordSize})
	got := all(t, j2)
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("record %d read back as\n%+v\nwant\n%+v", i, got[i], want[i])
		}
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*.journal"))
	sized := 0
	for _, n := range names {
		if strings.HasSuffix(n, fmt.Sprintf(".%d.journal", RecordSize)) {
			sized++
		}
	}
	if sized != 2 || len(names) != 3 {
		t.Fatalf("segments %q; want the two of this version named for their record size, and the later one", names)
	}
	if err := j2.Release(j2.Next()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(later); err != nil {
		t.Fatalf("a segment of an unknown record size was touched: %v", err)
	}
}
