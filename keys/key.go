package keys

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
	"unicode/utf8"
)

// Key is the record of one API key. The secret itself is never stored: Hash
// identifies the key on each request and Last4 helps people tell keys apart.
type Key struct {
	// ID is "key_" followed by 24 lowercase hex digits; it is public and names
	// the key in the admin API and in logs.
	ID   string
	Name string
	// Plan is the name of the Plan the key is subject to.
	Plan string
	// Hash is the SHA-256 of the secret (see ParseSecret).
	Hash [32]byte
	// Last4 is the last four characters of the secret.
	Last4     string
	CreatedAt time.Time
	// ExpiresAt is when the key stops working; zero means never.
	ExpiresAt time.Time
	// RevokedAt is when the key was revoked; zero means it is active.
	RevokedAt time.Time
	// RPM and TPM, when not zero, lower the plan's requests and tokens per
	// minute for this key (the lower of the two applies).
	RPM int64
	TPM int64
	// Revision counts the writes of this record: 0 for a key never stored,
	// then 1, 2, ... A Store's PutKey succeeds only when Revision equals the
	// stored one, so concurrent read-modify-writes on any number of nodes
	// cannot overwrite each other (see Store.PutKey).
	Revision uint64
}

// Limit returns the effective per-minute limit of a plan's limit and a key's
// override, where 0 means "none": the lower of those set.
func Limit(plan, key int64) int64 {
	switch {
	case key == 0:
		return plan
	case plan == 0:
		return key
	}
	return min(plan, key)
}

// maxKeyNameLen bounds Key.Name so that names stay printable in tables and logs.
const maxKeyNameLen = 256

// Check reports whether k may be used at now: nil, ErrRevoked or ErrExpired.
func (k *Key) Check(now time.Time) error {
	if !k.RevokedAt.IsZero() {
		return ErrRevoked
	}
	if !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) {
		return ErrExpired
	}
	return nil
}

// Clone returns a copy of k that shares nothing with it.
func (k *Key) Clone() *Key {
	c := *k
	return &c
}

// newKeyID returns a fresh random key id.
func newKeyID() (string, error) {
	var raw [12]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("keys: new key id: %w", err)
	}
	return "key_" + hex.EncodeToString(raw[:]), nil
}

// validKeyName reports whether s can be a Key.Name: valid UTF-8 of at most
// maxKeyNameLen bytes. Empty names are allowed; the id still identifies the key.
func validKeyName(s string) bool {
	return len(s) <= maxKeyNameLen && utf8.ValidString(s)
}
