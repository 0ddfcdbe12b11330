package mock

import (
	"bufio"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const anthropicVersionHeader = "anthropic-version"

var reRequestID = regexp.MustCompile(`req_mock[0-9a-f]{16}`)

// anthropicErrorBody is the body Anthropic answers an error with, its
// request id replaced by ID.
func anthropicErrorBody(typ, message string) string {
	return `{"type":"error","error":{"type":"` + typ + `","message":"` + message + `"},"request_id":"ID"}`
}

// Each validation rule, with the exact status and body Anthropic answers.
func TestAnthropicValidation(t *testing.T) {
	ts := start(t, Options{Anthropic: AnthropicOptions{APIKey: testAnthropicKey}})
	f := func(name, path, body string, headers []string, wantStatus int, typ, message string) {
		t.Helper()
		status, got := ts.do(t, "POST", path, body, headers...)
		want := anthropicErrorBody(typ, message)
		if got = reRequestID.ReplaceAllString(got, "ID"); status != wantStatus || got != want {
			t.Fatalf("%s:\n got %d %s\nwant %d %s", name, status, got, wantStatus, want)
		}
	}
	auth := []string{"x-api-key", testAnthropicKey, anthropicVersionHeader, "2023-06-01"}
	bad := func(name, body, message string) {
		t.Helper()
		f(name, "/v1/messages", body, auth, 400, "invalid_request_error", message)
	}
	const user = `{"role":"user","content":"hi"}`
	const head = `{"model":"mock","max_tokens":5,`

	f("no key", "/v1/messages", head+`"messages":[`+user+`]}`, []string{anthropicVersionHeader, "2023-06-01"},
		401, "authentication_error", "x-api-key header is required")
	f("wrong key", "/v1/messages", head+`"messages":[`+user+`]}`, []string{"x-api-key", "sk-other", anthropicVersionHeader, "2023-06-01"},
		401, "authentication_error", "invalid x-api-key")
	f("wrong bearer", "/v1/messages", head+`"messages":[`+user+`]}`, []string{"Authorization", "Bearer sk-other", anthropicVersionHeader, "2023-06-01"},
		401, "authentication_error", "invalid x-api-key")
	f("key checked before version", "/v1/messages", head+`"messages":[`+user+`]}`, nil,
		401, "authentication_error", "x-api-key header is required")
	f("no version", "/v1/messages", head+`"messages":[`+user+`]}`, []string{"x-api-key", testAnthropicKey},
		400, "invalid_request_error", "anthropic-version: header is required")
	f("count_tokens needs the version too", "/v1/messages/count_tokens", `{"model":"mock","messages":[`+user+`]}`, []string{"x-api-key", testAnthropicKey},
		400, "invalid_request_error", "anthropic-version: header is required")
	f("unknown model", "/v1/messages", `{"model":"claude-nope","max_tokens":5,"messages":[`+user+`]}`, auth,
		404, "not_found_error", "model: claude-nope")
	f("unknown model to count_tokens", "/v1/messages/count_tokens", `{"model":"gpt-4o","messages":[`+user+`]}`, auth,
		404, "not_found_error", "model: gpt-4o")
	f("unknown path", "/v1/messages/batches", `{}`, auth, 404, "not_found_error", "Not Found")

	bad("malformed JSON", `{"model":`, errAnthropicMalformedJSON.message)
	bad("not an object", `[1]`, errAnthropicNotObject.message)
	bad("no model", `{"max_tokens":5,"messages":[`+user+`]}`, "model: Field required")
	bad("model not a string", `{"model":1,"max_tokens":5,"messages":[`+user+`]}`, "model: Input should be a valid string")
	bad("no max_tokens", `{"model":"mock","messages":[`+user+`]}`, "max_tokens: Field required")
	bad("max_tokens negative", `{"model":"mock","max_tokens":-1,"messages":[`+user+`]}`, "max_tokens: Input should be greater than or equal to 0")
	bad("max_tokens fractional", `{"model":"mock","max_tokens":1.5,"messages":[`+user+`]}`, "max_tokens: Input should be a valid integer")
	bad("max_tokens null", `{"model":"mock","max_tokens":null,"messages":[`+user+`]}`, "max_tokens: Input should be a valid integer")
	bad("no messages", head+`"system":"x"}`, "messages: Field required")
	bad("messages not a list", head+`"messages":{}}`, "messages: Input should be a valid list")
	bad("empty messages", head+`"messages":[]}`, "messages: at least one message is required")
	bad("tool role", head+`"messages":[{"role":"tool","content":"x"}]}`,
		"messages.0: Input should be 'user', 'assistant' or 'system'")
	bad("developer role", head+`"messages":[`+user+`,{"role":"developer","content":"x"}]}`,
		"messages.1: Input should be 'user', 'assistant' or 'system'")
	bad("no role", head+`"messages":[{"content":"x"}]}`,
		"messages.0: Input should be 'user', 'assistant' or 'system'")
	bad("system message with an image", head+`"messages":[{"role":"system","content":[{"type":"image","source":{}}]},`+user+`]}`,
		"messages.0.content.0: system messages may only contain text blocks")
	bad("empty user content", head+`"messages":[{"role":"user","content":""}]}`,
		"messages.0: all messages must have non-empty content except for the optional final assistant message")
	bad("empty content blocks", head+`"messages":[{"role":"user","content":[]},{"role":"assistant","content":"x"}]}`,
		"messages.0: all messages must have non-empty content except for the optional final assistant message")
	bad("empty assistant content before the end", head+`"messages":[`+user+`,{"role":"assistant","content":""},`+user+`]}`,
		"messages.1: all messages must have non-empty content except for the optional final assistant message")
	bad("empty text block", head+`"messages":[{"role":"user","content":[{"type":"text","text":""}]}]}`,
		"messages.0.content.0: text content blocks must be non-empty")
	bad("block without type", head+`"messages":[{"role":"user","content":[{"text":"x"}]}]}`,
		"messages.0.content.0: Input should be a valid dictionary with a string 'type'")
	bad("tool_use from the user", head+`"messages":[{"role":"user","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]}]}`,
		"messages.0.content.0: `tool_use` blocks can only be in `assistant` messages")
	bad("tool_result from the assistant", head+`"messages":[`+user+`,{"role":"assistant","content":[{"type":"tool_result","tool_use_id":"t1","content":"x"}]}]}`,
		"messages.1.content.0: `tool_result` blocks can only be in `user` messages")
	bad("tool_result with no tool_use before", head+`"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"x"}]}]}`,
		"messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: t1. "+
			"Each `tool_result` block must have a corresponding `tool_use` block in the previous message.")
	bad("tool_result for another id", head+`"messages":[`+user+`,{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]},`+
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"t2","content":"x"}]}]}`,
		"messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: t2. "+
			"Each `tool_result` block must have a corresponding `tool_use` block in the previous message.")
	bad("tool_result two messages late", head+`"messages":[`+user+`,{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]},`+
		user+`,{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"x"}]}]}`,
		"messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: t1. "+
			"Each `tool_use` block must have a corresponding `tool_result` block in the next message.")
	bad("tool_use left unanswered", head+`"messages":[`+user+`,{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}},`+
		`{"type":"tool_use","id":"t2","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"x"}]}]}`,
		"messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: t2. "+
			"Each `tool_use` block must have a corresponding `tool_result` block in the next message.")
	bad("tool without a name", head+`"messages":[`+user+`],"tools":[{"input_schema":{}}]}`, errAnthropicToolName.message)
	bad("tool_choice tool without a name", head+`"messages":[`+user+`],"tool_choice":{"type":"tool"}}`, "tool_choice.name: Field required")
	bad("tool_choice unknown", head+`"messages":[`+user+`],"tool_choice":{"type":"required"}}`, errAnthropicToolChoice.message)
	bad("system a number", head+`"messages":[`+user+`],"system":1}`, errAnthropicSystemType.message)
	bad("stop_sequences not strings", head+`"messages":[`+user+`],"stop_sequences":[1]}`, errAnthropicStopsType.message)
	bad("stream not a boolean", head+`"messages":[`+user+`],"stream":"yes"}`, errAnthropicStreamType.message)
	f("bad X-Mock-Cache-Read", "/v1/messages", head+`"messages":[`+user+`]}`, append(auth, HeaderCacheRead, "-1"),
		400, "invalid_request_error", errBadCacheRead.message)
}

