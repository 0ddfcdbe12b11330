// Package usd owns tokenhub's money: amounts in micro-dollars (Micro, what a
// plan and a price say) and pico-dollars (Pico, what a request costs, exactly),
// a model's Price per million tokens, and the bounds on both. Money is always
// an integer: floats never carry it.
//
// usd is a leaf: it imports nothing of tokenhub's, so keys, limits and config
// can all use it without importing each other.
package usd

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Micro is an amount of money in millionths of a US dollar. Floats never
// carry money in tokenhub: rounding must not lose or invent spend.
type Micro int64

// maxMicro bounds parsed amounts so that sums of many of them cannot overflow.
const maxMicro = Micro(1) << 53

// Bounds on what a plan and a price may say. Spend is counted in
// pico-dollars in an int64, which holds $9.2 million: a cap of at most $1
// million leaves room for every node's leases and for spend past a cap,
// and a price of at most $1,000 per million tokens keeps the worst case of
// any request (128 choices of 10 million tokens) in range.
const (
	MaxCap          = Micro(1_000_000_000_000) // $1,000,000
	MaxPricePerMTok = Micro(1_000_000_000)     // $1,000
)

// Parse parses a decimal dollar amount such as "10", "0.5" or "0.000150"
// exactly. At most six decimals are accepted; more would need rounding.
func Parse(s string) (Micro, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty amount")
	}
	if s[0] == '-' {
		return 0, fmt.Errorf("amount %q is negative", s)
	}
	s = strings.TrimPrefix(s, "+")
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" && (!hasDot || frac == "") {
		return 0, fmt.Errorf("amount %q is not a decimal number", s)
	}
	if len(frac) > 6 {
		return 0, fmt.Errorf("amount %q has more than 6 decimals (micro-dollar precision)", s)
	}
	var w, f uint64
	var err error
	if whole != "" {
		if w, err = strconv.ParseUint(whole, 10, 63); err != nil {
			return 0, fmt.Errorf("amount %q is not a decimal number", s)
		}
	}
	if frac != "" {
		if f, err = strconv.ParseUint(frac, 10, 32); err != nil {
			return 0, fmt.Errorf("amount %q is not a decimal number", s)
		}
		for i := len(frac); i < 6; i++ {
			f *= 10
		}
	}
	if w > uint64(maxMicro/1_000_000) {
		return 0, fmt.Errorf("amount %q is too large", s)
	}
	return Micro(w*1_000_000 + f), nil
}

// String formats m as a decimal dollar amount without trailing zeros: "0.5", "10".
func (m Micro) String() string { return string(m.AppendText(nil)) }

// AppendText appends m in the form String returns.
func (m Micro) AppendText(b []byte) []byte { return appendDecimal(b, int64(m), 6) }

// appendDecimal appends v / 10^decimals in decimal, exactly, without
// trailing zeros: the one formatter of Micro and Pico.
func appendDecimal(b []byte, v int64, decimals int) []byte {
	if v < 0 {
		b = append(b, '-')
		v = -v
	}
	unit := int64(1)
	for range decimals {
		unit *= 10
	}
	b = strconv.AppendInt(b, v/unit, 10)
	frac := v % unit
	if frac == 0 {
		return b
	}
	var digits [18]byte
	for i := decimals - 1; i >= 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	n := decimals
	for digits[n-1] == '0' {
		n--
	}
	b = append(b, '.')
	return append(b, digits[:n]...)
}

// MarshalJSON writes m as a JSON number of dollars, exact to the micro-dollar.
func (m Micro) MarshalJSON() ([]byte, error) { return m.AppendText(nil), nil }

// UnmarshalJSON reads a JSON number or string of dollars.
func (m *Micro) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		*m = 0
		return nil
	}
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	v, err := Parse(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// UnmarshalYAML reads a YAML scalar of dollars (gopkg.in/yaml-style interface,
// which go.yaml.in/yaml/v3 honours).
func (m *Micro) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	v, err := Parse(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}
