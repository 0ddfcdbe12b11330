package openai

import (
	"strings"
	"testing"
)

func TestMulBounded(t *testing.T) {
	f := func(a, b, want int64) {
		t.Helper()
		if got := MulBounded(a, b); got != want {
			t.Fatalf("MulBounded(%d, %d) = %d, want %d", a, b, got, want)
		}
	}
	f(0, 1<<62, 0)
	f(1<<62, 0, 0)
	f(3, 7, 21)
	f(MaxBoundTokens, 1, MaxBoundTokens)
	f(MaxBoundTokens+1, 1, MaxBoundTokens)
	f(1<<31, 3, MaxBoundTokens)
	f(1<<40, 1<<40, MaxBoundTokens) // would overflow int64 unbounded
	f(999_999_999_999_999, 999_999_999_999_999, MaxBoundTokens)
}

func TestPromptEstimateAndBound(t *testing.T) {
	f := func(bodyLen int, estimate, bound int64) {
		t.Helper()
		if got := EstimatePrompt(bodyLen); got != estimate {
			t.Fatalf("EstimatePrompt(%d) = %d, want %d", bodyLen, got, estimate)
		}
		if got := BoundPrompt(bodyLen); got != bound {
			t.Fatalf("BoundPrompt(%d) = %d, want %d", bodyLen, got, bound)
		}
	}
	f(0, 8, 64)
	f(1, 9, 65)
	f(4, 9, 68)
	f(5, 10, 69)
	f(1<<20, 1<<18+8, 1<<20+64)
}

// TestOutputBound: what a body can make the upstream generate, and bill, is
// bounded by every multiplier it holds, and never past MaxBoundTokens.
func TestOutputBound(t *testing.T) {
	f := func(body string, perChoice int64, legacy bool, completions, out int64) {
		t.Helper()
		var r Request
		if _, err := r.Parse([]byte(body)); err != nil {
			t.Fatalf("Parse(%s): %v", body, err)
		}
		if got := r.Completions(legacy); got != completions {
			t.Fatalf("Completions(%s, legacy %v) = %d, want %d", body, legacy, got, completions)
		}
		if got := r.OutputBound(len(body), perChoice, legacy); got != out {
			t.Fatalf("OutputBound(%s, %d, legacy %v) = %d, want %d", body, perChoice, legacy, got, out)
		}
	}
	f(`{"model":"m"}`, 100, false, 1, 100)
	f(`{"model":"m","n":3}`, 100, false, 3, 300)
	f(`{"model":"m","n":2,"best_of":5}`, 100, false, 5, 500) // best_of on chat: vLLM takes it
	f(`{"model":"m","prompt":["a","b","c"]}`, 16, true, 3, 48)
	f(`{"model":"m","prompt":["a","b","c"]}`, 16, false, 1, 16) // prompts multiply legacy completions only
	f(`{"model":"m","prompt":["a","b"],"n":2,"best_of":4}`, 10, true, 8, 80)
	// echo returns each prompt again per completion of it: the body's bound
	// (its 25 or 31 bytes + 64) per completion.
	f(`{"model":"m","echo":true}`, 10, true, 1, 10+25+64)
	f(`{"model":"m","echo":true,"n":2}`, 10, true, 2, 20+2*(31+64))
	f(`{"model":"m","echo":true}`, 10, false, 1, 10)     // echo is a legacy parameter
	f(`{"model":"m","input":["a","b"]}`, 0, false, 1, 0) // embeddings: no output
	// An attacker's multipliers: 128 best_of of 128 prompts at a huge
	// max_tokens are bounded, not overflowed.
	many := `{"model":"m","best_of":128,"n":128,"echo":true,"prompt":[` + strings.Repeat(`"a",`, 127) + `"a"]}`
	f(many, 1<<40, true, 128*128, MaxBoundTokens)
}
