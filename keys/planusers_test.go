package keys

import (
	"context"
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestBoltDerivesPlanUsers: a file written before plan-users existed gets
// its counts from its keys when opened, so DeletePlan refuses a plan its
// old keys still use, and allows it once they are revoked.
func TestBoltDerivesPlanUsers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"used", "free"} {
		if err := s.PutPlan(ctx, &Plan{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	active := &Key{ID: "key_active", Plan: "used", Hash: [32]byte{1}}
	revoked := &Key{ID: "key_revoked", Plan: "free", Hash: [32]byte{2}}
	for _, k := range []*Key{active, revoked} {
		if err := s.PutKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	revoked.RevokedAt = revoked.CreatedAt.Add(1)
	if err := s.PutKey(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	// Make it an old file: no counts at all.
	err = s.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte(bucketPlanUsers)) })
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.DeletePlan(ctx, "used"); !errors.Is(err, ErrPlanInUse) {
		t.Fatalf("DeletePlan(used) on an old file = %v, want ErrPlanInUse", err)
	}
	if err := s.DeletePlan(ctx, "free"); err != nil {
		t.Fatalf("DeletePlan(free), used only by a revoked key, on an old file = %v", err)
	}
	active.RevokedAt = active.CreatedAt.Add(1)
	if err := s.PutKey(ctx, active); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePlan(ctx, "used"); err != nil {
		t.Fatalf("DeletePlan(used) once its key is revoked = %v", err)
	}
}
