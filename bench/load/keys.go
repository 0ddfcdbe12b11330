package load

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
)

// Keys spreads a run's requests over many API keys, as traffic from many
// clients does, so that what a gateway keeps per key (its cache, its
// buckets) is exercised by a working set of realistic size and shape.
type Keys struct {
	// Secrets are the keys, each sent as "Authorization: Bearer <secret>".
	Secrets []string
	// Dist is how each request's key is drawn.
	Dist Dist
	// ZipfS is the exponent of a Zipf draw, above 1: the larger, the more the
	// traffic crowds onto the first keys. DefaultZipfS when zero.
	ZipfS float64
}

// Dist is how Keys draws a request's key.
type Dist int

const (
	// Cycle sends the keys in turn across all workers: n requests send each
	// of n keys once, which is how a cache is filled with all of them.
	Cycle Dist = iota
	// Uniform draws every key alike: the working set is all of them.
	Uniform
	// Zipf draws the k-th key in proportion to 1/(k+1)^ZipfS: a few keys
	// carry most of the traffic and the rest a long tail, as with real
	// clients.
	Zipf
)

// DefaultZipfS is the Zipf exponent when Keys.ZipfS is zero. With it and
// 100,000 keys, the most used key carries 13% of the requests, the 100 most
// used 58% and the 10,000 most used 89%.
const DefaultZipfS = 1.1

// MaxKeys bounds Keys.Secrets.
const MaxKeys = 10_000_000

func (d Dist) String() string {
	switch d {
	case Cycle:
		return "cycle"
	case Uniform:
		return "uniform"
	case Zipf:
		return "zipf"
	}
	return fmt.Sprintf("Dist(%d)", int(d))
}

func (k *Keys) check() error {
	if len(k.Secrets) == 0 || len(k.Secrets) > MaxKeys {
		return fmt.Errorf("load: keys: %d secrets, want 1 to %d", len(k.Secrets), MaxKeys)
	}
	switch k.Dist {
	case Cycle, Uniform:
	case Zipf:
		if k.ZipfS != 0 && !(k.ZipfS > 1) {
			return fmt.Errorf("load: keys: zipf exponent %v, want more than 1", k.ZipfS)
		}
	default:
		return errors.New("load: keys: unknown distribution " + k.Dist.String())
	}
	return nil
}

// bearers returns the Authorization values of the keys, made once so that
// setting one on a request copies bytes and allocates nothing.
func (k *Keys) bearers() [][]byte {
	b := make([][]byte, len(k.Secrets))
	for i, s := range k.Secrets {
		b[i] = []byte("Bearer " + s)
	}
	return b
}

// keyPicker draws one worker's keys. Each worker has its own generator,
// seeded by its index, so runs repeat and workers share no lock.
type keyPicker struct {
	bearers [][]byte
	dist    Dist
	cycle   *atomic.Uint64 // shared by the run's workers
	rng     *rand.Rand
	zipf    *rand.Zipf
}

func newKeyPicker(k *Keys, bearers [][]byte, cycle *atomic.Uint64, seed uint64) keyPicker {
	p := keyPicker{bearers: bearers, dist: k.Dist, cycle: cycle, rng: rand.New(rand.NewPCG(seed, 0x6b657973))}
	if k.Dist == Zipf {
		s := k.ZipfS
		if s == 0 {
			s = DefaultZipfS
		}
		p.zipf = rand.NewZipf(p.rng, s, 1, uint64(len(bearers)-1))
	}
	return p
}

// index returns the index of the next key.
func (p *keyPicker) index() int {
	switch p.dist {
	case Uniform:
		return p.rng.IntN(len(p.bearers))
	case Zipf:
		return int(p.zipf.Uint64())
	}
	return int((p.cycle.Add(1) - 1) % uint64(len(p.bearers)))
}

// next returns the Authorization value of the next key.
func (p *keyPicker) next() []byte { return p.bearers[p.index()] }
