package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// startUpstream serves h on a free loopback port and returns its base URL (with /v1).
func startUpstream(t testing.TB, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h, NoDefaultServerHeader: true}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return "http://" + ln.Addr().String() + "/v1"
}

// startMock starts a bench mock upstream with o and returns it with its base URL.
func startMock(t testing.TB, o mock.Options) (*mock.Server, string) {
	t.Helper()
	m := mock.New(o)
	return m, startUpstream(t, m.Handler)
}

// deadURL is a loopback address where nothing listens.
func deadURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/v1"
}

// gateway is a running tokenhub with its admin key, on a real socket.
type gateway struct {
	t        testing.TB
	url      string // http://127.0.0.1:port
	adminKey string
	dir      string
	node     *Node
	srv      *Server
}

const testAdminKey = "test-admin-key-0123456789abcdefghijklmnopqrstuvwxyz"

// startGateway runs tokenhub on the embedded store in dir (a new temporary
// directory when empty) with the YAML config's upstreams, models and plans.
func startGateway(t testing.TB, yaml, dir string) *gateway {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	g := startNode(t, "store: {path: "+dir+"}\n"+yaml)
	g.dir = dir
	return g
}

// startNode runs tokenhub with the whole YAML config (plus the test admin key
// and a quiet log) on 127.0.0.1:0, through the same OpenNode as cmd/tokenhub.
func startNode(t testing.TB, yaml string) *gateway {
	t.Helper()
	return startNodeLogging(t, yaml, nil)
}

// startNodeLogging is startNode with the log written as JSON into logTo,
// when not nil.
func startNodeLogging(t testing.TB, yaml string, logTo io.Writer) *gateway {
	t.Helper()
	if !strings.HasPrefix(yaml, "log:") && !strings.Contains(yaml, "\nlog:") {
		yaml = "log: {level: error}\n" + yaml
	}
	yaml = "admin_key: " + testAdminKey + "\n" + yaml
	if os.Getenv("TOKENHUB_TEST_LOG") != "" {
		yaml = strings.Replace(yaml, "log: {level: error}", "log: {level: debug}", 1)
	}
	cfg, err := config.Parse([]byte(yaml), "test.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	var logOut io.Writer = io.Discard
	if os.Getenv("TOKENHUB_TEST_LOG") != "" {
		logOut = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if logTo != nil {
		log = slog.New(slog.NewJSONHandler(logTo, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	node, err := OpenNode(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go node.Serve(ln)
	if iv := node.Invalidator; iv != nil {
		// A node's first subscription flushes its cache; wait for it so that
		// tests warm caches that stay warm.
		eventually.True(t, "invalidation subscription ready", iv.Healthy)
	}
	g := &gateway{t: t, url: "http://" + ln.Addr().String(), adminKey: testAdminKey, node: node, srv: node.Server}
	t.Cleanup(g.stop)
	return g
}

func (g *gateway) stop() {
	if g.node == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g.node.Shutdown(ctx)
	g.node.Close()
	g.node = nil
}

// client is the official SDK pointed at the gateway with key.
func (g *gateway) client(key string) *openai.Client {
	c := openai.NewClient(option.WithBaseURL(g.url+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
	return &c
}

// do sends a raw HTTP request and returns status, headers and body.
func (g *gateway) do(method, path, key string, body []byte, hdr ...string) (int, http.Header, []byte) {
	g.t.Helper()
	req, err := http.NewRequest(method, g.url+path, bytes.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// admin calls the admin API and decodes the answer into out (when non-nil),
// failing unless the status is want.
func (g *gateway) admin(method, path string, in any, want int, out any) {
	g.t.Helper()
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			g.t.Fatal(err)
		}
	}
	status, _, b := g.do(method, path, g.adminKey, body)
	if status != want {
		g.t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			g.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

type apiKey struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Name      string `json:"name"`
	Plan      string `json:"plan"`
	Last4     string `json:"last4"`
	Key       string `json:"key"`
	CreatedAt int64  `json:"created_at"`
	ExpiresAt *int64 `json:"expires_at"`
	RevokedAt *int64 `json:"revoked_at"`
}

// newKey creates a key on plan and returns it with its secret.
func (g *gateway) newKey(plan string) apiKey {
	g.t.Helper()
	var k apiKey
	g.admin("POST", "/v1/keys", map[string]any{"name": "test", "plan": plan}, http.StatusCreated, &k)
	if !strings.HasPrefix(k.Key, "sk-") {
		g.t.Fatalf("created key has no secret: %+v", k)
	}
	return k
}

// wantAPIError asserts err is the SDK's API error with status, type and code.
func wantAPIError(t *testing.T, err error, status int, typ, code string) {
	t.Helper()
	var apiErr *openai.Error
	if !asAPIError(err, &apiErr) {
		t.Fatalf("got %v, want an *openai.Error with status %d", err, status)
	}
	if apiErr.StatusCode != status || apiErr.Type != typ || apiErr.Code != code {
		t.Fatalf("got status %d type %q code %q (%s), want %d %q %q",
			apiErr.StatusCode, apiErr.Type, apiErr.Code, apiErr.Message, status, typ, code)
	}
}

// wantErrorBody asserts a raw answer is an OpenAI-shaped error with all four keys.
func wantErrorBody(t *testing.T, status int, hdr http.Header, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status %d, want %d: %s", status, wantStatus, body)
	}
	if hdr.Get("X-Request-Id") == "" {
		t.Fatalf("error answer without x-request-id: %s", body)
	}
	var v struct {
		Error map[string]json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, body)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := v.Error[k]; !ok {
			t.Fatalf("error body lacks %q: %s", k, body)
		}
	}
	if got := strings.Trim(string(v.Error["code"]), `"`); got != wantCode {
		t.Fatalf("code %s, want %s: %s", got, wantCode, body)
	}
}

func chatParams(model, prompt string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	}
}

func yamlModels(upstreamURL string) string {
	return fmt.Sprintf(`
upstreams:
  - {name: up, base_url: %q}
models:
  - {name: mock, routes: [{upstream: up}]}
  - {name: alias, routes: [{upstream: up, model: upstream-name}]}
  - {name: other, routes: [{upstream: up}]}
plans:
  - {name: all, models: ["*"]}
  - {name: mockonly, models: ["mock", "alias"]}
`, upstreamURL)
}

func optionBase(url string) option.RequestOption { return option.WithBaseURL(url) }
func optionKey(key string) option.RequestOption  { return option.WithAPIKey(key) }

// leaveStream posts a streaming body to path, authenticated by the header
// name: value, reads until lines lines of the stream start with prefix,
// and leaves: the connection closes mid-stream.
func (g *gateway) leaveStream(path, name, value, body, prefix string, lines int) {
	g.t.Helper()
	req, _ := http.NewRequest("POST", g.url+path, strings.NewReader(body))
	req.Header.Set(name, value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	for n := 0; n < lines; {
		line, err := r.ReadString('\n')
		if err != nil {
			g.t.Fatal(err)
		}
		if strings.HasPrefix(line, prefix) {
			n++
		}
	}
	resp.Body.Close()
}
