package keys_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/tokenhub/tokenhub/internal/valkeytest"
	"github.com/tokenhub/tokenhub/keys"
)

// derivesPlanUsers: a store written before plan-users existed (neither the
// counts nor their marker) derives the counts in the first DeletePlan, once,
// however many nodes delete at the same moment; keys written before that
// are counted, and so are keys written after.
func derivesPlanUsers(t *testing.T, srv *valkeytest.Server) {
	ctx := context.Background()
	const nodes = 4
	stores := make([]*keys.ValkeyStore, nodes)
	for i := range stores {
		stores[i] = openValkey(t, srv, "legacy", 0)
		defer stores[i].Close()
	}
	s := stores[0]
	for _, name := range []string{"used", "free"} {
		if err := s.PutPlan(ctx, &keys.Plan{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	var used []*keys.Key
	for i := range 3 {
		k := &keys.Key{ID: fmt.Sprintf("key_%024d", i), Plan: "used", Hash: hashOf(fmt.Sprint("legacy", i))}
		if err := s.PutKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		used = append(used, k)
	}
	// Make it an old store: no counts, no marker. Then one more key, written
	// while there is no marker, which the derivation must count too.
	srv.Do(t, "DEL", "{legacy}:plan-users", "{legacy}:plan-users-derived")
	late := &keys.Key{ID: "key_late", Plan: "used", Hash: hashOf("late")}
	if err := s.PutKey(ctx, late); err != nil {
		t.Fatal(err)
	}
	used = append(used, late)
	if got := srv.Do(t, "EXISTS", "{legacy}:plan-users"); got != "0" {
		t.Fatalf("a key write without the marker created counts (EXISTS = %s)", got)
	}

	var wg sync.WaitGroup
	errs := make([]error, nodes)
	for i, st := range stores {
		wg.Go(func() { errs[i] = st.DeletePlan(ctx, "used") })
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, keys.ErrPlanInUse) {
			t.Fatalf("node %d: DeletePlan(used) on an old store = %v, want ErrPlanInUse", i, err)
		}
	}
	if got := srv.Do(t, "HGET", "{legacy}:plan-users", "used"); got != "4" {
		t.Fatalf("derived count of plan used = %s, want 4 (derived once, not once per node)", got)
	}
	if err := stores[1].DeletePlan(ctx, "free"); err != nil {
		t.Fatalf("DeletePlan(free), which no key uses = %v", err)
	}
	for i, k := range used {
		k.RevokedAt = k.CreatedAt.Add(1)
		if err := stores[i%nodes].PutKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		if i < len(used)-1 {
			if err := stores[(i+1)%nodes].DeletePlan(ctx, "used"); !errors.Is(err, keys.ErrPlanInUse) {
				t.Fatalf("DeletePlan(used) with %d keys left = %v, want ErrPlanInUse", len(used)-1-i, err)
			}
		}
	}
	if err := stores[2].DeletePlan(ctx, "used"); err != nil {
		t.Fatalf("DeletePlan(used) once every key is revoked = %v", err)
	}
}

func TestValkeyDerivesPlanUsers(t *testing.T) { derivesPlanUsers(t, valkeytest.Start(t)) }

func TestValkeyClusterDerivesPlanUsers(t *testing.T) {
	derivesPlanUsers(t, valkeytest.StartCluster(t))
}
