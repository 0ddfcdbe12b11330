package keys

import (
	"strings"
	"testing"
	"time"
)

func TestKeyRecordRoundTrip(t *testing.T) {
	k := &Key{
		ID: "key_0123456789abcdef01234567", Name: "ci", Plan: "pro", Last4: "abcd",
		Hash:      HashSecret("sk-x"),
		CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600)),
		RevokedAt: time.Date(2025, 2, 2, 3, 4, 5, 7, time.UTC),
	}
	b, err := encodeKey(k)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"v":1`, `"hash":"`, `"created_at":"2025-01-02T02:04:05.000000006Z"`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("record %s lacks %s", b, want)
		}
	}
	if strings.Contains(string(b), "expires_at") {
		t.Fatalf("record %s stores a zero expires_at", b)
	}
	got, err := decodeKey(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || got.Name != k.Name || got.Plan != k.Plan || got.Last4 != k.Last4 || got.Hash != k.Hash ||
		!got.CreatedAt.Equal(k.CreatedAt) || !got.ExpiresAt.IsZero() || !got.RevokedAt.Equal(k.RevokedAt) {
		t.Fatalf("decodeKey(encodeKey(k)) = %+v, want %+v", got, k)
	}
}

func TestDecodeKeyRejects(t *testing.T) {
	f := func(rec string) {
		t.Helper()
		if k, err := decodeKey([]byte(rec)); err == nil {
			t.Fatalf("decodeKey(%s) = %+v, want an error", rec, k)
		}
	}
	hash := strings.Repeat("ab", 32)
	f(`not json`)
	f(`{"v":2,"id":"key_1","hash":"` + hash + `"}`)
	f(`{"v":1,"id":"key_1","hash":"abcd"}`)
	f(`{"v":1,"id":"key_1","hash":"` + hash + `00"}`)
	f(`{"v":1,"id":"key_1","hash":"` + strings.Repeat("zz", 32) + `"}`)
}

func TestPlanRecordRoundTrip(t *testing.T) {
	p := &Plan{Name: "pro", Models: []string{"gpt-4o*"}, RPM: 1, TPM: 2, MaxRequestUSD: 3, MonthlyUSD: 4}
	b, err := encodePlan(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"monthly_micro_usd":4`) {
		t.Fatalf("plan record %s does not store integer micro-dollars", b)
	}
	got, err := decodePlan(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "pro" || got.RPM != 1 || got.TPM != 2 || got.MaxRequestUSD != 3 || got.MonthlyUSD != 4 ||
		!got.Allows([]byte("gpt-4o-mini")) {
		t.Fatalf("decodePlan(encodePlan(p)) = %+v", got)
	}
	if _, err := decodePlan([]byte(`{"v":1,"name":"bad name"}`)); err == nil {
		t.Fatal("decodePlan accepted an invalid plan")
	}
}
