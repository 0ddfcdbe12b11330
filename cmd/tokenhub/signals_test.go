package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/eventually"
)

var (
	buildOnce sync.Once
	binDir    string
	binErr    error
)

// TestMain removes the binary the signal tests build.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// tokenhubBinary builds this command once for the tests that signal a real
// process.
func tokenhubBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "tokenhub-bin"); binErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "tokenhub"), ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "tokenhub")
}

const signalAdminKey = "signal-test-admin-key-0123456789"

// process is a running tokenhub binary and its log.
type process struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string
	log  *logLines
	exit chan error
}

// startTokenhub runs the binary with the config file and waits until it
// listens.
func startTokenhub(t *testing.T, config string) *process {
	t.Helper()
	p := &process{t: t, cmd: exec.Command(tokenhubBinary(t), "-config", config), log: &logLines{}, exit: make(chan error, 1)}
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exit <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill() // already gone when the test waited for it
		if t.Failed() {
			t.Logf("tokenhub log:\n%s", p.log.String())
		}
	})
	line := p.waitLog("tokenhub listening")
	var l struct{ Addr string }
	if err := json.Unmarshal([]byte(line), &l); err != nil || l.Addr == "" {
		t.Fatalf("listening line %q: %v", line, err)
	}
	p.url = "http://" + l.Addr
	return p
}

// waitLog waits for a log line containing s and returns it. How soon the
// line comes is not what the tests check, so it waits as long as
// eventually.True does.
func (p *process) waitLog(s string) string {
	p.t.Helper()
	var line string
	eventually.True(p.t, fmt.Sprintf("logged %q", s), func() bool {
		var ok bool
		if line, ok = p.log.find(s); ok {
			return true
		}
		select {
		case err := <-p.exit:
			p.t.Fatalf("tokenhub exited (%v) before logging %q:\n%s", err, s, p.log.String())
		default:
		}
		return false
	})
	return line
}

func (p *process) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// exitHangGuard bounds waitExit. It is a hang guard, not a speed claim: a
// process with nothing left in flight exits in milliseconds, and this is far
// more than ten times that; it stays below the default
// server.shutdown_timeout (30s), so a process that sat out its whole drain
// instead of exiting once idle still fails.
const exitHangGuard = 15 * time.Second

// waitExit waits for the process to end and fails unless it exited 0.
func (p *process) waitExit() {
	p.t.Helper()
	select {
	case err := <-p.exit:
		if err != nil {
			p.t.Fatalf("tokenhub exited with %v:\n%s", err, p.log.String())
		}
	case <-time.After(exitHangGuard):
		p.t.Fatalf("tokenhub still running %s after the signal", exitHangGuard)
	}
}

func (p *process) call(method, path, key, body string) (int, []byte) {
	p.t.Helper()
	req, err := http.NewRequest(method, p.url+path, strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// newKey creates a key on plan "all" and returns its id and secret.
func (p *process) newKey() (id, secret string) {
	p.t.Helper()
	status, b := p.call("POST", "/v1/keys", signalAdminKey, `{"name":"signals","plan":"all"}`)
	var k struct{ ID, Key string }
	if status != 201 || json.Unmarshal(b, &k) != nil {
		p.t.Fatalf("create key: %d %s", status, b)
	}
	return k.ID, k.Key
}

// logLines collects the process's log.
type logLines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logLines) find(s string) (string, bool) {
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, s) {
			return line, true
		}
	}
	return "", false
}

// writeConfig writes a config serving the built-in mock, whose streams here
// are chunks events 100ms apart, with an embedded store in dir; models adds
// entries to the models list, extra top-level fields.
func writeConfig(t *testing.T, dir string, chunks int, models, extra string) string {
	t.Helper()
	path := filepath.Join(dir, "tokenhub.yaml")
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin_key: %s
store: {path: %s}
upstreams:
  - {name: mock, base_url: "inproc://mock", headers: {X-Mock-Chunks: "%d", X-Mock-Interval: "100ms"}}
models:
  - {name: mock, routes: [{upstream: mock}], price: {input_per_mtok: 1, output_per_mtok: 2}}
%splans: [{name: all, models: ["*"]}]
%s`, signalAdminKey, dir, chunks, models, extra)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// stream starts a chat stream and returns its body once the first event is in.
func stream(t *testing.T, url, key string) (*bufio.Reader, io.Closer) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions",
		strings.NewReader(`{"model":"mock","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", err, resp)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.Peek(1); err != nil {
		t.Fatal(err)
	}
	return br, resp.Body
}

// usage reads a key's month to date.
func (p *process) usage(id string) (requests, completion int64) {
	p.t.Helper()
	status, b := p.call("GET", "/v1/keys/"+id+"/usage", signalAdminKey, "")
	var u struct {
		Requests   int64 `json:"requests"`
		Completion int64 `json:"completion_tokens"`
	}
	if status != 200 || json.Unmarshal(b, &u) != nil {
		p.t.Fatalf("usage: %d %s", status, b)
	}
	return u.Requests, u.Completion
}

