package keys_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/tokenhub/tokenhub/keys"
)

// raceRevoke is the attacker's test of terminal revocation: two Registries
// ("nodes") on one store, one revoking a key while the other edits or rotates
// it, many times. Whenever RevokeKey was acknowledged the key must end
// revoked in the store and be refused by Authenticate on both nodes, with
// every secret it ever had.
func raceRevoke(t *testing.T, a, b keys.Store) {
	t.Helper()
	ctx := context.Background()
	regA, regB := twoNodes(t, a, b)
	if err := regA.PutPlan(ctx, &keys.Plan{Name: "free", Models: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	const trials = 60
	for i := range trials {
		k, secret, err := regA.CreateKey(ctx, keys.KeySpec{Name: "victim", Plan: "free"})
		if err != nil {
			t.Fatal(err)
		}
		secrets := []string{secret}
		var (
			wg        sync.WaitGroup
			revokeErr error
		)
		wg.Go(func() { _, revokeErr = regA.RevokeKey(ctx, k.ID) })
		wg.Go(func() {
			// Several edits, so that one of them straddles the revoke.
			for j := range 4 {
				if (i+j)%2 == 0 {
					name := "renamed"
					if _, err := regB.UpdateKey(ctx, k.ID, keys.KeyChanges{Name: &name}); err != nil {
						t.Errorf("trial %d: UpdateKey: %v", i, err)
					}
					continue
				}
				_, s, err := regB.RotateKey(ctx, k.ID)
				switch {
				case err == nil:
					secrets = append(secrets, s)
				case !errors.Is(err, keys.ErrRevoked):
					t.Errorf("trial %d: RotateKey: %v", i, err)
				}
			}
		})
		wg.Wait()
		if revokeErr != nil {
			t.Fatalf("trial %d: RevokeKey: %v", i, revokeErr)
		}
		got, err := a.KeyByID(ctx, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.RevokedAt.IsZero() {
			t.Fatalf("trial %d: RevokeKey was acknowledged, yet the stored key is not revoked", i)
		}
		for _, reg := range []*keys.Registry{regA, regB} {
			for _, s := range secrets {
				if _, _, err := reg.Authenticate(ctx, []byte(s)); !errors.Is(err, keys.ErrRevoked) && !errors.Is(err, keys.ErrUnknownKey) {
					t.Fatalf("trial %d: Authenticate after an acknowledged revoke = %v, want ErrRevoked or ErrUnknownKey (rotated away)", i, err)
				}
			}
		}
	}
}

func TestRevokeRacesEditsAcrossValkeyNodes(t *testing.T) { raceOnValkey(t, "race", raceRevoke) }

func TestRevokeRacesEditsOnBolt(t *testing.T) { raceOnBolt(t, raceRevoke) }
