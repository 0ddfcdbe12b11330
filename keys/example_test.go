package keys_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tokenhub/tokenhub/keys"
)

// The Registry is what the gateway asks on every request: it issues keys on
// plans, authenticates secrets from its cache (a store read only on a miss),
// and refuses a revoked key from the next call on.
func ExampleRegistry() {
	dir, _ := os.MkdirTemp("", "tokenhub-example")
	defer os.RemoveAll(dir)
	store, err := keys.OpenBolt(dir)
	if err != nil {
		panic(err)
	}
	defer store.Close()
	reg, err := keys.NewRegistry(store, keys.RegistryOptions{
		MaxKeys: 10_000, NegativeTTL: 2 * time.Second, StaleIfError: 4 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	defer reg.Close()

	ctx := context.Background()
	if err := reg.PutPlan(ctx, &keys.Plan{Name: "free", Models: []string{"gpt-4o-mini", "mock*"}, RPM: 60}); err != nil {
		panic(err)
	}
	key, secret, err := reg.CreateKey(ctx, keys.KeySpec{Name: "laptop", Plan: "free"})
	if err != nil {
		panic(err)
	}

	k, plan, err := reg.Authenticate(ctx, []byte(secret))
	fmt.Println(k.ID == key.ID, plan.Name, plan.Allows([]byte("mock-2")), plan.Allows([]byte("gpt-4o")), err)

	if _, err := reg.RevokeKey(ctx, key.ID); err != nil {
		panic(err)
	}
	_, _, err = reg.Authenticate(ctx, []byte(secret))
	fmt.Println(errors.Is(err, keys.ErrRevoked))
	// Output:
	// true free true false <nil>
	// true
}
