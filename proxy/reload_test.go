package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/eventually"
)

// fileNode is a gateway started from a config file, as cmd/tokenhub starts
// it, so that a reload reads the file again.
type fileNode struct {
	*gateway
	file     string
	head     string // the part of the file every rewrite keeps
	adminURL string // admin.listen's URL; the main URL when it is unset
	client   *http.Client
	logs     *syncBuffer
}

// startFileNode writes yaml (after a head with the test admin key, a quiet
// log, a free port and a fresh store) to a file, loads it with config.Load
// and serves it, on admin.listen too when the file sets it.
func startFileNode(t *testing.T, yaml string) *fileNode {
	t.Helper()
	dir := t.TempDir()
	n := &fileNode{file: filepath.Join(dir, "tokenhub.yaml"), logs: &syncBuffer{}, client: &http.Client{},
		head: "admin_key: " + testAdminKey + "\nlisten: 127.0.0.1:0\nstore: {path: " + dir + "}\n"}
	n.rewrite(t, yaml)
	cfg, err := config.Load(n.file)
	if err != nil {
		t.Fatal(err)
	}
	var w io.Writer = n.logs
	if os.Getenv("TOKENHUB_TEST_LOG") != "" {
		w = io.MultiWriter(n.logs, os.Stderr)
	}
	node, err := OpenNode(context.Background(), cfg, slog.New(slog.NewTextHandler(w, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go node.Serve(ln)
	scheme := "http://"
	if cfg.TLS.Enabled() {
		scheme = "https://"
	}
	n.gateway = &gateway{t: t, url: scheme + ln.Addr().String(), adminKey: testAdminKey, dir: dir, node: node, srv: node.Server}
	t.Cleanup(n.stop)
	n.adminURL = n.url
	if cfg.Admin.Listen != "" {
		aln, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			t.Fatal(err)
		}
		go node.ServeAdmin(aln)
		n.adminURL = scheme + aln.Addr().String()
	}
	if iv := node.Invalidator; iv != nil {
		eventually.True(t, "invalidation subscription ready", iv.Healthy)
	}
	return n
}

// rewrite replaces the config file's body (the head stays).
func (n *fileNode) rewrite(t *testing.T, yaml string) {
	t.Helper()
	if err := os.WriteFile(n.file, []byte(n.head+yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// call sends one request with n's client and returns the status and body.
func (n *fileNode) call(t *testing.T, method, url, key, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := n.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// key creates a key on plan "all" through the admin listener.
func (n *fileNode) key(t *testing.T) apiKey {
	t.Helper()
	status, b := n.call(t, "POST", n.adminURL+"/v1/keys", testAdminKey, `{"name":"t","plan":"all"}`)
	var k apiKey
	if status != http.StatusCreated || json.Unmarshal(b, &k) != nil {
		t.Fatalf("create key: %d %s", status, b)
	}
	return k
}

// rawConn is one keep-alive client connection, so a test can tell that the
// server kept it open: a closed one fails the next request.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, url string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{c: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) do(t *testing.T, method, path, key, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://tokenhub"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if err := req.Write(rc.c); err != nil {
		t.Fatalf("%s %s on the kept connection: %v", method, path, err)
	}
	resp, err := http.ReadResponse(rc.br, req)
	if err != nil {
		t.Fatalf("%s %s on the kept connection: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Close {
		t.Fatalf("%s %s: the server is closing the connection", method, path)
	}
	return resp.StatusCode, b
}

// modelIDs lists the ids of a GET /v1/models answer.
func modelIDs(t *testing.T, body []byte) []string {
	t.Helper()
	var l struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	var ids []string
	for _, m := range l.Data {
		ids = append(ids, m.ID)
	}
	return ids
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

const reloadModels = `
upstreams: [{name: mock, base_url: "inproc://mock"}]
plans: [{name: all, models: ["*"]}]
models:
  - {name: mock, routes: [{upstream: mock}]}
`

// TestReloadSwapsModels: POST /admin/reload adds one model and removes
// another while a keep-alive client keeps its connection, and answers what
// it changed.
func TestReloadSwapsModels(t *testing.T) {
	n := startFileNode(t, reloadModels+"  - {name: old, routes: [{upstream: mock}]}\n")
	k := n.key(t)
	c := dialRaw(t, n.url)
	chat := func(model string) int {
		status, _ := c.do(t, "POST", "/v1/chat/completions", k.Key, `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
		return status
	}
	status, b := c.do(t, "GET", "/v1/models", k.Key, "")
	if got := modelIDs(t, b); status != 200 || !slices.Equal(got, []string{"mock", "old"}) {
		t.Fatalf("before the reload: %d %q", status, got)
	}

	n.rewrite(t, reloadModels+"  - {name: new, routes: [{upstream: mock}]}\n")
	status, b = c.do(t, "POST", "/admin/reload", testAdminKey, "")
	var sum ReloadSummary
	if err := json.Unmarshal(b, &sum); status != 200 || err != nil {
		t.Fatalf("reload: %d %s", status, b)
	}
	want := ReloadSummary{Object: "reload", Models: []string{"mock", "new"}, ModelsAdded: []string{"new"}, ModelsRemoved: []string{"old"},
		Upstreams: []string{"mock"}, UpstreamsRebuilt: []string{}, PlansSeeded: []string{"all"}, RestartRequired: []string{}}
	if got, _ := json.Marshal(sum); !bytes.Equal(got, mustJSON(t, want)) {
		t.Fatalf("reload summary\n%s\nwant\n%s", got, mustJSON(t, want))
	}
	status, b = c.do(t, "GET", "/v1/models", k.Key, "")
	if got := modelIDs(t, b); status != 200 || !slices.Equal(got, []string{"mock", "new"}) {
		t.Fatalf("after the reload: %d %q", status, got)
	}
	if chat("new") != 200 || chat("old") != 404 || chat("mock") != 200 {
		t.Fatal("after the reload, new should answer 200, old 404 and mock 200")
	}

	// A user key may not reload.
	if status, b := c.do(t, "POST", "/admin/reload", k.Key, ""); status != 403 {
		t.Fatalf("reload with a user key: %d %s", status, b)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReloadRefusesInvalidConfig: a file that does not validate is refused
// with config.Load's message, naming the field and the fix, and the previous
// configuration keeps serving.
func TestReloadRefusesInvalidConfig(t *testing.T) {
	n := startFileNode(t, reloadModels)
	k := n.key(t)
	n.rewrite(t, reloadModels+"  - {name: broken, routes: [{upstream: nowhere}]}\n")
	status, hdr, b := n.do("POST", "/admin/reload", testAdminKey, nil)
	wantErrorBody(t, status, hdr, b, 400, "invalid_config")
	const field = `models[1].routes[0].upstream: no upstream named \"nowhere\"; declare it under upstreams or fix the name`
	if !bytes.Contains(b, []byte(field)) || !bytes.Contains(b, []byte("the previous one stays in force")) {
		t.Fatalf("refusal does not name the field and the fix: %s", b)
	}
	if !strings.Contains(n.logs.String(), "config reload refused") || !strings.Contains(n.logs.String(), "no upstream named") {
		t.Fatalf("no log line for the refused reload:\n%s", n.logs.String())
	}
	if st := n.answer(k.Key, "mock"); st != 200 {
		t.Fatalf("after a refused reload mock answered %d", st)
	}
	status, _, b = n.do("GET", "/v1/models", k.Key, nil)
	if got := modelIDs(t, b); status != 200 || !slices.Equal(got, []string{"mock"}) {
		t.Fatalf("after a refused reload: %d %q", status, got)
	}
}

// TestReloadKeepsRestartOnlyFields: fields read only at start are reported
// and keep their values; the rest of the file is applied.
func TestReloadKeepsRestartOnlyFields(t *testing.T) {
	n := startFileNode(t, reloadModels)
	k := n.key(t)
	n.head = strings.Replace(n.head, "listen: 127.0.0.1:0", "listen: 127.0.0.1:1\nserver: {read_timeout: 5s}\nadmin: {pprof: true}\ntelemetry: {traces: {endpoint: \"http://127.0.0.1:4318\"}}", 1)
	n.rewrite(t, reloadModels+"  - {name: new, routes: [{upstream: mock}]}\n")
	var sum ReloadSummary
	n.admin("POST", "/admin/reload", nil, 200, &sum)
	if !slices.Equal(sum.RestartRequired, []string{"listen", "server.read_timeout", "admin.pprof", "telemetry.traces"}) || !slices.Equal(sum.ModelsAdded, []string{"new"}) {
		t.Fatalf("summary %+v", sum)
	}
	if !strings.Contains(n.logs.String(), "takes effect only on restart") || !strings.Contains(n.logs.String(), "field=listen") {
		t.Fatalf("no warning naming listen:\n%s", n.logs.String())
	}
	if n.srv.reload.cfg.Listen != "127.0.0.1:0" || n.srv.reload.cfg.Server.ReadTimeout != 30*time.Second || n.srv.reload.cfg.Telemetry.Traces.Enabled() {
		t.Fatalf("the configuration in force took restart-only values: %+v", n.srv.reload.cfg)
	}
	if st := n.answer(k.Key, "new"); st != 200 {
		t.Fatalf("new model answered %d", st)
	}
	if status, _, _ := n.do("GET", "/debug/pprof/", "", nil); status != 404 {
		t.Fatalf("pprof turned on without a restart: %d", status)
	}
}

// TestReloadKeepsInFlightStreamsOnRetiredUpstreams: a reload that rebuilds
// an upstream swaps it for new requests, while a stream already on the old
// one finishes, even past the old one's grace period.
func TestReloadKeepsInFlightStreamsOnRetiredUpstreams(t *testing.T) {
	const slow = `
server: {shutdown_timeout: 300ms}
upstreams: [{name: mock, base_url: "inproc://mock", headers: {X-Mock-Chunks: "%s", X-Mock-Interval: "100ms"}}]
plans: [{name: all, models: ["*"]}]
models: [{name: mock, routes: [{upstream: mock}]}]
`
	n := startFileNode(t, strings.Replace(slow, "%s", "10", 1))
	k := n.key(t)
	resp := startStream(t, n.url, k.Key)
	defer resp.Body.Close()
	n.rewrite(t, strings.Replace(slow, "%s", "2", 1))
	var sum ReloadSummary
	n.admin("POST", "/admin/reload", nil, 200, &sum)
	if !slices.Equal(sum.UpstreamsRebuilt, []string{"mock"}) {
		t.Fatalf("summary %+v, want mock rebuilt", sum)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.HasSuffix(b, []byte("data: [DONE]\n\n")) || bytes.Count(b, []byte(`"delta":{"content":"`)) != 10 {
		t.Fatalf("the stream on the retired upstream: %v\n%s", err, b)
	}
	if r := n.srv.reload.retiredUpstreams(); len(r) != 0 {
		t.Fatalf("the retired upstream was not released during the stream: %d still in their grace period", len(r))
	}
	got := rawStream(t, n.url, k.Key, `{"model":"mock","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if strings.Count(got, `"delta":{"content":"`) != 2 {
		t.Fatalf("a new stream did not use the new upstream:\n%s", got)
	}
}

// startStream starts a chat stream on model mock and returns once its first
// event has arrived.
func startStream(t *testing.T, url, key string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions",
		strings.NewReader(`{"model":"mock","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %d %s", resp.StatusCode, b)
	}
	resp.Body = readCloser{io.MultiReader(bytes.NewReader(firstEvent(t, resp.Body)), resp.Body), resp.Body}
	return resp
}

// firstEvent reads up to the end of the stream's first event.
func firstEvent(t *testing.T, r io.Reader) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, 1)
	for !bytes.HasSuffix(got, []byte("\n\n")) {
		if _, err := r.Read(buf); err != nil {
			t.Fatalf("first event: %v after %q", err, got)
		}
		got = append(got, buf[0])
	}
	return got
}

type readCloser struct {
	io.Reader
	io.Closer
}
