package affinity

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

// clock is a test's injected time, moved by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// backend opens two Stores on the same data, as two nodes (Valkey) or a
// restart (bbolt) would see it.
type backend struct {
	name string
	open func(t *testing.T, o Options) (first Store, second func() Store)
}

func backends() []backend {
	return []backend{
		{"bolt", func(t *testing.T, o Options) (Store, func() Store) {
			dir := t.TempDir()
			s, err := OpenBolt(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			var once bool
			t.Cleanup(func() {
				if !once {
					s.Close()
				}
			})
			return s, func() Store {
				once = true
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				again, err := OpenBolt(dir, o)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { again.Close() })
				return again
			}
		}},
		{"valkey", func(t *testing.T, o Options) (Store, func() Store) {
			v := valkeytest.Start(t)
			return NewValkey(v.Client(t), "test", time.Second, o), func() Store {
				return NewValkey(v.Client(t), "test", time.Second, o)
			}
		}},
	}
}

// TestStore holds both backends to one contract.
func TestStore(t *testing.T) {
	ctx := context.Background()
	rec := func(key string) Record {
		return Record{Upstream: "up", Model: "mock", RouteModel: "upstream-name", KeyID: key}
	}
	cases := []struct {
		name string
		o    Options
		run  func(t *testing.T, s Store, other func() Store, c *clock)
	}{
		{"remembered ids are found, with what was remembered and when", Options{}, func(t *testing.T, s Store, other func() Store, c *clock) {
			remember(t, s, "resp_1", rec("k1"))
			c.advance(time.Minute)
			want := rec("k1")
			want.Created = c.Now().Add(-time.Minute)
			found(t, s, "resp_1", want)
			found(t, other(), "resp_1", want)
		}},
		{"an unknown id, an empty one, an overlong one are not found", Options{}, func(t *testing.T, s Store, _ func() Store, _ *clock) {
			remember(t, s, "resp_1", rec("k1"))
			for _, id := range []string{"resp_2", "", strings.Repeat("r", MaxIDLen+1)} {
				notFound(t, s, id)
			}
			if err := s.Remember(ctx, strings.Repeat("r", MaxIDLen+1), rec("k1")); err != ErrBadID {
				t.Fatalf("overlong id remembered: %v", err)
			}
		}},
		{"a forgotten id is not found, by any node", Options{}, func(t *testing.T, s Store, other func() Store, _ *clock) {
			remember(t, s, "resp_1", rec("k1"))
			remember(t, s, "resp_2", rec("k1"))
			if err := s.Forget(ctx, "resp_1"); err != nil {
				t.Fatal(err)
			}
			if err := s.Forget(ctx, "resp_unknown"); err != nil {
				t.Fatalf("forgetting an unknown id: %v", err)
			}
			notFound(t, s, "resp_1")
			s2 := other()
			notFound(t, s2, "resp_1")
			want := rec("k1")
			want.Created = time.Unix(1_700_000_000, 0)
			found(t, s2, "resp_2", want)
		}},
		{"an id is forgotten at the retention, not before", Options{Retention: time.Hour}, func(t *testing.T, s Store, other func() Store, c *clock) {
			created := c.Now()
			remember(t, s, "resp_1", rec("k1"))
			c.advance(time.Hour - time.Millisecond)
			want := rec("k1")
			want.Created = created
			found(t, s, "resp_1", want)
			c.advance(time.Millisecond)
			notFound(t, s, "resp_1")
			notFound(t, other(), "resp_1")
		}},
		{"past MaxIDs the oldest ids are forgotten", Options{MaxIDs: 3}, func(t *testing.T, s Store, other func() Store, c *clock) {
			for i := range 5 {
				remember(t, s, fmt.Sprintf("resp_%d", i), rec("k1"))
				c.advance(time.Millisecond)
			}
			s2 := other()
			for i := range 5 {
				id := fmt.Sprintf("resp_%d", i)
				if i < 2 {
					notFound(t, s2, id)
					continue
				}
				want := rec("k1")
				want.Created = time.Unix(1_700_000_000, 0).Add(time.Duration(i) * time.Millisecond)
				found(t, s2, id, want)
			}
		}},
		{"remembering an id again replaces it and counts once", Options{MaxIDs: 2}, func(t *testing.T, s Store, _ func() Store, c *clock) {
			remember(t, s, "resp_1", rec("k1"))
			remember(t, s, "resp_2", rec("k1"))
			c.advance(time.Millisecond)
			remember(t, s, "resp_2", rec("k2"))
			want := rec("k1")
			want.Created = time.Unix(1_700_000_000, 0)
			found(t, s, "resp_1", want)
			want = rec("k2")
			want.Created = c.Now()
			found(t, s, "resp_2", want)
		}},
	}
	for _, b := range backends() {
		for _, tc := range cases {
			t.Run(b.name+"/"+tc.name, func(t *testing.T) {
				c := &clock{now: time.Unix(1_700_000_000, 0)}
				o := tc.o
				o.Now = c.Now
				s, other := b.open(t, o)
				tc.run(t, s, other, c)
			})
		}
	}
}

func remember(t *testing.T, s Store, id string, r Record) {
	t.Helper()
	if err := s.Remember(context.Background(), id, r); err != nil {
		t.Fatal(err)
	}
}

func found(t *testing.T, s Store, id string, want Record) {
	t.Helper()
	got, ok, err := s.Lookup(context.Background(), id)
	if err != nil || !ok {
		t.Fatalf("Lookup(%q) = %v, %v; want found", id, ok, err)
	}
	if !got.Created.Equal(want.Created) {
		t.Errorf("Lookup(%q) created %v, want %v", id, got.Created, want.Created)
	}
	got.Created, want.Created = time.Time{}, time.Time{}
	if got != want {
		t.Errorf("Lookup(%q) = %+v, want %+v", id, got, want)
	}
}

func notFound(t *testing.T, s Store, id string) {
	t.Helper()
	if got, ok, err := s.Lookup(context.Background(), id); err != nil || ok {
		t.Fatalf("Lookup(%q) = %+v, %v, %v; want not found", id, got, ok, err)
	}
}
