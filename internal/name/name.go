// Package name holds the one rule for names that travel in URLs and Valkey
// keys (plan names, upstream names, Valkey prefixes), shared by packages
// that cannot import each other.
package name

// Rule says what Valid accepts, for error messages.
const Rule = "1-64 letters, digits, '-', '_' or '.'"

// Valid reports whether s is 1-64 bytes of ASCII letters, digits, '-', '_'
// and '.'.
func Valid(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
