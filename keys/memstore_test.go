package keys

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
)

// memStore is an in-memory Store for the registry's tests: fast, and easy to
// wrap with counters and hooks. TestMemStoreConforms holds it to the same
// suite as the real stores, so registry tests do not pass because of a lax fake.
type memStore struct {
	mu     sync.Mutex
	keys   map[string]*Key
	hashes map[[32]byte]string
	plans  map[string]*Plan
	closed bool
}

func newMemStore() *memStore {
	return &memStore{keys: map[string]*Key{}, hashes: map[[32]byte]string{}, plans: map[string]*Plan{}}
}

// NewMemStoreForTest and ReopenMemStoreForTest expose memStore to the external
// conformance test.
func NewMemStoreForTest() Store { return newMemStore() }

func ReopenMemStoreForTest(old Store) Store {
	m := old.(*memStore)
	m.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	return &memStore{keys: maps.Clone(m.keys), hashes: maps.Clone(m.hashes), plans: maps.Clone(m.plans)}
}

var errClosed = errors.New("store closed")

func (m *memStore) PutKey(ctx context.Context, k *Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	if k.ID == "" {
		return fmt.Errorf("keys: put key: %w: empty id", ErrInvalidKey)
	}
	if owner, ok := m.hashes[k.Hash]; ok && owner != k.ID {
		return fmt.Errorf("keys: put key %s: %w: hash already belongs to key %s", k.ID, ErrInvalidKey, owner)
	}
	old := m.keys[k.ID]
	if err := checkPut(old, k); err != nil {
		return fmt.Errorf("keys: put key %s: %w", k.ID, err)
	}
	if _, ok := m.plans[k.Plan]; !ok && k.RevokedAt.IsZero() {
		return fmt.Errorf("keys: put key %s: plan %q: %w", k.ID, k.Plan, ErrPlanNotFound)
	}
	if old != nil {
		delete(m.hashes, old.Hash)
	}
	k.Revision++
	m.keys[k.ID] = k.Clone()
	m.hashes[k.Hash] = k.ID
	return nil
}

// putStranded stores k as it is, bypassing PutKey's plan check: a key left
// on a deleted plan by data written before plan deletes were atomic, which
// the Registry must still handle.
func (m *memStore) putStranded(k *Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[k.ID] = k.Clone()
	m.hashes[k.Hash] = k.ID
}

func (m *memStore) KeyByID(ctx context.Context, id string) (*Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	k, ok := m.keys[id]
	if !ok {
		return nil, fmt.Errorf("keys: key %s: %w", id, ErrNotFound)
	}
	return k.Clone(), nil
}

func (m *memStore) KeyByHash(ctx context.Context, hash [32]byte) (*Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	id, ok := m.hashes[hash]
	if !ok {
		return nil, fmt.Errorf("keys: key by hash: %w", ErrNotFound)
	}
	return m.keys[id].Clone(), nil
}

func (m *memStore) Keys(ctx context.Context) ([]*Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	all := make([]*Key, 0, len(m.keys))
	for _, k := range m.keys {
		all = append(all, k.Clone())
	}
	SortKeys(all)
	return all, nil
}

func (m *memStore) PutPlan(ctx context.Context, p *Plan) error {
	c := copyPlan(p)
	if err := c.Compile(); err != nil {
		return fmt.Errorf("keys: put plan: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	m.plans[p.Name] = c
	return nil
}

func (m *memStore) Plan(ctx context.Context, name string) (*Plan, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	p, ok := m.plans[name]
	if !ok {
		return nil, fmt.Errorf("keys: plan %s: %w", name, ErrNotFound)
	}
	c := copyPlan(p)
	if err := c.Compile(); err != nil {
		return nil, err
	}
	return c, nil
}

func (m *memStore) Plans(ctx context.Context) ([]*Plan, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	var all []*Plan
	for _, name := range slices.Sorted(maps.Keys(m.plans)) {
		c := copyPlan(m.plans[name])
		if err := c.Compile(); err != nil {
			return nil, err
		}
		all = append(all, c)
	}
	return all, nil
}

func (m *memStore) DeletePlan(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	if _, ok := m.plans[name]; !ok {
		return fmt.Errorf("keys: delete plan %s: %w", name, ErrNotFound)
	}
	// Under m.mu the scan is as atomic as the real stores' counts.
	for _, k := range m.keys {
		if k.Plan == name && k.RevokedAt.IsZero() {
			return fmt.Errorf("keys: delete plan %s: %w by key %s", name, ErrPlanInUse, k.ID)
		}
	}
	delete(m.plans, name)
	return nil
}

func (m *memStore) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
