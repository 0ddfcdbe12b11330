// Package keys holds what tokenhub knows about its API keys: the secret format,
// the key and plan records, the Store that persists them and the Registry that
// authenticates requests against a cache in front of that store.
//
// Secrets are never stored; records carry the SHA-256 of the secret, so a
// leaked database does not leak usable keys.
package keys
