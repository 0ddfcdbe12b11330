package upstream

import (
	"testing"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/proxy/anthropic"
)

// TestKindSetsAuthAndPaths checks what each kind of upstream is sent: the
// key as a bearer token or as x-api-key, and the Messages paths.
func TestKindSetsAuthAndPaths(t *testing.T) {
	for _, tc := range []struct {
		kind, version            string
		authName, auth, ver, tra string
	}{
		{kind: config.KindOpenAI, authName: "Authorization", auth: "Bearer sk-upstream-0123456789"},
		{kind: config.KindAnthropic, authName: "x-api-key", auth: "sk-upstream-0123456789", ver: anthropic.DefaultVersion, tra: anthropic.Version20230601},
		{kind: config.KindAnthropic, version: anthropic.Version20230601, authName: "x-api-key", auth: "sk-upstream-0123456789",
			ver: anthropic.Version20230601, tra: anthropic.Version20230601},
		{kind: config.KindAnthropic, version: anthropic.Version20261021, authName: "x-api-key", auth: "sk-upstream-0123456789",
			ver: anthropic.Version20261021, tra: anthropic.Version20261021},
	} {
		u, err := New(&config.Upstream{Name: "u", Kind: tc.kind, BaseURL: "https://api.example.com/v1/", APIKey: "sk-upstream-0123456789",
			AnthropicVersion: tc.version, MaxConns: 1})
		if err != nil {
			t.Fatal(err)
		}
		name, auth := u.Auth()
		if string(name) != tc.authName || string(auth) != tc.auth || string(u.AnthropicVersion()) != tc.ver {
			t.Errorf("%s %q: auth %s: %s, version %q; want %s: %s, %q", tc.kind, tc.version, name, auth, u.AnthropicVersion(), tc.authName, tc.auth, tc.ver)
		}
		if string(u.TranslationVersion()) != tc.tra {
			t.Errorf("%s %q: translation version %q, want %q", tc.kind, tc.version, u.TranslationVersion(), tc.tra)
		}
		if string(u.APIKey()) != "sk-upstream-0123456789" || u.Anthropic() != (tc.kind == config.KindAnthropic) {
			t.Errorf("%s: APIKey %q, Anthropic() %v", tc.kind, u.APIKey(), u.Anthropic())
		}
		if got := string(u.URI(Messages)); got != "https://api.example.com/v1/messages" {
			t.Errorf("%s: Messages URI %s", tc.kind, got)
		}
		if got := string(u.URI(CountTokens)); got != "https://api.example.com/v1/messages/count_tokens" {
			t.Errorf("%s: CountTokens URI %s", tc.kind, got)
		}
		u.Release()
	}
}
