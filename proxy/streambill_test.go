package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// usageOf reads a key's month-to-date usage from the admin API.
func (g *gateway) usageOf(id string) (requests, prompt, completion int64) {
	var u struct {
		Requests   int64 `json:"requests"`
		Prompt     int64 `json:"prompt_tokens"`
		Completion int64 `json:"completion_tokens"`
	}
	g.admin("GET", "/v1/keys/"+id+"/usage", nil, http.StatusOK, &u)
	return u.Requests, u.Prompt, u.Completion
}

// rawStream posts body and returns the whole stream as the client got it.
func rawStream(t *testing.T, url, key, body string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	return string(b)
}

var volatile = regexp.MustCompile(`"id":"[^"]*"|"created":\d+`)

// TestStreamGetsExactlyWhatItAskedFor: without include_usage the client's
// stream equals the upstream's without usage (no usage chunk, no
// "usage":null), yet the gateway bills the upstream's exact usage; with it,
// the client gets the usage chunk as the upstream sent it.
func TestStreamGetsExactlyWhatItAskedFor(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 9})
	g := startGateway(t, yamlModels(up), "")
	k := g.newKey("all")
	const body = `{"model":"mock","stream":true,"messages":[{"role":"user","content":"count to nine"}]}`
	via := volatile.ReplaceAllString(rawStream(t, g.url, k.Key, body), "")
	direct := volatile.ReplaceAllString(rawStream(t, strings.TrimSuffix(up, "/v1"), "x", body), "")
	if via != direct {
		t.Fatalf("client stream differs from the upstream's:\nvia    %q\ndirect %q", via, direct)
	}
	if strings.Contains(via, "usage") {
		t.Fatalf("client got usage it did not ask for: %q", via)
	}
	_, prompt, completion := g.usageOf(k.ID)
	if completion != 9 || prompt == 0 {
		t.Fatalf("billed prompt %d completion %d, want the upstream's (completion 9)", prompt, completion)
	}

	withUsage := `{"model":"mock","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"count to nine"}]}`
	via = volatile.ReplaceAllString(rawStream(t, g.url, k.Key, withUsage), "")
	direct = volatile.ReplaceAllString(rawStream(t, strings.TrimSuffix(up, "/v1"), "x", withUsage), "")
	if via != direct || !strings.Contains(via, `"completion_tokens":9`) {
		t.Fatalf("with include_usage the streams differ:\nvia    %q\ndirect %q", via, direct)
	}
	if n, _, completion := g.usageOf(k.ID); n != 2 || completion != 18 {
		t.Fatalf("after two streams: %d requests, %d completion tokens", n, completion)
	}
}

// TestStreamAccumulatorAndLegacyCompletions: the SDK's accumulator sees the
// same text as a buffered answer, and legacy completions streams are billed
// from the upstream's usage too.
func TestStreamAccumulatorAndLegacyCompletions(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 6})
	g := startGateway(t, yamlModels(up), "")
	k := g.newKey("all")
	c := g.client(k.Key)
	s := c.Completions.NewStreaming(context.Background(), openai.CompletionNewParams{
		Model:  openai.CompletionNewParamsModel("mock"),
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Say it")},
	})
	text := ""
	for s.Next() {
		ch := s.Current()
		if len(ch.Choices) > 0 {
			text += ch.Choices[0].Text
		}
		if ch.JSON.Usage.Valid() && ch.Usage.TotalTokens != 0 {
			t.Fatalf("legacy stream delivered usage the client did not ask for: %+v", ch.Usage)
		}
	}
	if s.Err() != nil || text == "" {
		t.Fatalf("legacy stream: %q %v", text, s.Err())
	}
	// Legacy completions default to 16 tokens; the mock answers min(16, 6).
	if _, _, completion := g.usageOf(k.ID); completion != 6 {
		t.Fatalf("billed %d completion tokens, want 6", completion)
	}
}

// TestClientDisconnectStillBillsTheUpstreamUsage: a client that leaves after
// three chunks is billed what the upstream finally reports, because the
// gateway reads the stream to its end.
func TestClientDisconnectStillBillsTheUpstreamUsage(t *testing.T) {
	m, up := startMock(t, mock.Options{Chunks: 40, ChunkInterval: 5 * time.Millisecond})
	g := startGateway(t, yamlModels(up), "")
	k := g.newKey("all")
	// The client leaves mid-stream.
	g.leaveStream("/v1/chat/completions", "Authorization", "Bearer "+k.Key,
		`{"model":"mock","stream":true,"messages":[{"role":"user","content":"go"}]}`, "data: ", 3)
	eventually.True(t, "the upstream's 40 completion tokens billed for the one request after the client left", func() bool {
		n, _, completion := g.usageOf(k.ID)
		return n == 1 && completion == 40
	})
	if m.Requests() != 1 {
		t.Fatalf("upstream served %d requests", m.Requests())
	}
}

