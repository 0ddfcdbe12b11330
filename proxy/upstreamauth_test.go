package proxy

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/valyala/fasthttp"
)

// TestUpstreamRefusingOurCredentialsIsNotTheClientsFault: an upstream that
// answers 401 or 403 refused the gateway's own provider key, which the
// client cannot fix: the client gets a 502 upstream_error, never the
// upstream's invalid_api_key (which SDKs report as the client's key being
// wrong) nor the masked fragment of the provider key the upstream quotes;
// the log names the upstream and never the key.
func TestUpstreamRefusingOurCredentialsIsNotTheClientsFault(t *testing.T) {
	const providerKey = "sk-proj-gatewaysecret0123456789wxyz"
	for _, status := range []int{401, 403} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
				ctx.SetStatusCode(status)
				ctx.SetContentType("application/json")
				// OpenAI's answer to a wrong key quotes its masked fragment.
				ctx.SetBodyString(`{"error":{"message":"Incorrect API key provided: sk-proj-****wxyz. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
			})
			var logs logBuffer
			g := startNodeLogging(t, fmt.Sprintf(`
store: {path: %s}
upstreams: [{name: refusing-provider, base_url: %q, api_key: %q}]
models: [{name: m, routes: [{upstream: refusing-provider}]}]
plans: [{name: all, models: ["*"]}]
`, t.TempDir(), up, providerKey), &logs)
			c := g.client(g.newKey("all").Key)
			leaks := func(t *testing.T, what, s string) {
				t.Helper()
				for _, secret := range []string{"wxyz", "****", "sk-proj", "gatewaysecret", "invalid_api_key"} {
					if strings.Contains(s, secret) {
						t.Fatalf("%s holds %q: %s", what, secret, s)
					}
				}
			}
			check := func(t *testing.T, err error) {
				t.Helper()
				wantAPIError(t, err, 502, "server_error", "upstream_error")
				var apiErr *openai.Error
				asAPIError(err, &apiErr)
				leaks(t, "the answer", string(apiErr.DumpResponse(true)))
				if !strings.Contains(apiErr.Message, "credentials") {
					t.Fatalf("message %q does not say the gateway's credentials were refused", apiErr.Message)
				}
			}
			t.Run("buffered", func(t *testing.T) {
				_, err := c.Chat.Completions.New(context.Background(), chatParams("m", "hi"))
				check(t, err)
			})
			t.Run("stream", func(t *testing.T) {
				s := c.Chat.Completions.NewStreaming(context.Background(), chatParams("m", "hi"))
				for s.Next() {
				}
				check(t, s.Err())
			})
			log := logs.String()
			leaks(t, "the log", log)
			if !strings.Contains(log, `"upstream":"refusing-provider"`) || !strings.Contains(log, "credentials") {
				t.Fatalf("the log does not name the upstream that refused the credentials:\n%s", log)
			}
		})
	}
}
