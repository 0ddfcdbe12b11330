package keys

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tokenhub/tokenhub/internal/usd"
)

// The record encoding is the on-disk (and, later, in-Valkey) form of keys and
// plans. It is separate from the Go types so that renaming a field or changing
// an API rendering never silently changes stored data. Times are UTC with
// nanoseconds; money is integer micro-dollars.

// recordVersion is written into every record so that a future format change can
// tell old records apart.
const recordVersion = 1

type keyRecord struct {
	V         int       `json:"v"`
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Plan      string    `json:"plan"`
	Hash      string    `json:"hash"` // hex SHA-256 of the secret
	Last4     string    `json:"last4"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	RPM       int64     `json:"rpm,omitempty"`
	TPM       int64     `json:"tpm,omitempty"`
	// Rev is Key.Revision; records written before revisions existed lack it
	// and read as 0, the revision of "never stored".
	Rev uint64 `json:"rev,omitempty"`
	// Write is a random id of the write that stored the record, set by
	// ValkeyStore so that a retried script can tell its own write, already
	// applied, from an identical one by another writer (see putKeyScript).
	Write string `json:"w,omitempty"`
}

type planRecord struct {
	V                  int      `json:"v"`
	Name               string   `json:"name"`
	Models             []string `json:"models"`
	RPM                int64    `json:"rpm"`
	TPM                int64    `json:"tpm"`
	MaxRequestMicroUSD int64    `json:"max_request_micro_usd"`
	MonthlyMicroUSD    int64    `json:"monthly_micro_usd"`
}

// encodeKey returns the stored form of k, with the revision it will have once
// stored: k.Revision+1.
func encodeKey(k *Key) ([]byte, error) { return encodeKeyWrite(k, "") }

// encodeKeyWrite is encodeKey with the id of the write that stores it.
func encodeKeyWrite(k *Key, writeID string) ([]byte, error) {
	b, err := json.Marshal(keyRecord{
		V:         recordVersion,
		ID:        k.ID,
		Name:      k.Name,
		Plan:      k.Plan,
		Hash:      hex.EncodeToString(k.Hash[:]),
		Last4:     k.Last4,
		CreatedAt: k.CreatedAt.UTC(),
		ExpiresAt: k.ExpiresAt.UTC(),
		RevokedAt: k.RevokedAt.UTC(),
		RPM:       k.RPM,
		TPM:       k.TPM,
		Rev:       k.Revision + 1,
		Write:     writeID,
	})
	if err != nil {
		return nil, fmt.Errorf("keys: encode key %s: %w", k.ID, err)
	}
	return b, nil
}

// decodeKey parses a record written by encodeKey into a new Key.
func decodeKey(b []byte) (*Key, error) {
	var r keyRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("keys: decode key record: %w", err)
	}
	if r.V != recordVersion {
		return nil, fmt.Errorf("keys: decode key %s: unsupported record version %d", r.ID, r.V)
	}
	k := &Key{
		ID:        r.ID,
		Name:      r.Name,
		Plan:      r.Plan,
		Last4:     r.Last4,
		CreatedAt: r.CreatedAt,
		ExpiresAt: r.ExpiresAt,
		RevokedAt: r.RevokedAt,
		RPM:       r.RPM,
		TPM:       r.TPM,
		Revision:  r.Rev,
	}
	if len(r.Hash) != hex.EncodedLen(len(k.Hash)) {
		return nil, fmt.Errorf("keys: decode key %s: hash must be %d hex digits", r.ID, hex.EncodedLen(len(k.Hash)))
	}
	if _, err := hex.Decode(k.Hash[:], []byte(r.Hash)); err != nil {
		return nil, fmt.Errorf("keys: decode key %s: hash: %w", r.ID, err)
	}
	return k, nil
}

// encodePlan returns the stored form of p.
func encodePlan(p *Plan) ([]byte, error) {
	b, err := json.Marshal(planRecord{
		V:                  recordVersion,
		Name:               p.Name,
		Models:             p.Models,
		RPM:                p.RPM,
		TPM:                p.TPM,
		MaxRequestMicroUSD: int64(p.MaxRequestUSD),
		MonthlyMicroUSD:    int64(p.MonthlyUSD),
	})
	if err != nil {
		return nil, fmt.Errorf("keys: encode plan %s: %w", p.Name, err)
	}
	return b, nil
}

// decodePlan parses a record written by encodePlan into a new, compiled Plan.
func decodePlan(b []byte) (*Plan, error) {
	var r planRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("keys: decode plan record: %w", err)
	}
	if r.V != recordVersion {
		return nil, fmt.Errorf("keys: decode plan %s: unsupported record version %d", r.Name, r.V)
	}
	p := &Plan{
		Name:          r.Name,
		Models:        r.Models,
		RPM:           r.RPM,
		TPM:           r.TPM,
		MaxRequestUSD: usd.Micro(r.MaxRequestMicroUSD),
		MonthlyUSD:    usd.Micro(r.MonthlyMicroUSD),
	}
	if err := p.Compile(); err != nil {
		return nil, fmt.Errorf("keys: decode plan %s: %w", r.Name, err)
	}
	return p, nil
}

// copyPlan returns an uncompiled copy of p's exported fields that shares no
// memory with p. Compiling a plain struct copy would write into the compiled
// plan's glob slice, which other goroutines may be reading.
func copyPlan(p *Plan) *Plan {
	return &Plan{
		Name:          p.Name,
		Models:        append([]string(nil), p.Models...),
		RPM:           p.RPM,
		TPM:           p.TPM,
		MaxRequestUSD: p.MaxRequestUSD,
		MonthlyUSD:    p.MonthlyUSD,
	}
}
