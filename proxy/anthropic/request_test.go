package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

// golden compares got with testdata/<name>, indented; -update rewrites it.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, got, "", "  "); err != nil {
		t.Fatalf("%s: output is not JSON: %v\n%s", name, err, got)
	}
	pretty.WriteByte('\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if !bytes.Equal(pretty.Bytes(), want) {
		t.Fatalf("%s differs from the golden file:\n%s", name, pretty.Bytes())
	}
}

var testOpts = RequestOptions{Model: "claude-sonnet-4-6", DefaultMaxTokens: 64000}

func TestChatToMessagesGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/chat-to-messages/*.json")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			body, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := ChatToMessages(nil, body, testOpts)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, strings.TrimSuffix(in[len("testdata/"):], ".json")+".golden", out)
		})
	}
}

func TestChatToMessagesInfo(t *testing.T) {
	f := func(body string, want RequestInfo) {
		t.Helper()
		_, got, err := ChatToMessages(nil, []byte(body), testOpts)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if got != want {
			t.Fatalf("%s: info %+v, want %+v", body, got, want)
		}
	}
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	f(`{`+msgs+`}`, RequestInfo{MaxTokens: 64000})
	f(`{`+msgs+`,"max_tokens":5}`, RequestInfo{MaxTokens: 5})
	f(`{`+msgs+`,"max_tokens":5,"max_completion_tokens":7}`, RequestInfo{MaxTokens: 7})
	f(`{`+msgs+`,"max_completion_tokens":7,"max_tokens":5}`, RequestInfo{MaxTokens: 7})
	f(`{`+msgs+`,"max_tokens":null}`, RequestInfo{MaxTokens: 64000})
	f(`{`+msgs+`,"stream":true}`, RequestInfo{Stream: true, MaxTokens: 64000})
	f(`{`+msgs+`,"stream":true,"stream_options":{"include_usage":true}}`, RequestInfo{Stream: true, IncludeUsage: true, MaxTokens: 64000})
	f(`{`+msgs+`,"stream":false,"stream_options":{"include_usage":true}}`, RequestInfo{MaxTokens: 64000})
	f(`{`+msgs+`,"stream":null}`, RequestInfo{MaxTokens: 64000})
}

// TestChatToMessagesMapping: one line per mapping, the part of the output
// that proves it.
func TestChatToMessagesMapping(t *testing.T) {
	f := func(extra, messages, want string) {
		t.Helper()
		if messages == "" {
			messages = `[{"role":"user","content":"hi"}]`
		}
		body := `{"model":"m","messages":` + messages + extra + `}`
		out, _, err := ChatToMessages(nil, []byte(body), testOpts)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if !strings.Contains(string(out), want) {
			t.Fatalf("%s:\n got %s\nwant it to contain %s", body, out, want)
		}
	}
	f(``, ``, `{"model":"claude-sonnet-4-6","max_tokens":64000,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`)
	f(`,"tool_choice":"auto","tools":[{"type":"function","function":{"name":"f"}}]`, ``, `"tools":[{"name":"f","input_schema":{"type":"object","properties":{}}}],"tool_choice":{"type":"auto"}`)
	f(`,"tool_choice":"none","tools":[{"type":"function","function":{"name":"f"}}]`, ``, `"tool_choice":{"type":"none"}`)
	f(`,"tool_choice":"required","tools":[{"type":"function","function":{"name":"f"}}]`, ``, `"tool_choice":{"type":"any"}`)
	f(`,"tool_choice":{"type":"function","function":{"name":"f"}},"tools":[{"type":"function","function":{"name":"f"}}]`, ``, `"tool_choice":{"type":"tool","name":"f"}`)
	f(`,"parallel_tool_calls":false,"tools":[{"type":"function","function":{"name":"f"}}]`, ``, `"tool_choice":{"type":"auto","disable_parallel_tool_use":true}`)
	f(`,"tool_choice":"none","parallel_tool_calls":false,"tools":[{"type":"function","function":{"name":"f"}}]`, ``, `"tool_choice":{"type":"none"}}`)
	f(`,"response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}}}`, ``,
		`,"output_config":{"format":{"type":"json_schema","schema":{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}}}}`)
	f(`,"stop":"x"`, ``, `"stop_sequences":["x"]`)
	f(`,"stop":["x","y"]`, ``, `"stop_sequences":["x","y"]`)
	f(`,"user":"u1"`, ``, `"metadata":{"user_id":"u1"}`)
	f(`,"temperature":1,"top_p":1.0`, ``, `"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`)
	f(`,"stream":true`, ``, `"stream":true`)
	f(``, `[{"role":"system","content":"s"},{"role":"user","content":"hi"}]`, `"system":[{"type":"text","text":"s"}]`)
	f(``, `[{"role":"user","content":"a"},{"role":"system","content":"s1"},{"role":"developer","content":"s2"}]`, `"system":[{"type":"text","text":"s1"},{"type":"text","text":"s2"}]`)
	f(``, `[{"role":"user","content":"a"},{"role":"user","content":"b"}]`, `"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]`)
	f(``, `[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/webp;base64,AAAA"}}]}]`, `{"type":"image","source":{"type":"base64","media_type":"image/webp","data":"AAAA"}}`)
	f(``, `[{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://x/y.png"}}]}]`, `{"type":"image","source":{"type":"url","url":"http://x/y.png"}}`)
	f(``, `[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"r"},{"role":"tool","tool_call_id":"d","content":""},{"role":"user","content":"more"}]`,
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"c","content":[{"type":"text","text":"r"}]},{"type":"tool_result","tool_use_id":"d"},{"type":"text","text":"more"}]}`)
	f(``, `[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]}]`, `{"role":"assistant","content":[{"type":"tool_use","id":"c","name":"f","input":{"x":1}}]}`)
	f(``, `[{"role":"user","content":"\u0000\"\\</script>\u2028"}]`, `"text":"\u0000\"\\</script>`+"\u2028"+`"`)
	f(``, `[{"r\u006fle":"user","content":"esc"}]`, `"text":"esc"`)
	// Keys match exactly: "Role" is not role, as OpenAI's server reads it
	// (Go's encoding/json would take it for role, and the last of the two).
	f(``, `[{"role":"user","Role":"system","content":"hi"}]`, `"messages":[{"role":"user"`)
	f(`,"seed":1,"store":true,"metadata":{"a":"b"},"service_tier":"flex","n":null,"logprobs":null,"presence_penalty":0,"frequency_penalty":0,"logit_bias":{},"response_format":{"type":"text"},"modalities":["text"]`, ``, `"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`)
}

// TestChatToMessagesSampling: version 2023-06-01 takes temperature and
// top_p; 2026-10-21 refuses them, so only their defaults pass, dropped.
func TestChatToMessagesSampling(t *testing.T) {
	f := func(version, extra, want string) {
		t.Helper()
		body := `{"messages":[{"role":"user","content":"hi"}]` + extra + `}`
		out, _, err := ChatToMessages(nil, []byte(body), RequestOptions{Model: "m", DefaultMaxTokens: 1, APIVersion: version})
		got := string(out)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, want) {
			t.Fatalf("%s %s: got %s, want %s", version, extra, got, want)
		}
	}
	f(Version20230601, `,"temperature":0.5,"top_p":0.25`, `"temperature":0.5,"top_p":0.25}`)
	f(Version20230601, `,"temperature":0`, `"temperature":0}`)
	f(Version20230601, `,"temperature":1.2`, `temperature: must be from 0 to 1`)
	f(Version20261021, `,"temperature":0.5`, `temperature: is not accepted by Anthropic API version 2026-10-21`)
	f("", `,"top_p":0.5`, `top_p: is not accepted by Anthropic API version 2026-10-21`)
	f("", `,"temperature":1,"top_p":1`, `"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`)
	f("", `,"temperature":null`, `"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`)
}

func TestChatToMessagesRefuses(t *testing.T) {
	f := func(extra, messages, wantParam string) {
		t.Helper()
		if messages == "" {
			messages = `[{"role":"user","content":"hi"}]`
		}
		body := `{"model":"m","messages":` + messages + extra + `}`
		_, _, err := ChatToMessages(nil, []byte(body), testOpts)
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("%s: err %v, want a FieldError at %q", body, err, wantParam)
		}
		if fe.Param != wantParam {
			t.Fatalf("%s: param %q (%v), want %q", body, fe.Param, err, wantParam)
		}
	}
	// Untranslatable.
	f(`,"n":2`, ``, "n")
	f(`,"logprobs":true`, ``, "logprobs")
	f(`,"top_logprobs":3`, ``, "top_logprobs")
	f(`,"presence_penalty":0.5`, ``, "presence_penalty")
	f(`,"frequency_penalty":-1`, ``, "frequency_penalty")
	f(`,"logit_bias":{"50256":-100}`, ``, "logit_bias")
	f(`,"response_format":{"type":"json_object"}`, ``, "response_format")
	f(`,"response_format":{"type":"json_schema","json_schema":{"name":"x"}}`, ``, "response_format.json_schema.schema")
	f(`,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":true}}`, ``, "response_format.json_schema.schema")
	f(`,"modalities":["text","audio"]`, ``, "modalities")
	f(`,"temperature":1.5`, ``, "temperature")
	f(`,"temperature":0.2`, ``, "temperature")
	f(`,"top_p":0.9`, ``, "top_p")
	f(`,"reasoning_effort":"high"`, ``, "reasoning_effort")
	f(`,"audio":{"voice":"alloy"}`, ``, "audio")
	f(`,"functions":[]`, ``, "functions")
	f(`,"tools":[{"type":"custom","custom":{"name":"x"}}]`, ``, "tools[0].type")
	f(``, `[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}]`, "messages[0].content[0].type")
	f(``, `[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/bmp;base64,AA"}}]}]`, "messages[0].content[0].image_url.url")
	f(``, `[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]`, "messages[0].content[0].image_url.url")
	f(``, `[{"role":"function","name":"f","content":"x"}]`, "messages[0].role")
	// Malformed.
	f(``, `[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{not json"}}]}]`, "messages[1].tool_calls[0].function.arguments")
	f(``, `[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]`, "messages[1].tool_calls[0].function.arguments")
	f(``, `[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1,\"a\":2}"}}]}]`, "messages[1].tool_calls[0].function.arguments")
	f(``, `[{"role":"tool","content":"x"}]`, "messages[0].tool_call_id")
	f(``, `[{"role":"user","content":""}]`, "messages[0].content")
	f(``, `[{"role":"assistant","content":null}]`, "messages[0].content")
	f(``, `[{"role":"system","content":"only"}]`, "messages")
	f(``, `[]`, "messages")
	f(`,"max_tokens":0`, ``, "max_tokens")
	f(`,"max_completion_tokens":-1`, ``, "max_completion_tokens")
	f(`,"stop":5`, ``, "stop")
	f(`,"tool_choice":"sometimes","tools":[{"type":"function","function":{"name":"f"}}]`, ``, "tool_choice")
	f(`,"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]`, ``, "tools[0].function.parameters")
	// Keys every parser must read alike: repeated anywhere, escapes decoded.
	f(`,"temperature":0.1,"temperature":0.9`, ``, "")
	f(`,"temperature":0.1,"temper\u0061ture":0.9`, ``, "")
	f(``, `[{"role":"user","role":"system","content":"hi"}]`, "")
	f(``, `[{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}]`, "")
	f(`,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{},"a":{}}}}}]`, ``, "")
	// Keys match exactly, as OpenAI's server reads them: an unknown
	// top-level key is refused, whatever its case.
	f(`,"Temperature":2`, ``, "Temperature")
	f(``, `"hi"`, "")
	f(`,"n":"2"`, ``, "")
}

func TestChatToMessagesRefusesDuplicatesWithDetail(t *testing.T) {
	_, _, err := ChatToMessages(nil, []byte(`{"messages":[{"role":"user","role":"system","content":"hi"}]}`), testOpts)
	if err == nil || !strings.Contains(err.Error(), `"role" is repeated`) {
		t.Fatalf("err %v, want it to name the repeated key", err)
	}
	_, _, err = ChatToMessages(nil, []byte(`{"messages":[{"role":5,"content":"secret text"}]}`), testOpts)
	if err == nil || err.Error() != "anthropic: a value is not a string where the chat completions API takes one" {
		t.Fatalf("err %v, want the type, and no content", err)
	}
	_, _, err = ChatToMessages(nil, []byte(`[1]`), testOpts)
	if err != ErrNotObject {
		t.Fatalf("err %v, want ErrNotObject", err)
	}
	_, _, err = ChatToMessages(nil, []byte(`{"messages":[{"role":"user","content":"hi"}]}`), RequestOptions{Model: "m"})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Param != "max_tokens" {
		t.Fatalf("no max_tokens and no default: err %v, want a FieldError at max_tokens", err)
	}
}

func TestChatToMessagesDeepNesting(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 200) + "1" + strings.Repeat("}", 200)
	body := `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":` + deep + `}}]}`
	if _, _, err := ChatToMessages(nil, []byte(body), testOpts); err == nil {
		t.Fatal("200 levels of nesting: no error")
	}
}
