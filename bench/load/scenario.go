package load

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Scenario is a kind of request a benchmark sends over and over: the same for
// every target, so that their results compare.
type Scenario struct {
	// Name is how the scenario is chosen on a command line.
	Name string
	// Request is sent to every target; the caller adds the headers a target
	// needs, such as its Authorization.
	Request Request
}

// ScenarioNames lists the scenarios NewScenario knows.
func ScenarioNames() []string { return []string{"chat", "stream", "embeddings"} }

// chatMessages is a realistic short conversation: with the rest of the body,
// about 400 bytes, the size of a typical chat request.
const chatMessages = `[{"role":"system","content":"You are a concise assistant for network engineers. Answer in plain text."},` +
	`{"role":"user","content":"What is the difference between TCP keep-alive and HTTP keep-alive, and when does each matter for a reverse proxy?"},` +
	`{"role":"assistant","content":"TCP keep-alive probes idle sockets; HTTP keep-alive reuses a connection for several requests."},` +
	`{"role":"user","content":"Give one example of each."}]`

// NewScenario returns the scenario called name, asking for model, with
// answers of maxTokens tokens.
//
//   - chat: a buffered chat completion.
//   - stream: the same chat completion streamed, with usage; the whole stream
//     is one request, its latency the time to the last event.
//   - embeddings: one embedding of a sentence.
func NewScenario(name, model string, maxTokens int) (Scenario, error) {
	m, err := json.Marshal(model)
	if err != nil {
		return Scenario{}, fmt.Errorf("load: model %q: %w", model, err)
	}
	quoted := string(m)
	var b strings.Builder
	s := Scenario{Name: name}
	switch name {
	case "chat", "stream":
		b.WriteString(`{"model":` + quoted + `,"messages":` + chatMessages + `,"max_tokens":` + strconv.Itoa(maxTokens) + `,"temperature":0.2`)
		s.Request = Request{Path: "/v1/chat/completions", Expect: []byte(`"object":"chat.completion"`)}
		if name == "stream" {
			b.WriteString(`,"stream":true,"stream_options":{"include_usage":true}`)
			s.Request.Expect = []byte("data: [DONE]")
		}
		b.WriteString(`,"user":"bench"}`)
	case "embeddings":
		b.WriteString(`{"model":` + quoted + `,"input":"The quick brown fox jumps over the lazy dog while the reverse proxy keeps its upstream connections alive.","encoding_format":"float"}`)
		s.Request = Request{Path: "/v1/embeddings", Expect: []byte(`"object":"embedding"`)}
	default:
		return Scenario{}, fmt.Errorf("load: unknown scenario %q (want one of %s)", name, strings.Join(ScenarioNames(), ", "))
	}
	s.Request.Method = "POST"
	s.Request.Body = []byte(b.String())
	return s, nil
}
