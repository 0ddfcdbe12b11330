package keys

import (
	"cmp"
	"context"
	"slices"
)

// Store persists key and plan records. The Registry is its only user on the
// request path and only calls KeyByHash and Plan there, on cache misses.
//
// Implementations are safe for concurrent use. Every *Key and *Plan they
// return is a fresh copy the caller owns, and they keep no reference to the
// values passed in. Errors for missing records wrap ErrNotFound.
// storetest.Run is the conformance suite every implementation must pass.
type Store interface {
	// PutKey inserts k or replaces the key with the same ID, as a
	// compare-and-set: k.Revision must equal the stored record's revision
	// (0 when there is none), else nothing is written and the error wraps
	// ErrConflict. On success the stored revision, and k.Revision, become
	// k.Revision+1. Revocation is terminal: a write that would clear a stored
	// RevokedAt is refused with an error wrapping ErrRevoked. When the
	// replacement carries a different Hash (a rotation), the old hash stops
	// resolving in the same atomic step. An unrevoked key may only be written
	// onto a plan that exists, checked in the same atomic step (else the
	// error wraps ErrPlanNotFound), so that together with DeletePlan no
	// unrevoked key ever names a missing plan, however writes interleave
	// across nodes.
	PutKey(ctx context.Context, k *Key) error
	// KeyByID returns the key with the given id.
	KeyByID(ctx context.Context, id string) (*Key, error)
	// KeyByHash returns the key whose secret hashes to hash.
	KeyByHash(ctx context.Context, hash [32]byte) (*Key, error)
	// Keys returns all keys ordered by CreatedAt, then ID.
	Keys(ctx context.Context) ([]*Key, error)
	// PutPlan validates p with Compile and inserts or replaces the plan of
	// that name, whole: the last write wins. Errors from validation wrap
	// ErrInvalidPlan.
	PutPlan(ctx context.Context, p *Plan) error
	// Plan returns the named plan, compiled.
	Plan(ctx context.Context, name string) (*Plan, error)
	// Plans returns all plans ordered by name, compiled.
	Plans(ctx context.Context) ([]*Plan, error)
	// DeletePlan removes the named plan unless an unrevoked key names it
	// (then the error wraps ErrPlanInUse), checked in the same atomic step
	// as the delete. Expired keys count as users: only revocation releases
	// a plan.
	DeletePlan(ctx context.Context, name string) error
	// Close releases the store's resources. Calls after Close fail.
	Close() error
}

// SortKeys sorts keys into the order Store.Keys returns: by CreatedAt, then ID.
func SortKeys(keys []*Key) {
	slices.SortFunc(keys, func(a, b *Key) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}
