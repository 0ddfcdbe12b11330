package proxy

import (
	"encoding/json"
	"testing"
)

func TestAppendError(t *testing.T) {
	f := func(e *apiError, detail, want string) {
		t.Helper()
		got := appendError(nil, e, []byte(detail))
		if string(got) != want {
			t.Fatalf("appendError:\n got %s\nwant %s", got, want)
		}
		var v map[string]map[string]any
		if err := json.Unmarshal(got, &v); err != nil {
			t.Fatalf("not JSON: %v", err)
		}
		for _, k := range []string{"message", "type", "param", "code"} {
			if _, ok := v["error"][k]; !ok {
				t.Fatalf("missing key %q in %s", k, got)
			}
		}
	}
	f(errMissingModel, "", `{"error":{"message":"You must provide a model parameter.","type":"invalid_request_error","param":"model","code":"missing_required_parameter"}}`)
	f(errModelNotFound, "gpt-\"x\"\n<b>", `{"error":{"message":"The model does not exist: gpt-\"x\"\n\u003cb\u003e","type":"invalid_request_error","param":"model","code":"model_not_found"}}`)
	f(&apiError{status: 500, typ: typeServer, message: "m"}, "\x01", `{"error":{"message":"m\u0001","type":"server_error","param":null,"code":null}}`)
}

func TestValidRequestID(t *testing.T) {
	f := func(id string, want bool) {
		t.Helper()
		if got := validRequestID([]byte(id)); got != want {
			t.Fatalf("validRequestID(%q) = %v, want %v", id, got, want)
		}
	}
	f("req_abc-123", true)
	f("0f8fad5b-d9cb-469f-a165-70867728950e", true)
	f("", false)
	f("has space", false)
	f("new\nline", false)
	f(string(make([]byte, 129)), false)
}
