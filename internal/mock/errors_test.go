package mock

import (
	"errors"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

const chatBody = `{"model":"m","messages":[{"role":"user","content":"x"}]}`

func TestRequestErrors(t *testing.T) {
	ts := start(t, Options{})
	f := func(method, path, body string, wantStatus int, want string) {
		t.Helper()
		status, got := ts.do(t, method, path, body)
		if status != wantStatus || got != want {
			t.Fatalf("%s %s %s:\n got %d %s\nwant %d %s", method, path, body, status, got, wantStatus, want)
		}
	}
	e := func(message, param, code string) string {
		return string(appendError(nil, message, "invalid_request_error", param, code))
	}
	f("POST", "/v1/chat/completions", `{"model":"m",`, 400, e(errMalformedJSON.message, "", ""))
	f("POST", "/v1/chat/completions", ``, 400, e(errMalformedJSON.message, "", ""))
	f("POST", "/v1/chat/completions", `[1]`, 400, e(errNotObject.message, "", "invalid_type"))
	f("POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`, 400,
		`{"error":{"message":"you must provide a model parameter","type":"invalid_request_error","param":null,"code":null}}`)
	f("POST", "/v1/chat/completions", `{"model":"","messages":[]}`, 400, e(errMissingModel.message, "", ""))
	f("POST", "/v1/chat/completions", `{"model":1,"messages":[]}`, 400, e(errModelNotString.message, "model", "invalid_type"))
	f("POST", "/v1/chat/completions", `{"model":"m"}`, 400, e(errMissingMessages.message, "messages", "missing_required_parameter"))
	f("POST", "/v1/chat/completions", `{"model":"m","messages":[]}`, 400, e(errEmptyMessages.message, "messages", "empty_array"))
	f("POST", "/v1/chat/completions", `{"model":"m","messages":"hi"}`, 400, e(errMessagesNotArray.message, "messages", "invalid_type"))
	f("POST", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}`, 400,
		e(errBadMaxTokens.message, "max_tokens", "invalid_value"))
	f("POST", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}`, 400,
		e(errBadMaxTokens.message, "max_tokens", "invalid_value"))
	f("POST", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"x"}],"n":129}`, 400,
		e(errBadN.message, "n", "invalid_value"))
	f("POST", "/v1/completions", `{"model":"m"}`, 400, e(errMissingPrompt.message, "prompt", "missing_required_parameter"))
	f("POST", "/v1/completions", `{"model":"m","prompt":{}}`, 400, e(errBadPrompt.message, "prompt", "invalid_type"))
	f("POST", "/v1/embeddings", `{"model":"m"}`, 400, e(errMissingInput.message, "input", "missing_required_parameter"))
	f("POST", "/v1/embeddings", `{"model":"m","input":[]}`, 400, e(errBadInput.message, "input", "invalid_type"))
	f("POST", "/v1/embeddings", `{"model":"m","input":"x","encoding_format":"hex"}`, 400,
		e(errBadEncodingFormat.message, "encoding_format", "invalid_value"))
	f("POST", "/v1/embeddings", `{"model":"m","input":"x","dimensions":0}`, 400,
		e(errBadDimensions.message, "dimensions", "invalid_value"))
	f("POST", "/v1/nope", chatBody, 404,
		`{"error":{"message":"Invalid URL (POST /v1/nope)","type":"invalid_request_error","param":null,"code":null}}`)
	f("GET", "/v1/chat/completions", "", 405,
		`{"error":{"message":"Invalid URL (GET /v1/chat/completions)","type":"invalid_request_error","param":null,"code":null}}`)
	f("POST", "/v1/models", "", 405,
		`{"error":{"message":"Invalid URL (POST /v1/models)","type":"invalid_request_error","param":null,"code":null}}`)
}

func TestMalformedJSONWithSDK(t *testing.T) {
	ts := start(t, Options{})
	_, err := ts.client().Chat.Completions.New(testContext(t), openai.ChatCompletionNewParams{},
		option.WithRequestBody("application/json", strings.NewReader(`{"model":`)))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Type != "invalid_request_error" ||
		apiErr.Message != errMalformedJSON.message || apiErr.Code != "" || apiErr.Param != "" {
		t.Fatalf("got %v, want a 400 invalid_request_error", err)
	}
}

func TestBadMockHeaders(t *testing.T) {
	ts := start(t, Options{})
	f := func(header, value string, want *apiError) {
		t.Helper()
		status, got := ts.do(t, "POST", "/v1/chat/completions", chatBody, header, value)
		if wantBody := string(appendError(nil, want.message, want.typ, want.param, want.code)); status != 400 || got != wantBody {
			t.Fatalf("%s: %s: got %d %s", header, value, status, got)
		}
	}
	f(HeaderLatency, "soon", errBadLatency)
	f(HeaderLatency, "-1s", errBadLatency)
	f(HeaderInterval, "11m", errBadInterval)
	f(HeaderChunks, "0", errBadChunks)
	f(HeaderChunks, "many", errBadChunks)
	f(HeaderStatus, "200", errBadStatus)
	f(HeaderFailAfter, "x", errBadFailAfter)
}

func TestStatus(t *testing.T) {
	f := func(o Options, header string, wantStatus int, wantType, wantCode string) {
		t.Helper()
		ts := start(t, o)
		var opts []option.RequestOption
		if header != "" {
			opts = append(opts, option.WithHeader(HeaderStatus, header))
		}
		client := ts.client(opts...)
		_, err := client.Chat.Completions.New(testContext(t), openai.ChatCompletionNewParams{Model: "m", Messages: chatMessages})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != wantStatus || apiErr.Type != wantType || apiErr.Code != wantCode ||
			!strings.Contains(apiErr.Message, "told to fail") {
			t.Fatalf("Status %d / header %q: got %v, want %d %s %s", o.Status, header, err, wantStatus, wantType, wantCode)
		}
		// Every endpoint fails, the model list too.
		if _, err := client.Models.List(testContext(t)); !errors.As(err, &apiErr) || apiErr.StatusCode != wantStatus {
			t.Fatalf("models: got %v, want %d", err, wantStatus)
		}
		if n := ts.Requests(); n != 2 {
			t.Fatalf("Requests() = %d, want 2 (no retries)", n)
		}
	}
	f(Options{Status: 429}, "", 429, "requests", "rate_limit_exceeded")
	f(Options{Status: 500}, "", 500, "server_error", "")
	f(Options{Status: 401}, "", 401, "invalid_request_error", "invalid_api_key")
	f(Options{}, "503", 503, "server_error", "")
	f(Options{Status: 500}, "404", 404, "invalid_request_error", "model_not_found")

	// X-Mock-Status: 0 turns a failing mock back into a working one.
	ts := start(t, Options{Status: 500})
	status, _ := ts.do(t, "POST", "/v1/chat/completions", chatBody, HeaderStatus, "0")
	if status != 200 {
		t.Fatalf("X-Mock-Status: 0: status %d, want 200", status)
	}
}

func TestFailAfterChunks(t *testing.T) {
	f := func(o Options, header string, wantWords int) {
		t.Helper()
		ts := start(t, o)
		var opts []option.RequestOption
		if header != "" {
			opts = append(opts, option.WithHeader(HeaderFailAfter, header))
		}
		stream := ts.client(opts...).Chat.Completions.NewStreaming(testContext(t),
			openai.ChatCompletionNewParams{Model: "m", Messages: chatMessages})
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if stream.Err() == nil {
			t.Fatalf("FailAfterChunks %d / header %q: the stream ended cleanly", o.FailAfterChunks, header)
		}
		if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != Text(wantWords) || acc.Choices[0].FinishReason != "" {
			t.Fatalf("got %+v before the cut, want %d words and no finish", acc.Choices, wantWords)
		}
		// A buffered answer is not affected.
		if _, err := ts.client(opts...).Chat.Completions.New(testContext(t),
			openai.ChatCompletionNewParams{Model: "m", Messages: chatMessages}); err != nil {
			t.Fatalf("buffered answer: %v", err)
		}
	}
	f(Options{FailAfterChunks: 3}, "", 3)
	f(Options{}, "5", 5)
	f(Options{FailAfterChunks: 3, Chunks: 2}, "", 2)
}

func TestFailAfterBytes(t *testing.T) {
	ts := start(t, Options{})
	conn, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	body := `{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}`
	req := "POST /v1/chat/completions HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\n" +
		HeaderFailAfter + ": 1\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	// The server must close the connection by itself, in the middle of the
	// chunked body: no terminating chunk, no [DONE].
	raw, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	got := normalize(string(raw))
	const head = `data: {"id":"ID","object":"chat.completion.chunk","created":0,"model":"m","system_fingerprint":"fp_mock","choices":[`
	ev1 := head + `{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}` + "\n\n"
	ev2 := head + `{"index":0,"delta":{"content":" lorem"},"logprobs":null,"finish_reason":null}]}` + "\n\n"
	// The chunk sizes are those of the real events, whose id and created are
	// longer than the placeholders.
	want := regexp.MustCompile(`^HTTP/1\.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n` +
		`[0-9a-f]+\r\n` + regexp.QuoteMeta(ev1) + `\r\n[0-9a-f]+\r\n` + regexp.QuoteMeta(ev2) + `\r\n$`)
	if !want.MatchString(got) {
		t.Fatalf("raw answer:\n%q", got)
	}
}

func TestModels(t *testing.T) {
	ts := start(t, Options{})
	page, err := ts.client().Models.List(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != "mock" || page.Data[0].Object != "model" || page.Data[0].OwnedBy != "tokenhub" ||
		page.Data[0].Created == 0 {
		t.Fatalf("models: %s", page.RawJSON())
	}
}
