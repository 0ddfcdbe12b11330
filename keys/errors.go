package keys

import "errors"

// Sentinel errors of this package. Callers test for them with errors.Is; the
// proxy maps each to one HTTP status in one place.
var (
	// ErrMalformedKey means the presented secret is not a tokenhub secret at all
	// (wrong length, prefix, alphabet or checksum); no store was consulted.
	ErrMalformedKey = errors.New("malformed api key")
	// ErrUnknownKey means the secret is well formed but no key has its hash.
	ErrUnknownKey = errors.New("unknown api key")
	// ErrRevoked means the key exists but was revoked.
	ErrRevoked = errors.New("api key revoked")
	// ErrExpired means the key exists but its ExpiresAt has passed.
	ErrExpired = errors.New("api key expired")
	// ErrNotFound means no key has the requested id, or no plan the requested name.
	ErrNotFound = errors.New("not found")
	// ErrPlanNotFound means a key names a plan that does not exist.
	ErrPlanNotFound = errors.New("plan not found")
	// ErrPlanInUse means a plan cannot be deleted because unrevoked keys use it.
	ErrPlanInUse = errors.New("plan in use")
	// ErrUnavailable means the store could not be reached recently and the
	// answer was not in the cache; the caller should retry shortly.
	ErrUnavailable = errors.New("key store unavailable")
	// ErrInvalidKey is wrapped by validation errors of key fields (such as a
	// name that is too long).
	ErrInvalidKey = errors.New("invalid key")
	// ErrConflict means a write was refused because the stored record changed
	// since the writer read it (its Revision is no longer the stored one);
	// the writer reads again and retries.
	ErrConflict = errors.New("record changed concurrently")
)
