package keys

import (
	"context"
	"errors"
	"fmt"
)

// CopyStore copies every plan, then every key, from src to dst, records as
// they are: ids, hashes, creation, expiry and revocation times. Plans go
// first so that no key in dst ever names a plan dst lacks. Records already in
// dst are replaced and records only in dst are left alone, so running it
// again, for instance after an interrupted run, is harmless. A key whose hash
// dst already gives to another id stops the copy with ErrInvalidKey. It is what `tokenhub migrate` does between the embedded
// store and Valkey, in either direction.
func CopyStore(ctx context.Context, dst, src Store) (keysCopied, plansCopied int, err error) {
	plans, err := src.Plans(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("keys: copy store: %w", err)
	}
	for _, p := range plans {
		if err := dst.PutPlan(ctx, p); err != nil {
			return 0, plansCopied, fmt.Errorf("keys: copy store: %w", err)
		}
		plansCopied++
	}
	all, err := src.Keys(ctx)
	if err != nil {
		return 0, plansCopied, fmt.Errorf("keys: copy store: %w", err)
	}
	for _, k := range all {
		if err := copyKey(ctx, dst, k); err != nil {
			return keysCopied, plansCopied, fmt.Errorf("keys: copy store: %w", err)
		}
		keysCopied++
	}
	return keysCopied, plansCopied, nil
}

// copyKey writes k over dst's record of the same id, whatever its revision,
// keeping dst's revocation if dst has one: revocation is terminal, even
// against a copy from an older store.
func copyKey(ctx context.Context, dst Store, k *Key) error {
	var err error
	for range maxWriteAttempts {
		c := k.Clone()
		c.Revision = 0
		cur, getErr := dst.KeyByID(ctx, k.ID)
		switch {
		case getErr == nil:
			c.Revision = cur.Revision
			if c.RevokedAt.IsZero() {
				c.RevokedAt = cur.RevokedAt
			}
		case !errors.Is(getErr, ErrNotFound):
			return getErr
		}
		if err = dst.PutKey(ctx, c); !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("key %s: gave up after %d attempts: %w", k.ID, maxWriteAttempts, err)
}
