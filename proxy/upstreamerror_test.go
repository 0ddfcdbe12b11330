package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/valyala/fasthttp"
)

const upstreamSecret = "sk-proj-UPSTREAMsecretKEY0123456789abcdefXYZ"

// refusingUpstream answers each model with the 4xx a real server of its
// kind sends: plain text, an nginx HTML page, FastAPI's detail (a string or
// validation errors that echo the input), a {"message"} or {"error":"..."}
// JSON, OpenAI's own shape, and bodies that try to leak the upstream key or
// break the answer's JSON.
func refusingUpstream(ctx *fasthttp.RequestCtx) {
	var req struct{ Model string }
	json.Unmarshal(ctx.PostBody(), &req)
	status, ct, body := 400, "text/plain; charset=utf-8", ""
	switch req.Model {
	case "text":
		body = "max_tokens is too large for this deployment\n"
	case "html":
		status, ct = 413, "text/html"
		body = "<html>\r\n<head><title>413 Request Entity Too Large</title><style>body{}</style></head>\r\n" +
			"<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	case "fastapi-string":
		status, ct, body = 404, "application/json", `{"detail":"Not Found"}`
	case "fastapi-validation":
		status, ct = 422, "application/json"
		body = `{"detail":[{"type":"missing","loc":["body","messages"],"msg":"Field required","input":{"model":"fastapi-validation","prompt":"secret prompt"}},` +
			`{"type":"int_parsing","loc":["body","max_tokens"],"msg":"Input should be a valid integer","input":"x"}]}`
	case "message":
		ct, body = "application/json", `{"message":"Input validation error: inputs tokens + max_new_tokens must be <= 4096","code":400}`
	case "error-string":
		status, ct, body = 422, "application/json", `{"error":"Input validation error: temperature must be strictly positive","error_type":"validation"}`
	case "other-json":
		status, ct, body = 409, "application/json", `{"status":"conflict","reason":"busy"}`
	case "openai":
		ct, body = "application/json", `{"error":{"message":"Their own words.","type":"invalid_request_error","param":"x","code":"their_code"}}`
	case "leak":
		body = "bad request; you sent Authorization: Bearer " + upstreamSecret + " and api-key " + upstreamSecret[8:30]
	case "hostile":
		body = "quote \" backslash \\ nul \x00 tag <script>alert(1)</script> bad utf-8 \xff\xfe end"
	case "long":
		body = strings.Repeat("é", 50000)
	case "empty":
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType(ct)
	ctx.SetBodyString(body)
}

func refusingModels() string {
	var ms []string
	for _, m := range []string{"text", "html", "fastapi-string", "fastapi-validation", "message", "error-string",
		"other-json", "openai", "leak", "hostile", "long", "empty"} {
		ms = append(ms, "{name: "+m+", routes: [{upstream: up}]}")
	}
	return strings.Join(ms, ", ")
}

// TestUpstreamRefusalKeepsItsMessage: an upstream's 4xx whose body is not an
// OpenAI error reaches the client in OpenAI's shape with its status and the
// upstream's own message (bounded, escaped, the upstream key redacted);
// an OpenAI-shaped one passes through as it came.
func TestUpstreamRefusalKeepsItsMessage(t *testing.T) {
	up := startUpstream(t, refusingUpstream)
	g := startGateway(t, fmt.Sprintf(`
upstreams: [{name: up, base_url: %q, api_key: %s}]
models: [%s]
plans: [{name: all, models: ["*"]}]
`, up, upstreamSecret, refusingModels()), "")
	key := g.newKey("all").Key
	call := func(model string) (int, []byte, string) {
		t.Helper()
		st, hdr, b := g.do("POST", "/v1/chat/completions", key, []byte(`{"model":"`+model+`","messages":[]}`))
		if st >= 400 && model != "openai" {
			wantErrorBody(t, st, hdr, b, st, "upstream_error")
		}
		var e struct {
			Error struct{ Message, Type string }
		}
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("%s: answer is not JSON: %v: %q", model, err, b)
		}
		return st, b, e.Error.Message
	}
	f := func(model string, status int, message string) {
		t.Helper()
		st, b, msg := call(model)
		if st != status || msg != message {
			t.Fatalf("%s: %d %q\nwant %d %q\n%s", model, st, msg, status, message, b)
		}
	}
	const pre = "The upstream refused the request for the model: "
	f("text", 400, pre+"text (upstream status 400). It said: max_tokens is too large for this deployment")
	f("html", 413, pre+"html (upstream status 413). It said: 413 Request Entity Too Large nginx")
	f("fastapi-string", 404, pre+"fastapi-string (upstream status 404). It said: Not Found")
	f("fastapi-validation", 422, pre+"fastapi-validation (upstream status 422). It said: "+
		"body.messages: Field required; body.max_tokens: Input should be a valid integer")
	f("message", 400, pre+"message (upstream status 400). It said: Input validation error: inputs tokens + max_new_tokens must be <= 4096")
	f("error-string", 422, pre+"error-string (upstream status 422). It said: Input validation error: temperature must be strictly positive")
	f("other-json", 409, pre+`other-json (upstream status 409). It said: {"status":"conflict","reason":"busy"}`)
	f("empty", 400, pre+"empty (upstream status 400)")
	f("hostile", 400, pre+"hostile (upstream status 400). It said: quote \" backslash \\ nul tag <script>alert(1)</script> bad utf-8 \ufffd\ufffd end")

	if st, b, _ := call("openai"); st != 400 || string(b) != `{"error":{"message":"Their own words.","type":"invalid_request_error","param":"x","code":"their_code"}}` {
		t.Fatalf("OpenAI-shaped refusal not passed as it came: %d %s", st, b)
	}

	_, b, msg := call("leak")
	for i := 0; i+8 <= len(upstreamSecret); i++ {
		if strings.Contains(string(b), upstreamSecret[i:i+8]) {
			t.Fatalf("the upstream key leaked (%q): %s", upstreamSecret[i:i+8], b)
		}
	}
	if !strings.HasPrefix(msg, pre+"leak (upstream status 400). It said: bad request; you sent Authorization: Bearer [redacted]") {
		t.Fatalf("leak: %q", msg)
	}

	_, b, msg = call("long")
	if len(b) > 1200 || !strings.HasSuffix(msg, "é…") {
		t.Fatalf("long refusal: %d bytes, message %q", len(b), msg)
	}

	// The SDK shows it too.
	_, err := g.client(key).Chat.Completions.New(context.Background(), chatParams("fastapi-string", "hi"))
	var apiErr *openai.Error
	if !asAPIError(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "upstream_error" ||
		apiErr.Message != pre+"fastapi-string (upstream status 404). It said: Not Found" {
		t.Fatalf("SDK error: %v", err)
	}
}

// TestUpstreamWords pins the reading of bodies beyond the gateway test's.
func TestUpstreamWords(t *testing.T) {
	f := func(body, ct, want string) {
		t.Helper()
		got := appendUpstreamWords(nil, []byte(body), []byte(ct), [][]byte{[]byte(upstreamSecret)})
		if string(got) != want {
			t.Fatalf("%q (%s): %q, want %q", body, ct, got, want)
		}
	}
	f(`<headline>Too big</headline>`, "text/html", ". It said: Too big")
	f(`<p>unclosed <script>x`, "text/html", ". It said: unclosed")
	f(`{"detail":[{"loc":["body",0,"content"],"msg":"bad"}]}`, "application/json", ". It said: body.0.content: bad")
	f(`{"message":"key `+upstreamSecret+`"}`, "application/json", ". It said: key [redacted]")
	f(`"just a string"`, "application/json", ". It said: just a string")
	f(`[1,2]`, "application/json", ". It said: [1,2]")
	f("  \n\t ", "text/plain", "")
	f("short sk-proj", "text/plain", ". It said: short sk-proj")
}
