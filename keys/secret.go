package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Secret layout: "sk-" + 43 base64url characters of 32 random bytes + 6
// base64url characters of the CRC-32 of everything before them. The checksum
// lets Authenticate turn away typos and random strings before any cache or
// store sees them.
const (
	secretPrefix  = "sk-"
	secretBodyLen = 43 // base64.RawURLEncoding.EncodedLen(32)
	secretSumLen  = 6  // base64.RawURLEncoding.EncodedLen(4)
	secretSummed  = len(secretPrefix) + secretBodyLen
	secretLen     = secretSummed + secretSumLen
	secretRandLen = 32
)

// SecretLen is the length in bytes of every secret NewSecret returns.
const SecretLen = secretLen

// NewSecret returns a new random API key secret. It is the only time the
// secret exists in clear: callers show it once and keep HashSecret of it.
func NewSecret() (string, error) {
	var raw [secretRandLen]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("keys: new secret: %w", err)
	}
	var b [secretLen]byte
	copy(b[:], secretPrefix)
	base64.RawURLEncoding.Encode(b[len(secretPrefix):secretSummed], raw[:])
	putChecksum(&b)
	return string(b[:]), nil
}

// ParseSecret checks that b is a well-formed secret and returns its SHA-256,
// the value stored in Key.Hash. Any defect yields ErrMalformedKey. It runs on
// every request and does not allocate.
func ParseSecret(b []byte) ([32]byte, error) {
	if len(b) != secretLen || string(b[:len(secretPrefix)]) != secretPrefix {
		return [32]byte{}, ErrMalformedKey
	}
	for _, c := range b[len(secretPrefix):] {
		if !isBase64URL(c) {
			return [32]byte{}, ErrMalformedKey
		}
	}
	// 32 bytes fill 43 characters with 2 bits to spare; a non-zero spare makes
	// a second spelling of the same random bytes, which NewSecret never writes.
	if base64Value(b[secretSummed-1])&0b11 != 0 {
		return [32]byte{}, ErrMalformedKey
	}
	var want [secretLen]byte
	copy(want[:secretSummed], b)
	putChecksum(&want)
	if string(want[secretSummed:]) != string(b[secretSummed:]) {
		return [32]byte{}, ErrMalformedKey
	}
	return sha256.Sum256(b), nil
}

// HashSecret returns the SHA-256 of s without validating it; for well-formed
// secrets it equals what ParseSecret returns.
func HashSecret(s string) [32]byte {
	return sha256.Sum256([]byte(s))
}

// putChecksum writes the checksum of b[:secretSummed] into the rest of b.
//
// It computes the CRC itself: crc32.ChecksumIEEE reaches its implementation
// through a function value, which makes its argument escape and would cost
// ParseSecret an allocation per request. Bytewise over 46 bytes it takes well
// under 100ns.
func putChecksum(b *[secretLen]byte) {
	tab := crc32.IEEETable
	crc := ^uint32(0)
	for _, c := range b[:secretSummed] {
		crc = tab[byte(crc)^c] ^ crc>>8
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], ^crc)
	base64.RawURLEncoding.Encode(b[secretSummed:], sum[:])
}

// isBase64URL reports whether c is in the base64url alphabet (RFC 4648 §5).
func isBase64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// base64Value returns the 6-bit value of a base64url character; c must satisfy
// isBase64URL.
func base64Value(c byte) byte {
	switch {
	case c >= 'A' && c <= 'Z':
		return c - 'A'
	case c >= 'a' && c <= 'z':
		return c - 'a' + 26
	case c >= '0' && c <= '9':
		return c - '0' + 52
	case c == '-':
		return 62
	default:
		return 63
	}
}
