package keys

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// decodingStore hands out keys the way the real stores do, each decoded
// afresh from its stored record, so that a cached key owns all its memory
// (memStore's copies share their strings with the store's).
type decodingStore struct {
	Store
	reads atomic.Int64
}

func (s *decodingStore) KeyByHash(ctx context.Context, hash [32]byte) (*Key, error) {
	s.reads.Add(1)
	k, err := s.Store.KeyByHash(ctx, hash)
	if err != nil {
		return nil, err
	}
	rec, err := encodeKey(k)
	if err != nil {
		return nil, err
	}
	return decodeKey(rec)
}

// heapBytes returns the live Go heap after a full collection.
func heapBytes() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestCachedKeyMemory measures what the key cache costs per key: it fills a
// Registry's cache with $TOKENHUB_MEM_KEYS keys (`make bench-full` asks for
// 1,000,000) and logs the Go heap the cached keys hold, and that of the
// empty cache, whose counters are sized by cache.max_keys up front. It is
// skipped unless the variable is set: a million keys take a few seconds and
// about a gigabyte. It fails if a cached key costs more than 1 KiB, well
// above what it measured when written.
func TestCachedKeyMemory(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("TOKENHUB_MEM_KEYS"))
	if err != nil || n <= 0 {
		t.Skip("set TOKENHUB_MEM_KEYS to a number of keys (make bench-full uses 1000000) to measure the key cache's memory")
	}
	const maxPerKey = 1024
	ctx := context.Background()
	store := &decodingStore{Store: newMemStore()}
	before := heapBytes()
	// Room for every key and a quarter more, as tokenhub-bench configures
	// cache.max_keys, so that the admission policy never has to choose.
	maxKeys := int64(n + n/4)
	r, err := NewRegistry(store, RegistryOptions{MaxKeys: maxKeys, NegativeTTL: testNegativeTTL, StaleIfError: testStaleIfError})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.SeedPlans(ctx, []*Plan{{Name: "bench", Models: []string{"*"}}}); err != nil {
		t.Fatal(err)
	}
	empty := heapBytes()

	secrets := make([][]byte, n)
	now := time.Now().UTC()
	for i := range secrets {
		s, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		id, err := newKeyID()
		if err != nil {
			t.Fatal(err)
		}
		k := &Key{ID: id, Name: "bench-" + strconv.Itoa(i), Plan: "bench", Hash: HashSecret(s), Last4: last4(s), CreatedAt: now}
		if err := store.PutKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		secrets[i] = []byte(s)
	}
	stored := heapBytes()

	// The cache's writes are asynchronous and may be dropped under pressure:
	// pass over the keys until a pass reads the store no more.
	passes := 0
	for ; passes < 5; passes++ {
		reads := store.reads.Load()
		for _, s := range secrets {
			if _, _, err := r.Authenticate(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		r.keys.Wait()
		if passes > 0 && store.reads.Load() == reads {
			break
		}
	}
	reads := store.reads.Load()
	for _, s := range secrets {
		if _, _, err := r.Authenticate(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	missing := int(store.reads.Load() - reads)
	cached := heapBytes()
	runtime.KeepAlive(secrets)

	perKey := (cached - stored) / int64(n-missing)
	t.Logf("cached keys: %d of %d (%d passes); cache.max_keys %d: empty caches %.1f MiB; "+
		"cached keys %.1f MiB, %d bytes of Go heap per key",
		n-missing, n, passes+1, maxKeys, float64(empty-before)/(1<<20), float64(cached-stored)/(1<<20), perKey)
	if missing > n/100 {
		t.Fatalf("%d of %d keys not cached after %d passes", missing, n, passes+1)
	}
	if perKey > maxPerKey {
		t.Fatalf("a cached key holds %d bytes of heap, more than %d", perKey, maxPerKey)
	}
}
