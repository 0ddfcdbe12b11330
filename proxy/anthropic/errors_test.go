package anthropic

import (
	"encoding/json"
	"testing"
)

func TestErrorType(t *testing.T) {
	f := func(status int, want string) {
		t.Helper()
		if got := ErrorType(status); got != want {
			t.Fatalf("ErrorType(%d) = %s, want %s", status, got, want)
		}
	}
	f(400, "invalid_request_error")
	f(401, "authentication_error")
	f(402, "billing_error")
	f(403, "permission_error")
	f(404, "not_found_error")
	f(413, "request_too_large")
	f(422, "invalid_request_error")
	f(429, "rate_limit_error")
	f(500, "api_error")
	f(502, "api_error")
	f(504, "timeout_error")
	f(529, "overloaded_error")
}

func TestFailsOver(t *testing.T) {
	f := func(status int, want bool) {
		t.Helper()
		if FailsOver(status) != want {
			t.Fatalf("FailsOver(%d) = %v", status, !want)
		}
	}
	f(529, true)
	f(500, true)
	f(503, true)
	f(429, false)
	f(400, false)
	f(200, false)
	f(600, false)
}

func TestErrorToOpenAI(t *testing.T) {
	f := func(status int, body, want string) {
		t.Helper()
		got := string(ErrorToOpenAI(nil, status, []byte(body)))
		if got != want {
			t.Fatalf("ErrorToOpenAI(%d, %s)\n got %s\nwant %s", status, body, got, want)
		}
		if !json.Valid([]byte(got)) {
			t.Fatalf("not JSON: %s", got)
		}
	}
	f(529, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
		`{"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":"overloaded_error"}}`)
	f(400, `{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: \"x\" \u00e9"},"request_id":"req_1"}`,
		`{"error":{"message":"max_tokens: \"x\" é","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}`)
	f(502, `<html>bad gateway</html>`,
		`{"error":{"message":"the upstream answered with an error","type":"api_error","param":null,"code":"api_error"}}`)
	f(429, `{"type":"error","error":{"message":"slow down"}}`,
		`{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":"rate_limit_error"}}`)
}

func TestErrorFromOpenAI(t *testing.T) {
	f := func(status int, body, want string) {
		t.Helper()
		if got := string(ErrorFromOpenAI(nil, status, []byte(body))); got != want {
			t.Fatalf("ErrorFromOpenAI(%d, %s)\n got %s\nwant %s", status, body, got, want)
		}
	}
	f(401, `{"error":{"message":"invalid API key","type":"invalid_request_error","code":"invalid_api_key"}}`,
		`{"type":"error","error":{"type":"authentication_error","message":"invalid API key"}}`)
	f(429, `{"error":{"message":"budget spent","type":"insufficient_quota"}}`,
		`{"type":"error","error":{"type":"rate_limit_error","message":"budget spent"}}`)
	f(529, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
		`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
	f(503, ``, `{"type":"error","error":{"type":"api_error","message":"the upstream answered with an error"}}`)
	if got := string(AppendErrorEvent(nil, "rate_limit_error", "budget spent")); got != "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"budget spent\"}}\n\n" {
		t.Fatalf("AppendErrorEvent: %q", got)
	}
}
