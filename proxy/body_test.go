package proxy

import (
	"testing"

	"github.com/tokenhub/tokenhub/proxy/openai"
)

// benchBody is a typical chat request, for the benchmarks and alloc tests.
var benchBody = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},` +
	`{"role":"user","content":"Hello there, how are you doing today? Tell me a story about a \"dragon\" in three sentences."}],` +
	`"max_tokens":256,"temperature":0.7,"stream":false}`)

// TestBodyError: every refusal of openai.Request.Parse has its own answer,
// and a body that earns it gets it (the exact bytes are the contract tests').
func TestBodyError(t *testing.T) {
	f := func(body string, refusal error, want *apiError) {
		t.Helper()
		var rf openai.Request
		if _, err := rf.Parse([]byte(body)); err != refusal {
			t.Fatalf("Parse(%s) = %v, want %v", body, err, refusal)
		}
		if got := bodyError(refusal); got != want {
			t.Fatalf("bodyError(%v) = %s, want %s", refusal, got.code, want.code)
		}
	}
	f(`{"model":"m"`, openai.ErrMalformedJSON, errMalformedJSON)
	f(`[]`, openai.ErrNotObject, errNotObject)
	f(`{}`, openai.ErrMissingModel, errMissingModel)
	f(`{"model":1}`, openai.ErrModelNotString, errModelNotString)
	f(`{"model":"m","stream":1}`, openai.ErrStreamNotBool, errStreamNotBool)
	f(`{"model":"m","max_tokens":-1}`, openai.ErrMaxTokens, errMaxTokens)
	f(`{"model":"m","n":0}`, openai.ErrChoices, errChoices)
	f(`{"model":"m","best_of":0}`, openai.ErrBestOf, errBestOf)
	f(`{"model":"m","model":"m"}`, openai.ErrDuplicateField, errDuplicateField)
	f(`{"model":"m","stream_options":{"include_usage":true,"include_usage":true}}`, openai.ErrDuplicateKey, errDuplicateKey)
	f(`{"model":"m","Model":"m"}`, openai.ErrAmbiguousKey, errAmbiguousKey)
}