// TestUpstreamCutBillsWhatWasProduced: an upstream killed after 5 chunks
// ends the client's stream with an error event, and the 5 chunks are billed.
func TestUpstreamCutBillsWhatWasProduced(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 30, FailAfterChunks: 5})
	g := startGateway(t, yamlModels(up), "")
	k := g.newKey("all")
	got := rawStream(t, g.url, k.Key, `{"model":"mock","stream":true,"messages":[{"role":"user","content":"go"}]}`)
	if !strings.HasSuffix(got, `"type":"server_error","param":null,"code":"upstream_error"}}`+"\n\n") {
		t.Fatalf("stream does not end with the error event: %q", got)
	}
	n, _, completion := g.usageOf(k.ID)
	// No usage came, so the content relayed is billed at ~4 bytes a token:
	// five words of 4-6 bytes each.
	if n != 1 || completion < 5 || completion > 9 {
		t.Fatalf("billed %d requests, %d completion tokens; want an estimate of the 5 words produced", n, completion)
	}
}

// TestNoDrainSlotBillsAnEstimate: with no drain slot free (here none at all)
// a client that leaves gets its upstream cut at once, and what was relayed
// is billed as an estimate rather than nothing.
func TestNoDrainSlotBillsAnEstimate(t *testing.T) {
	// 400 chunks 25ms apart: 10s to the end, so "cut at once" and "drained"
	// differ by the tokens billed whatever the machine's load, not by time.
	_, up := startMock(t, mock.Options{Chunks: 400, ChunkInterval: 25 * time.Millisecond})
	g := startGateway(t, "server: {max_stream_drains: 0}\n"+yamlModels(up), "")
	k := g.newKey("all")
	g.leaveStream("/v1/chat/completions", "Authorization", "Bearer "+k.Key,
		`{"model":"mock","stream":true,"messages":[{"role":"user","content":"go"}]}`, "data: ", 3)
	var completion int64
	eventually.True(t, "the abandoned stream billed", func() bool {
		var n int64
		n, _, completion = g.usageOf(k.ID)
		return n == 1
	})
	// Cut long before the 400 chunks the upstream would send: a drained
	// stream bills them all (400 or more), a cut one the few relayed.
	if completion == 0 || completion >= 400 {
		t.Fatalf("billed %d completion tokens; want a small estimate of what was relayed before the cut", completion)
	}
}

// TestBudgetCutsTheStreamAtTheCap: an open-ended stream (no max_tokens, the
// model allows 100k tokens, the month's budget about 5k) is admitted with a
// step of its output reserved, extends as it goes, and is cut with a
// budget_exceeded error event when the next chunk would pass the cap. What
// was relayed is billed, within a chunk of the cap and never over it, and the
// next stream is refused with 402.
func TestBudgetCutsTheStreamAtTheCap(t *testing.T) {
	m, up := startMock(t, mock.Options{Chunks: 20000})
	g := startGateway(t, fmt.Sprintf(`
upstreams: [{name: up, base_url: %q}]
models:
  - {name: mock, routes: [{upstream: up}], price: {input_per_mtok: 1, output_per_mtok: 2}, max_output_tokens: 100000}
plans:
  - {name: month, models: ["*"], monthly_usd: 0.01}
`, up), "")
	k := g.newKey("month")
	s := g.client(k.Key).Chat.Completions.NewStreaming(context.Background(), chatParams("mock", "go on forever"))
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for s.Next() {
		acc.AddChunk(s.Current())
		chunks++
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "budget_exceeded") {
		t.Fatalf("after %d chunks: err %v, want the budget_exceeded error event", chunks, err)
	}
	// A $0.01 budget buys about 4990 tokens; with no usage from the cut
	// upstream they are estimated at four bytes a token (the mock's words
	// are 5-6 bytes), so fewer chunks than that fit.
	if chunks < 2500 || chunks >= 5000 || len(acc.Choices) != 1 || len(strings.Fields(acc.Choices[0].Message.Content)) != chunks-1 {
		t.Fatalf("got %d chunks (content %d words); want the ~3000 a $0.01 budget buys", chunks, len(strings.Fields(acc.Choices[0].Message.Content)))
	}
	var u struct {
		SpendUSD    float64 `json:"spend_usd"`
		ReservedUSD float64 `json:"reserved_usd"`
		Completion  int64   `json:"completion_tokens"`
	}
	eventually.True(t, "completion tokens billed", func() bool {
		g.admin("GET", "/v1/keys/"+k.ID+"/usage", nil, http.StatusOK, &u)
		return u.Completion > 0
	})
	t.Logf("%d chunks relayed; billed %d completion tokens, $%v", chunks, u.Completion, u.SpendUSD)
	if u.SpendUSD > 0.01 || u.SpendUSD < 0.01-0.00001 || u.ReservedUSD != 0 || u.Completion < int64(chunks-1) {
		t.Fatalf("billed $%v (%d tokens) with $%v reserved; want the %d chunks relayed, within one of the $0.01 cap",
			u.SpendUSD, u.Completion, u.ReservedUSD, chunks-1)
	}
	st, _, body := g.do("POST", "/v1/chat/completions", k.Key, []byte(`{"model":"mock","stream":true,"messages":[{"role":"user","content":"more"}]}`))
	if st != http.StatusPaymentRequired || !strings.Contains(string(body), "budget_exceeded") {
		t.Fatalf("after the cap: %d %s", st, body)
	}
	if m.Requests() != 1 {
		t.Fatalf("upstream saw %d requests, want only the first", m.Requests())
	}
}
