package keys_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/tokenhub/tokenhub/keys"
)

// racePlanDelete is the attacker's test of plan deletion: two Registries
// ("nodes") on one store, one deleting a plan while the other creates a key
// on it or moves a key onto it, many times. Whatever wins, no unrevoked key
// may end up naming a plan that does not exist: every request with it would
// fail.
func racePlanDelete(t *testing.T, a, b keys.Store) {
	t.Helper()
	ctx := context.Background()
	regA, regB := twoNodes(t, a, b)
	if err := regA.PutPlan(ctx, &keys.Plan{Name: "base", Models: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	const trials = 100
	deleted, refused := 0, 0
	for i := range trials {
		plan := fmt.Sprintf("doomed-%d", i)
		if err := regA.PutPlan(ctx, &keys.Plan{Name: plan, Models: []string{"*"}}); err != nil {
			t.Fatal(err)
		}
		mover, _, err := regB.CreateKey(ctx, keys.KeySpec{Name: "mover", Plan: "base"})
		if err != nil {
			t.Fatal(err)
		}
		var (
			wg        sync.WaitGroup
			deleteErr error
		)
		wg.Go(func() { deleteErr = regA.DeletePlan(ctx, plan) })
		wg.Go(func() {
			_, _, err := regB.CreateKey(ctx, keys.KeySpec{Name: "newcomer", Plan: plan})
			if err != nil && !errors.Is(err, keys.ErrPlanNotFound) {
				t.Errorf("trial %d: CreateKey: %v", i, err)
			}
			_, err = regB.UpdateKey(ctx, mover.ID, keys.KeyChanges{Plan: &plan})
			if err != nil && !errors.Is(err, keys.ErrPlanNotFound) {
				t.Errorf("trial %d: UpdateKey: %v", i, err)
			}
		})
		wg.Wait()
		switch {
		case deleteErr == nil:
			deleted++
		case errors.Is(deleteErr, keys.ErrPlanInUse):
			refused++
		default:
			t.Fatalf("trial %d: DeletePlan: %v", i, deleteErr)
		}
		checkNoDanglingKeys(t, a, fmt.Sprintf("trial %d", i))
	}
	t.Logf("%d trials: %d deletes won, %d refused as in use", trials, deleted, refused)

	// The counts behind the check must not have leaked: once every key is
	// revoked, every plan can be deleted.
	all, err := a.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		if _, err := regB.RevokeKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
	}
	plans, err := a.Plans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plans {
		if err := regA.DeletePlan(ctx, p.Name); err != nil {
			t.Fatalf("DeletePlan(%s) with every key revoked: %v", p.Name, err)
		}
	}
}

// checkNoDanglingKeys fails the test if an unrevoked key in s names a plan s
// does not have.
func checkNoDanglingKeys(t *testing.T, s keys.Store, when string) {
	t.Helper()
	ctx := context.Background()
	all, err := s.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		if !k.RevokedAt.IsZero() {
			continue
		}
		if _, err := s.Plan(ctx, k.Plan); err != nil {
			t.Fatalf("%s: unrevoked key %s names plan %s: %v", when, k.ID, k.Plan, err)
		}
	}
}

func TestPlanDeleteRacesKeyWritesAcrossValkeyNodes(t *testing.T) {
	raceOnValkey(t, "planrace", racePlanDelete)
}

func TestPlanDeleteRacesKeyWritesOnBolt(t *testing.T) { raceOnBolt(t, racePlanDelete) }
