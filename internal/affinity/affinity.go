// Package affinity remembers, for each stored response the Responses API
// created through the gateway, which upstream and route made it and which
// key asked for it: the follow-ups (GET, DELETE, cancel, input_items, and a
// create that names it as previous_response_id) must reach the upstream that
// holds it, and only for the key that created it. Every node must know what
// any node created, so the memory lives in the store: a bbolt file for one
// node (BoltStore), Valkey for many (ValkeyStore). It is bounded in age
// (Options.Retention, OpenAI's 30 days by default) and in size
// (Options.MaxIDs): past the cap the oldest ids are forgotten to make room,
// so a follow-up on a forgotten id answers 404 as one past its retention does.
package affinity

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Record is what the gateway remembers of one response.
type Record struct {
	// Upstream is the name of the upstream that created the response.
	Upstream string
	// Model is the gateway's name of the model it was created with (what
	// the client asked for, and what the plan and rate limits speak of).
	Model string
	// RouteModel is the model's name on the upstream (the route's model).
	RouteModel string
	// KeyID is the id of the key that created it: no other key may see it.
	KeyID string
	// Created is when the gateway learnt of it; it bounds its age.
	Created time.Time
}

// Store remembers response ids. Implementations are safe for concurrent use.
type Store interface {
	// Remember records id; an id remembered again replaces its record.
	Remember(ctx context.Context, id string, r Record) error
	// Lookup returns id's record; false when it was never remembered, was
	// forgotten, or is older than the retention.
	Lookup(ctx context.Context, id string) (Record, bool, error)
	// Forget drops id (a deleted response); forgetting an unknown id is no
	// error.
	Forget(ctx context.Context, id string) error
	Close() error
}

// Defaults of Options.
const (
	// DefaultRetention is how long OpenAI keeps a stored response.
	DefaultRetention = 30 * 24 * time.Hour
	// DefaultMaxIDs bounds the store at about 100 bytes an id: some 100 MB.
	DefaultMaxIDs = 1_000_000
)

// Options bound a Store.
type Options struct {
	// Retention is how long an id is remembered (DefaultRetention when 0).
	Retention time.Duration
	// MaxIDs is how many ids are remembered at most (DefaultMaxIDs when 0);
	// remembering one more forgets the oldest.
	MaxIDs int64
	// Now is the clock (time.Now when nil); tests inject theirs.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.MaxIDs <= 0 {
		o.MaxIDs = DefaultMaxIDs
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// MaxIDLen bounds the length of an id the store takes: OpenAI's are about 50
// bytes; a longer one is refused rather than stored.
const MaxIDLen = 256

// ErrBadID: the id is empty or longer than MaxIDLen.
var ErrBadID = errors.New("affinity: the response id is empty or too long")

func checkID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return ErrBadID
	}
	return nil
}

// recordVersion leads every encoded record, so that the layout can change.
const recordVersion = 1

// appendRecord encodes r: a version byte, Created in unix milliseconds, then
// each string with its length.
func appendRecord(b []byte, r Record) []byte {
	b = append(b, recordVersion)
	b = binary.AppendVarint(b, r.Created.UnixMilli())
	for _, s := range [...]string{r.Upstream, r.Model, r.RouteModel, r.KeyID} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// decodeRecord reads what appendRecord wrote.
func decodeRecord(b []byte) (Record, error) {
	var r Record
	if len(b) == 0 || b[0] != recordVersion {
		return r, fmt.Errorf("affinity: record of unknown version")
	}
	b = b[1:]
	ms, n := binary.Varint(b)
	if n <= 0 {
		return r, fmt.Errorf("affinity: record without its time")
	}
	b = b[n:]
	r.Created = time.UnixMilli(ms)
	for _, s := range [...]*string{&r.Upstream, &r.Model, &r.RouteModel, &r.KeyID} {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return r, fmt.Errorf("affinity: record cut short")
		}
		*s = string(b[n : n+int(l)])
		b = b[n+int(l):]
	}
	return r, nil
}

// expired reports whether r is past the retention at now.
func expired(r Record, now time.Time, retention time.Duration) bool {
	return now.Sub(r.Created) >= retention
}
