package upstream

import (
	"reflect"

	"github.com/tokenhub/tokenhub/config"
)

// Set is the upstreams of one configuration, by name. It is immutable once
// built, so a request may hold one while a reload builds the next.
type Set struct {
	list   []*Upstream
	byName map[string]*Upstream
}

// NewSet builds the upstreams cfgs declares. An upstream of prev (nil at
// start) whose config is unchanged is reused, warm connections and all; a
// reload keeps it. On error, the upstreams it made are released and prev is
// untouched.
func NewSet(cfgs []config.Upstream, prev *Set) (_ *Set, err error) {
	s := &Set{byName: make(map[string]*Upstream, len(cfgs))}
	defer func() {
		if err != nil {
			for _, u := range s.NotIn(prev) {
				u.Release()
			}
		}
	}()
	for i := range cfgs {
		c := &cfgs[i]
		u := prev.Lookup(c.Name)
		if u == nil || !reflect.DeepEqual(u.config, *c) {
			if u, err = New(c); err != nil {
				return nil, err
			}
		}
		s.byName[u.name] = u
		s.list = append(s.list, u)
	}
	return s, nil
}

// Lookup returns the upstream named name, or nil; a nil Set has none.
func (s *Set) Lookup(name string) *Upstream {
	if s == nil {
		return nil
	}
	return s.byName[name]
}

// All returns the upstreams in config order. Do not modify the slice.
func (s *Set) All() []*Upstream { return s.list }

// NotIn returns the upstreams of s that other (which may be nil) does not
// hold: with s the old set and other the new, those a reload retires; the
// other way round, those it made.
func (s *Set) NotIn(other *Set) []*Upstream {
	var out []*Upstream
	for _, u := range s.list {
		if other.Lookup(u.name) != u {
			out = append(out, u)
		}
	}
	return out
}
