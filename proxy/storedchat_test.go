package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// TestStoredChatCompletionsAreUnsupported: the stored chat completions
// endpoints (get, update, delete, list, messages) answer every method with
// a 404 in OpenAI's shape that says what is unsupported and why, after the
// key is checked; creating a chat completion is untouched.
func TestStoredChatCompletionsAreUnsupported(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	key := g.newKey("all").Key
	c := g.client(key)
	ctx := context.Background()

	sdk := func(name string, err error) {
		t.Helper()
		wantAPIError(t, err, 404, "invalid_request_error", "unsupported_endpoint")
		var apiErr *openai.Error
		asAPIError(err, &apiErr)
		if !strings.HasPrefix(apiErr.Message, "Stored chat completions are not supported by this gateway") ||
			!strings.Contains(apiErr.Message, "/v1/responses") {
			t.Fatalf("%s: message %q", name, apiErr.Message)
		}
	}
	_, err := c.Chat.Completions.Get(ctx, "chatcmpl-abc")
	sdk("Get", err)
	_, err = c.Chat.Completions.Update(ctx, "chatcmpl-abc", openai.ChatCompletionUpdateParams{Metadata: shared.Metadata{"k": "v"}})
	sdk("Update", err)
	_, err = c.Chat.Completions.Delete(ctx, "chatcmpl-abc")
	sdk("Delete", err)
	_, err = c.Chat.Completions.List(ctx, openai.ChatCompletionListParams{})
	sdk("List", err)
	_, err = c.Chat.Completions.Messages.List(ctx, "chatcmpl-abc", openai.ChatCompletionMessageListParams{})
	sdk("Messages.List", err)

	f := func(method, path, secret string, status int, code string) {
		t.Helper()
		st, hdr, b := g.do(method, path, secret, nil)
		wantErrorBody(t, st, hdr, b, status, code)
		if hdr.Get("Allow") != "" {
			t.Fatalf("%s %s: Allow %q on a 404", method, path, hdr.Get("Allow"))
		}
		var e struct{ Error struct{ Message string } }
		json.Unmarshal(b, &e)
		if status == 404 && !strings.HasSuffix(e.Error.Message, "("+method+" "+path+")") {
			t.Fatalf("%s %s: message does not name the request: %q", method, path, e.Error.Message)
		}
	}
	for _, m := range []string{"GET", "POST", "DELETE", "PUT", "PATCH"} {
		f(m, "/v1/chat/completions/chatcmpl-abc", key, 404, "unsupported_endpoint")
		f(m, "/v1/chat/completions/chatcmpl-abc/messages", key, 404, "unsupported_endpoint")
		f(m, "/v1/chat/completions/chatcmpl-abc", "", 401, "invalid_api_key")
		f(m, "/v1/chat/completions/chatcmpl-abc/messages", "sk-not-a-key", 401, "invalid_api_key")
	}
	f("GET", "/v1/chat/completions", key, 404, "unsupported_endpoint")
	f("GET", "/v1/chat/completions", "", 401, "invalid_api_key")
	if st, _, b := g.do("PUT", "/v1/chat/completions", key, nil); st != http.StatusMethodNotAllowed {
		t.Fatalf("PUT /v1/chat/completions: %d %s", st, b)
	}
	if _, err := c.Chat.Completions.New(ctx, chatParams("mock", "hi")); err != nil {
		t.Fatalf("creating a chat completion: %v", err)
	}
}