// What Anthropic accepts, the mock accepts too.
func TestAnthropicAccepts(t *testing.T) {
	ts := start(t, Options{Chunks: 2})
	f := func(name, body string, headers ...string) {
		t.Helper()
		status, got := ts.do(t, "POST", "/v1/messages", body, append([]string{anthropicVersionHeader, "2023-06-01"}, headers...)...)
		if status != 200 {
			t.Fatalf("%s: %d %s", name, status, got)
		}
	}
	const user = `{"role":"user","content":"hi"}`
	f("no key needed when the mock has none", `{"model":"mock","max_tokens":5,"messages":[`+user+`]}`)
	f("assistant first", `{"model":"mock","max_tokens":5,"messages":[{"role":"assistant","content":"Hi."},`+user+`]}`)
	f("consecutive user turns", `{"model":"mock","max_tokens":5,"messages":[`+user+`,`+user+`]}`)
	f("empty final assistant (prefill)", `{"model":"mock","max_tokens":5,"messages":[`+user+`,{"role":"assistant","content":""}]}`)
	f("mid-conversation system message", `{"model":"mock","max_tokens":5,"messages":[`+user+`,{"role":"system","content":[{"type":"text","text":"Be brief."}]},`+user+`]}`)
	f("images and documents pass", `{"model":"mock","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"http://x"}},{"type":"text","text":"what?"}]}]}`)
	f("cache_control anywhere", `{"model":"mock","max_tokens":5,"cache_control":{"type":"ephemeral"},"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral"}}],"messages":[`+user+`]}`)
	f("a bad value a later key replaces", `{"model":1,"max_tokens":"x","messages":{},"model":"mock","max_tokens":5,"messages":[`+user+`]}`)
	f("escaped keys", `{"mod\u0065l":"mock","max_\u0074okens":5,"messages":[{"r\u006fle":"user","content":"hi"}]}`)
	f("escaped model name", `{"model":"m\u006fck","max_tokens":5,"messages":[`+user+`]}`)
	f("bearer key", `{"model":"mock","max_tokens":5,"messages":[`+user+`]}`, "Authorization", "Bearer whatever")
}

