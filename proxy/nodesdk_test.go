package proxy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tokenhub/tokenhub/keys"
)

// TestNodeSDKTypedErrors runs the official OpenAI Node SDK against tokenhub:
// each error must surface as the SDK's own class (AuthenticationError,
// PermissionDeniedError, NotFoundError, ...) with tokenhub's status and code.
func TestNodeSDKTypedErrors(t *testing.T) {
	node, dir := nodeSDK(t)
	g := startGateway(t, errorsConfig(t)+`  - {name: slow, models: ["mock"], rpm: 1}
`, "")
	key := g.newKey("basic").Key
	revoked := g.newKey("basic")
	g.admin("DELETE", "/v1/keys/"+revoked.ID, nil, 200, nil)
	unknown, _ := keys.NewSecret()
	limited := g.newKey("slow").Key
	g.do("POST", "/v1/chat/completions", limited, []byte(smallChat))

	type sdkCase struct {
		Name   string         `json:"name"`
		Key    string         `json:"key"`
		Model  string         `json:"model"`
		Extra  map[string]any `json:"extra,omitempty"`
		Error  string         `json:"error"`
		Status int            `json:"status"`
		Code   string         `json:"code"`
		Param  string         `json:"param,omitempty"`
	}
	cases := []sdkCase{
		{"malformed key", "sk-nope", "mock", nil, "AuthenticationError", 401, "invalid_api_key", ""},
		{"unknown key", unknown, "mock", nil, "AuthenticationError", 401, "invalid_api_key", ""},
		{"revoked key", revoked.Key, "mock", nil, "AuthenticationError", 401, "invalid_api_key", ""},
		{"model outside plan", key, "secret-model", nil, "PermissionDeniedError", 403, "model_not_allowed", ""},
		{"unknown model", key, "no-such-model", nil, "NotFoundError", 404, "model_not_found", ""},
		{"bad max_tokens", key, "mock", map[string]any{"max_tokens": -1}, "BadRequestError", 400, "invalid_value", "max_tokens"},
		{"max_completion_tokens 0 on chat", key, "mock", map[string]any{"max_completion_tokens": 0}, "BadRequestError", 400, "invalid_value", "max_completion_tokens"},
		{"rate limited", limited, "mock", nil, "RateLimitError", 429, "rate_limit_exceeded", ""},
		{"upstream 5xx", key, "failing", nil, "InternalServerError", 502, "upstream_error", ""},
		{"upstream timeout", key, "slow", nil, "InternalServerError", 504, "upstream_timeout", ""},
	}
	in, _ := json.Marshal(map[string]any{"key": key, "cases": cases})
	cmd := exec.Command(node, filepath.Join(dir, "errors.mjs"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TOKENHUB_URL="+g.url+"/v1", "TOKENHUB_CASES="+string(in))
	out, err := cmd.CombinedOutput()
	t.Logf("node SDK:\n%s", out)
	if err != nil {
		t.Fatalf("node SDK checks failed: %v", err)
	}
}

// nodeSDK returns the node binary and the directory holding the official
// OpenAI Node SDK (proxy/testdata/node); without them the test skips, or
// fails under CI=true.
func nodeSDK(t *testing.T) (node, dir string) {
	t.Helper()
	dir, _ = filepath.Abs("testdata/node")
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "node_modules", "openai"))
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node and the openai package are needed (.ci/install-deps installs them): %v", err)
		}
		t.Skipf("needs node and `npm install --prefix proxy/testdata/node` (make deps): %v", err)
	}
	return node, dir
}
