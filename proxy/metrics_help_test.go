package proxy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/internal/usd"
)

// TestMetricsHaveHelpAndType: every series family /metrics shows, tokenhub's
// and the runtime's, comes after a # HELP line and a # TYPE line, as
// Prometheus' text format wants them; tokenhub's own say what they count
// (the library gives the runtime's no text).
func TestMetricsHaveHelpAndType(t *testing.T) {
	m := newGatewayMetrics()
	m.request("chat", "mock", "free", 200)
	m.used("mock", "free", usd.Tokens{Prompt: 10, Cached: 4, Completion: 5}, 1000, true, true, true)
	m.upstreamEvent("mock", upstreamFailover)
	var b bytes.Buffer
	m.write(&b)

	help, typ := map[string]bool{}, map[string]bool{}
	for line := range strings.Lines(b.String()) {
		line = strings.TrimSuffix(line, "\n")
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, text, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			if strings.HasPrefix(name, "tokenhub_") && strings.TrimSpace(text) == "" {
				t.Errorf("%s: # HELP without text", name)
			}
			help[name] = true
		case strings.HasPrefix(line, "# TYPE "):
			typ[strings.Fields(line)[2]] = true
		case line != "":
			name := line[:strings.IndexAny(line, "{ ")]
			family := name
			if !help[family] {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if f, ok := strings.CutSuffix(name, suffix); ok && help[f] {
						family = f
					}
				}
			}
			if !help[family] || !typ[family] {
				t.Errorf("%s: no # HELP and # TYPE before it (family %s)", name, family)
			}
		}
	}
	for _, name := range []string{"tokenhub_requests_total", "tokenhub_tokens_total", "tokenhub_upstream_events_total", "tokenhub_gateway_duration_seconds"} {
		if !help[name] {
			t.Errorf("%s missing from /metrics", name)
		}
	}
}