// TestSIGTERMDrains: SIGTERM in the middle of a 1.5s stream refuses new
// connections and closes idle ones at once, lets the stream finish with
// [DONE], exits 0, and the stream is billed, as a restart on the same store
// shows.
func TestSIGTERMDrains(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, 15, "", "")
	p := startTokenhub(t, cfg)
	id, key := p.newKey()

	idle, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: tokenhub\r\n\r\n")
	idleR := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(idleR, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz on the idle connection: %v", err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}

	body, closer := stream(t, p.url, key)
	defer closer.Close()
	p.signal(syscall.SIGTERM)
	p.waitLog("shutting down")

	idle.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := idleR.ReadByte(); err != io.EOF {
		t.Fatalf("idle keep-alive connection after SIGTERM: %v, want it closed (EOF)", err)
	}
	if c, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://")); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted after SIGTERM")
	}
	rest, err := io.ReadAll(body)
	if err != nil || !bytes.HasSuffix(rest, []byte("data: [DONE]\n\n")) {
		t.Fatalf("the stream did not finish after SIGTERM: %v\n%s", err, rest)
	}
	if n := bytes.Count(rest, []byte(`"delta":{"content":"`)); n != 15 {
		t.Fatalf("the stream relayed %d of 15 chunks", n)
	}
	p.waitExit()

	again := startTokenhub(t, cfg)
	if n, completion := again.usage(id); n != 1 || completion != 15 {
		t.Fatalf("after the restart: %d requests and %d completion tokens billed, want 1 and 15", n, completion)
	}
	again.signal(syscall.SIGINT)
	again.waitExit()
}

// TestSIGTERMCutsAtDeadline: a stream longer than server.shutdown_timeout is
// cut with an error event, the process still exits 0, and what was relayed
// is billed.
func TestSIGTERMCutsAtDeadline(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, 100, "", "server: {shutdown_timeout: 500ms}\n")
	p := startTokenhub(t, cfg)
	id, key := p.newKey()
	body, closer := stream(t, p.url, key)
	defer closer.Close()
	p.signal(syscall.SIGTERM)
	rest, _ := io.ReadAll(body)
	if !bytes.Contains(rest, []byte(`"code":"upstream_error"`)) || bytes.Contains(rest, []byte("[DONE]")) {
		t.Fatalf("the stream was not cut with an error event:\n%s", rest)
	}
	p.waitExit()
	p.waitLog("shutdown deadline reached")

	again := startTokenhub(t, cfg)
	if n, completion := again.usage(id); n != 1 || completion < 3 || completion > 20 {
		t.Fatalf("after the restart: %d requests and %d completion tokens billed, want 1 and the ~5 chunks relayed", n, completion)
	}
	again.signal(syscall.SIGTERM)
	again.waitExit()
}

// TestSIGHUPReloads: SIGHUP applies a changed file (a model added), refuses
// an invalid one with a log line naming the field and the fix while the old
// config keeps serving, and warns about fields that need a restart.
func TestSIGHUPReloads(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, 2, "", "")
	p := startTokenhub(t, cfg)
	_, key := p.newKey()
	models := func() []string {
		status, b := p.call("GET", "/v1/models", key, "")
		var l struct{ Data []struct{ ID string } }
		if status != 200 || json.Unmarshal(b, &l) != nil {
			t.Fatalf("models: %d %s", status, b)
		}
		var ids []string
		for _, m := range l.Data {
			ids = append(ids, m.ID)
		}
		return ids
	}
	if got := models(); !slices.Equal(got, []string{"mock"}) {
		t.Fatalf("models %q", got)
	}

	writeConfig(t, dir, 2, "  - {name: second, routes: [{upstream: mock}]}\n", "log: {level: debug}\n")
	p.signal(syscall.SIGHUP)
	p.waitLog("config reloaded")
	if got := models(); !slices.Equal(got, []string{"mock", "second"}) {
		t.Fatalf("after SIGHUP: models %q", got)
	}
	p.waitLog(`"field":"log.level"`)

	writeConfig(t, dir, 2, "  - {name: second, routes: [{upstream: nowhere}]}\n", "")
	p.signal(syscall.SIGHUP)
	line := p.waitLog("config reload refused")
	if !strings.Contains(line, `models[1].routes[0].upstream: no upstream named \"nowhere\"; declare it under upstreams or fix the name`) {
		t.Fatalf("the refusal does not name the field and the fix: %s", line)
	}
	if got := models(); !slices.Equal(got, []string{"mock", "second"}) {
		t.Fatalf("after a refused SIGHUP: models %q", got)
	}
	p.signal(syscall.SIGTERM)
	p.waitExit()
}

// TestSecondSignalCutsAtOnce: a second SIGTERM during the drain cuts the
// streams without waiting for server.shutdown_timeout (30s here).
func TestSecondSignalCutsAtOnce(t *testing.T) {
	p := startTokenhub(t, writeConfig(t, t.TempDir(), 100, "", ""))
	_, key := p.newKey()
	body, closer := stream(t, p.url, key)
	defer closer.Close()
	p.signal(syscall.SIGTERM)
	p.waitLog("shutting down")
	p.signal(syscall.SIGTERM)
	rest, _ := io.ReadAll(body)
	if !bytes.Contains(rest, []byte(`"code":"upstream_error"`)) {
		t.Fatalf("the stream was not cut with an error event:\n%s", rest)
	}
	p.waitExit()
}
