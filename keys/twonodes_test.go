package keys_test

import (
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/valkeytest"
	"github.com/tokenhub/tokenhub/keys"
)

// cacheSettings are the config's cache defaults, which keys takes explicitly.
var cacheSettings = keys.RegistryOptions{MaxKeys: 10_000, NegativeTTL: 2 * time.Second, StaleIfError: 4 * time.Second}

// twoNodes returns a Registry on each of a and b: two nodes on one store,
// as the race tests want them. They are closed when the test ends.
func twoNodes(t *testing.T, a, b keys.Store) (*keys.Registry, *keys.Registry) {
	t.Helper()
	regA, err := keys.NewRegistry(a, cacheSettings)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(regA.Close)
	regB, err := keys.NewRegistry(b, cacheSettings)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(regB.Close)
	return regA, regB
}

// raceOnValkey runs race with two clients of one real Valkey under prefix;
// raceOnBolt with one bolt file, which a single process opens once.
func raceOnValkey(t *testing.T, prefix string, race func(t *testing.T, a, b keys.Store)) {
	srv := valkeytest.Start(t)
	a := openValkey(t, srv, prefix, 0)
	defer a.Close()
	b := openValkey(t, srv, prefix, 0)
	defer b.Close()
	race(t, a, b)
}

func raceOnBolt(t *testing.T, race func(t *testing.T, a, b keys.Store)) {
	s, err := keys.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	race(t, s, s)
}