// The last of repeated keys wins, as in Anthropic's Python server: the
// answer follows the last max_tokens and the last model.
func TestAnthropicLastKeyWins(t *testing.T) {
	ts := start(t, Options{})
	status, got := ts.do(t, "POST", "/v1/messages",
		`{"model":"claude-nope","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"model":"mock","max_tokens":2,"stream":true,"stream":false}`,
		anthropicVersionHeader, "2023-06-01")
	if status != 200 || !strings.Contains(got, `"model":"mock"`) || !strings.Contains(got, `"text":"`+Text(2)+`"`) ||
		!strings.Contains(got, `"stop_reason":"max_tokens"`) {
		t.Fatalf("%d %s", status, got)
	}
}

var reMessageID = regexp.MustCompile(`(msg|toolu)_mock[0-9a-f]{16}`)

// The exact bytes of a stream: Anthropic's events, framing and ping.
func TestAnthropicStreamBytes(t *testing.T) {
	ts := start(t, Options{Anthropic: AnthropicOptions{CacheReadInputTokens: 8}})
	f := func(name, body, want string) {
		t.Helper()
		status, got := ts.do(t, "POST", "/v1/messages", body, anthropicVersionHeader, "2023-06-01")
		got = reMessageID.ReplaceAllString(got, "${1}_ID")
		if status != 200 || got != want {
			t.Fatalf("%s: status %d, stream:\n%s\nwant:\n%s", name, status, got, want)
		}
	}
	const start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_ID\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"mock\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null," +
		"\"usage\":{\"input_tokens\":4,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":8,\"cache_creation\":{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":1,\"service_tier\":\"standard\"}}}\n\n"
	const ping = "event: ping\ndata: {\"type\": \"ping\"}\n\n"
	const stop = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
	delta := func(reason string, output string) string {
		return "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"" + reason + "\",\"stop_sequence\":null}," +
			"\"usage\":{\"input_tokens\":4,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":8,\"output_tokens\":" + output + "}}\n\n" +
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	}
	// "hi": ceil(2/4) + 3 = 4 input tokens.
	f("text", `{"model":"mock","max_tokens":2,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		start+
			"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"+ping+
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" lorem\"}}\n\n"+
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" ipsum\"}}\n\n"+
			stop+delta("max_tokens", "2"))
	// The tool's definition counts: its 75 bytes of JSON and "f": ceil(76/4) + 3 = 22 input tokens;
	// the input {"city":"lorem"} is 16 bytes, 4 output tokens.
	tool := `{"name":"weather","input_schema":{"properties":{"city":{"type":"string"}}}}`
	f("tool_use", `{"model":"mock","max_tokens":50,"stream":true,"tools":[`+tool+`],"tool_choice":{"type":"any"},"messages":[{"role":"user","content":"f"}]}`,
		strings.ReplaceAll(start, `"input_tokens":4`, `"input_tokens":22`)+
			"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_ID\",\"name\":\"weather\",\"input\":{}}}\n\n"+ping+
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n"+
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\\\"lor\"}}\n\n"+
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"em\\\"}\"}}\n\n"+
			stop+strings.Replace(delta("tool_use", "4"), `"input_tokens":4`, `"input_tokens":22`, 1))
}

// FailAfterChunks cuts the connection mid-stream, after the message_start
// that bills the input and the given number of deltas: what a gateway must
// bill when Anthropic dies mid-answer.
func TestAnthropicStreamCut(t *testing.T) {
	ts := start(t, Options{FailAfterChunks: 2})
	conn, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	body := `{"model":"mock","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	if _, err := io.WriteString(conn, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nanthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n"+
		"Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body); err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(bufio.NewReader(conn))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	got := string(raw)
	if !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.Contains(got, "\r\nrequest-id: req_mock") ||
		strings.Count(got, "event: content_block_delta") != 2 || !strings.Contains(got, "event: message_start") ||
		strings.Contains(got, "message_delta") || strings.HasSuffix(got, "0\r\n\r\n") {
		t.Fatalf("want a stream cut after 2 deltas, with no end; got:\n%s", got)
	}
}
