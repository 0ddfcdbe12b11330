package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

// served is what clients received from a node: answers with status 200 and
// the tokens they carried (a stream's text events, one token each at
// least), and every request sent, answered or not.
type served struct {
	sent, requests, prompt, completion atomic.Int64
}

// TestSIGKILLLosesNoUsage: a real tokenhub process under concurrent load
// (plain requests and streams) is killed with SIGKILL between two flushes,
// then started again on the same store: it records at least the requests and
// tokens clients received 200 for (a stream cut by the kill counts its text
// received so far), and no more requests than were sent. A second restart
// changes nothing. With the embedded store and with Valkey.
//
// Before the journal, the first restart fell short by the usage answered
// since the last flush (up to a second of traffic).
func TestSIGKILLLosesNoUsage(t *testing.T) {
	for _, store := range []string{"embedded", "valkey"} {
		t.Run(store, func(t *testing.T) {
			dir := t.TempDir()
			storeYAML := fmt.Sprintf("{path: %s}", dir)
			if store == "valkey" {
				srv := valkeytest.Start(t)
				storeYAML = fmt.Sprintf("{path: %s, valkey: {addrs: [%q], prefix: sigkill, timeout: 10s}}", dir, srv.Addr())
			}
			config := filepath.Join(dir, "tokenhub.yaml")
			cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin_key: %s
store: %s
upstreams:
  - {name: mock, base_url: "inproc://mock", headers: {X-Mock-Chunks: "20", X-Mock-Interval: "20ms"}}
models:
  - {name: mock, routes: [{upstream: mock}], price: {input_per_mtok: 1, output_per_mtok: 2}}
plans: [{name: all, models: ["*"]}]
`, signalAdminKey, storeYAML)
			if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}

			p := startTokenhub(t, config)
			id, key := p.newKey()
			var s served
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() { plainLoad(p.url, key, &s, stop) })
			}
			for range 2 {
				wg.Go(func() { streamLoad(p.url, key, &s, stop) })
			}
			// Past a flush or two, and then between two: when killed, the
			// node holds up to a second of answered usage nowhere but in
			// memory and its journal.
			eventually.True(t, "200 answers before the kill", func() bool { return s.requests.Load() >= 200 })
			time.Sleep(1500 * time.Millisecond) // load runs on; not a synchronisation
			p.signal(syscall.SIGKILL)
			<-p.exit
			close(stop)
			wg.Wait()

			p = startTokenhub(t, config)
			got := p.fullUsage(id)
			t.Logf("served %d requests (%d sent), %d prompt and %d completion tokens; recorded %+v",
				s.requests.Load(), s.sent.Load(), s.prompt.Load(), s.completion.Load(), got)
			if got.Requests < s.requests.Load() || got.Prompt < s.prompt.Load() || got.Completion < s.completion.Load() {
				t.Fatalf("recorded %+v after SIGKILL; clients received 200 for %d requests, %d prompt and %d completion tokens",
					got, s.requests.Load(), s.prompt.Load(), s.completion.Load())
			}
			if got.Requests > s.sent.Load() {
				t.Fatalf("recorded %d requests, more than the %d sent: some counted twice", got.Requests, s.sent.Load())
			}
			p.signal(syscall.SIGKILL)
			<-p.exit
			p = startTokenhub(t, config)
			if again := p.fullUsage(id); again != got {
				t.Fatalf("a second restart changed the record from %+v to %+v", got, again)
			}
		})
	}
}

type usageRecord struct {
	Requests   int64 `json:"requests"`
	Prompt     int64 `json:"prompt_tokens"`
	Completion int64 `json:"completion_tokens"`
}

func (p *process) fullUsage(id string) usageRecord {
	p.t.Helper()
	status, b := p.call("GET", "/v1/keys/"+id+"/usage", signalAdminKey, "")
	var u usageRecord
	if status != 200 || json.Unmarshal(b, &u) != nil {
		p.t.Fatalf("usage: %d %s", status, b)
	}
	return u
}

// sender returns a function that posts body as a chat completion with key,
// counting it as sent in s.
func sender(url, key, body string, s *served) func() (*http.Response, error) {
	c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	return func() (*http.Response, error) {
		req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		s.sent.Add(1)
		return c.Do(req)
	}
}

// stopped reports whether stop is closed, without waiting.
func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// plainLoad sends chat requests one after another until stop or until the
// node is gone, counting the usage of each 200.
func plainLoad(url, key string, s *served, stop <-chan struct{}) {
	send := sender(url, key, `{"model":"mock","messages":[{"role":"user","content":"hello there"}]}`, s)
	for !stopped(stop) {
		resp, err := send()
		if err != nil {
			continue // the node is gone; stop ends the loop
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		var r struct {
			Usage struct {
				Prompt     int64 `json:"prompt_tokens"`
				Completion int64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err != nil || resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil {
			continue
		}
		s.requests.Add(1)
		s.prompt.Add(r.Usage.Prompt)
		s.completion.Add(r.Usage.Completion)
	}
}

// streamLoad runs streams one after another until stop or until the node is
// gone. A stream counts as a request once it brought text, and each text
// event as a completion token; a finished stream with usage counts exactly.
func streamLoad(url, key string, s *served, stop <-chan struct{}) {
	send := sender(url, key, `{"model":"mock","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}`, s)
	for !stopped(stop) {
		resp, err := send()
		if err != nil {
			continue
		}
		if resp.StatusCode != 200 {
			resp.Body.Close()
			continue
		}
		var events int64
		var usage struct {
			Prompt     int64 `json:"prompt_tokens"`
			Completion int64 `json:"completion_tokens"`
		}
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				break
			}
			data, ok := strings.CutPrefix(strings.TrimSpace(line), "data: ")
			if !ok {
				continue
			}
			var ev struct {
				Choices []struct {
					Delta struct{ Content string } `json:"delta"`
				} `json:"choices"`
				Usage *struct {
					Prompt     int64 `json:"prompt_tokens"`
					Completion int64 `json:"completion_tokens"`
				} `json:"usage"`
			}
			if json.Unmarshal([]byte(data), &ev) != nil {
				continue
			}
			for _, ch := range ev.Choices {
				if ch.Delta.Content != "" {
					events++
				}
			}
			if ev.Usage != nil {
				usage.Prompt, usage.Completion = ev.Usage.Prompt, ev.Usage.Completion
			}
		}
		resp.Body.Close()
		switch {
		case usage.Completion > 0: // finished: the upstream's count
			s.requests.Add(1)
			s.prompt.Add(usage.Prompt)
			s.completion.Add(usage.Completion)
		case events > 0: // cut by the kill after some text
			s.requests.Add(1)
			s.completion.Add(events)
		}
	}
}
