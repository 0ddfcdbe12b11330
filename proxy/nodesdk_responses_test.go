package proxy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// TestNodeSDKResponses runs the official OpenAI Node SDK's responses.create
// (buffered and streamed) and responses.stream against tokenhub: the SDK
// reads the answers and streams, its typed errors carry tokenhub's status
// and code, and a stream cut at the month's budget ends with the Responses
// API's error event.
func TestNodeSDKResponses(t *testing.T) {
	node, dir := nodeSDK(t)
	_, up := startMock(t, mock.Options{Chunks: 12})
	_, endless := startMock(t, mock.Options{Chunks: 20000})
	g := startGateway(t, fmt.Sprintf(`
upstreams: [{name: up, base_url: %q}, {name: endless, base_url: %q}]
models:
  - {name: mock, routes: [{upstream: up}]}
  - {name: other, routes: [{upstream: up}]}
  - {name: long, routes: [{upstream: endless}], price: {input_per_mtok: 1, output_per_mtok: 2}, max_output_tokens: 100000}
plans:
  - {name: all, models: ["*"]}
  - {name: mockonly, models: ["mock"]}
  - {name: tight, models: ["*"], monthly_usd: 0.01}
`, up, endless), "")
	keys := map[string]string{"all": g.newKey("all").Key, "only": g.newKey("mockonly").Key, "month": g.newKey("tight").Key}
	in, _ := json.Marshal(keys)
	cmd := exec.Command(node, filepath.Join(dir, "responses.mjs"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TOKENHUB_URL="+g.url+"/v1", "TOKENHUB_KEYS="+string(in))
	out, err := cmd.CombinedOutput()
	t.Logf("node SDK:\n%s", out)
	if err != nil {
		t.Fatalf("node SDK checks failed: %v", err)
	}
}
