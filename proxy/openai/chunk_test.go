package openai

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/sse"
)

const (
	contentChunk = `{"id":"chatcmpl-AqX3cWbVn8ZfGkP0tYh2LmN5rS7uE","object":"chat.completion.chunk","created":1736871234,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c","choices":[{"index":0,"delta":{"content":" today"},"logprobs":null,"finish_reason":null}],"usage":null}`
	usageChunk   = `{"id":"chatcmpl-AqX3cWbVn8ZfGkP0tYh2LmN5rS7uE","object":"chat.completion.chunk","created":1736871234,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}`
	escapedChunk = `{"id":"chatcmpl-AqX3cWbVn8ZfGkP0tYh2LmN5rS7uE","object":"chat.completion.chunk","created":1736871234,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"line\none \"q\" \u00e9 \u4e2d \ud83d\ude00"},"logprobs":null,"finish_reason":null}]}`
	twoChoices   = `{"id":"chatcmpl-AqX3cWbVn8ZfGkP0tYh2LmN5rS7uE","object":"chat.completion.chunk","created":1736871234,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null},{"index":1,"delta":{"content":" What"},"logprobs":null,"finish_reason":null}],"usage":null}`
	legacyChunk  = `{"id":"cmpl-AqX4e1Yb2Zc3Wd4Ve5Uf6Tg7Sh8Ri","object":"text_completion","created":1736871300,"choices":[{"text":" quiet","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct","system_fingerprint":null,"usage":null}`
	errorChunk   = `{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`
)

func TestChunkUsage(t *testing.T) {
	f := func(in string, prompt, completion int64, ok bool) {
		t.Helper()
		used, gotOK := ChunkUsage([]byte(in))
		if used.Prompt != prompt || used.Completion != completion || used.Cached != 0 || gotOK != ok {
			t.Fatalf("ChunkUsage(%s) = %+v, %v; want %d, %d, %v", in, used, gotOK, prompt, completion, ok)
		}
	}
	f(usageChunk, 19, 10, true)
	f(`{ "usage" : { "completion_tokens" : 7 , "prompt_tokens" : 3 } }`, 3, 7, true)
	f(`{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":0}}`, 9223372036854775807, 0, true)
	f(contentChunk, 0, 0, false) // "usage":null
	f(legacyChunk, 0, 0, false)
	f(`{"choices":[]}`, 0, 0, false)
	f(`{"choices":[{"usage":{"prompt_tokens":1,"completion_tokens":1}}],"usage":null}`, 0, 0, false)
	f(`{"usage":{"prompt_tokens":5}}`, 0, 0, false)
	f(`{"usage":{"prompt_tokens":-1,"completion_tokens":2}}`, 0, 0, false)
	f(`{"usage":{"prompt_tokens":1.5,"completion_tokens":2}}`, 0, 0, false)
	f(`{"usage":{"prompt_tokens":"5","completion_tokens":2}}`, 0, 0, false)
	f(`{"usage":{"prompt_tokens":1e40,"completion_tokens":2}}`, 0, 0, false)
	f(`{"usage":[19,10]}`, 0, 0, false)
	f(`[DONE]`, 0, 0, false)
	f(``, 0, 0, false)
	f(`{"usage":{"prompt_tokens":1,`, 0, 0, false)
}

// cachedChunk is OpenAI's usage chunk of a chat whose prompt was mostly
// cached.
const cachedChunk = `{"id":"chatcmpl-BxQ9","object":"chat.completion.chunk","created":1736871234,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}`

// TestUsageCachedTokens: cached_tokens is read from prompt_tokens_details,
// in a chunk and in a whole answer (chat, legacy completion as vLLM sends
// it); absent, null or not a count it is 0 and the usage still reads; a
// count past the prompt is read as sent (settlement clamps it); one
// elsewhere (a choice, a completion's details) is not it.
func TestUsageCachedTokens(t *testing.T) {
	f := func(in string, want usd.Tokens, wantOK bool) {
		t.Helper()
		got, ok := ChunkUsage([]byte(in))
		if got != want || ok != wantOK {
			t.Fatalf("ChunkUsage(%s) = %+v, %v; want %+v, %v", in, got, ok, want, wantOK)
		}
		if got, ok = Usage([]byte(in)); got != want || ok != wantOK {
			t.Fatalf("Usage(%s) = %+v, %v; want %+v, %v", in, got, ok, want, wantOK)
		}
	}
	f(cachedChunk, usd.Tokens{Prompt: 2006, Cached: 1920, Completion: 300}, true)
	f(usageChunk, usd.Tokens{Prompt: 19, Completion: 10}, true) // cached_tokens: 0
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":8}}}`, usd.Tokens{Prompt: 10, Cached: 8, Completion: 2}, true)
	f(`{"usage":{"prompt_tokens_details":{"cached_tokens":8},"completion_tokens":2,"prompt_tokens":10}}`, usd.Tokens{Prompt: 10, Cached: 8, Completion: 2}, true)
	f(`{"object":"text_completion","choices":[{"text":"x"}],"usage":{"prompt_tokens":64,"total_tokens":80,"completion_tokens":16,"prompt_tokens_details":{"cached_tokens":48}}}`, usd.Tokens{Prompt: 64, Cached: 48, Completion: 16}, true)
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":null}}`, usd.Tokens{Prompt: 10, Completion: 2}, true)
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":null}}}`, usd.Tokens{Prompt: 10, Completion: 2}, true)
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":-3}}}`, usd.Tokens{Prompt: 10, Completion: 2}, true)
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":"8"}}}`, usd.Tokens{Prompt: 10, Completion: 2}, true)
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1.5}}}`, usd.Tokens{Prompt: 10, Completion: 2}, true)
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":99}}}`, usd.Tokens{Prompt: 10, Cached: 99, Completion: 2}, true)
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"cached_tokens":7,"completion_tokens_details":{"cached_tokens":7}}}`, usd.Tokens{Prompt: 10, Completion: 2}, true)
	f(`{"choices":[{"usage":{"prompt_tokens_details":{"cached_tokens":7}}}],"usage":{"prompt_tokens":10,"completion_tokens":2}}`, usd.Tokens{Prompt: 10, Completion: 2}, true)
	f(`{"usage":{"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":8}}}`, usd.Tokens{}, false)
}

// TestUsageReadsAsClientsDo: an upstream's repeated or escaped keys in
// usage read as the official SDKs read them (Python's json, JSON.parse and
// Go's encoding/json keep the last of a repeated key and decode escaped
// names), so the bill is of the usage the client sees: at every level, the
// usage object itself, its counts and the cached count's details.
func TestUsageReadsAsClientsDo(t *testing.T) {
	f := func(in string, want usd.Tokens, wantOK bool) {
		t.Helper()
		var client struct {
			Usage *struct {
				Prompt      *int64 `json:"prompt_tokens"`
				Completion  *int64 `json:"completion_tokens"`
				PromptTDeta *struct {
					Cached int64 `json:"cached_tokens"`
				} `json:"prompt_tokens_details"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(in), &client); wantOK && err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if u := client.Usage; wantOK && (u == nil || *u.Prompt != want.Prompt || *u.Completion != want.Completion ||
			(u.PromptTDeta != nil && u.PromptTDeta.Cached != want.Cached)) {
			t.Fatalf("the case is wrong: encoding/json reads %s as %+v", in, u)
		}
		got, ok := ChunkUsage([]byte(in))
		if got != want || ok != wantOK {
			t.Fatalf("ChunkUsage(%s) = %+v, %v; want %+v, %v", in, got, ok, want, wantOK)
		}
		if got, ok = Usage([]byte(in)); got != want || ok != wantOK {
			t.Fatalf("Usage(%s) = %+v, %v; want %+v, %v", in, got, ok, want, wantOK)
		}
	}
	f(`{"usage":{"prompt_tokens":1,"completion_tokens":2,"prompt_tokens":50}}`, usd.Tokens{Prompt: 50, Completion: 2}, true)
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"completion_tokens":200}}`, usd.Tokens{Prompt: 10, Completion: 200}, true)
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":9,"cached_tokens":4}}}`, usd.Tokens{Prompt: 10, Cached: 4, Completion: 2}, true)
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":9},"prompt_tokens_details":{"cached_tokens":1}}}`, usd.Tokens{Prompt: 10, Cached: 1, Completion: 2}, true)
	f(`{"usage":{"prompt_tokens":1,"completion_tokens":1},"choices":[],"usage":{"prompt_tokens":70,"completion_tokens":30}}`, usd.Tokens{Prompt: 70, Completion: 30}, true)
	f(`{"usage":{"prompt_tokens":1,"completion_tokens":1,"prompt_tokens":"many"}}`, usd.Tokens{}, false)
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_\u0074okens":40}}`, usd.Tokens{Prompt: 40, Completion: 2}, true)
	f(`{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_\u0074okens":8}}}`, usd.Tokens{Prompt: 10, Cached: 8, Completion: 2}, true)
	f(`{ "usage" : { "prompt_tokens" : 10 , "completion_tokens" : 2 , "prompt_tokens_details" : { "cached_tokens" : 6 } } }`, usd.Tokens{Prompt: 10, Cached: 6, Completion: 2}, true)
	f(`{"choices":[{"delta":{"content":"\"usage\":{\"prompt_tokens\":1}"}}],"usage":{"prompt_tokens":10,"completion_tokens":2}}`, usd.Tokens{Prompt: 10, Completion: 2}, true)
}

func TestIsUsageOnlyChunk(t *testing.T) {
	f := func(in string, want bool) {
		t.Helper()
		if got := IsUsageOnlyChunk([]byte(in)); got != want {
			t.Fatalf("IsUsageOnlyChunk(%s) = %v, want %v", in, got, want)
		}
	}
	f(usageChunk, true)
	f(`{"choices":[ ],"usage":{"prompt_tokens":1,"completion_tokens":2}}`, true)
	f(`{"choices":[],"usage":null}`, false)
	f(`{"choices":[]}`, false)
	f(`{"usage":{"prompt_tokens":1,"completion_tokens":2}}`, false)
	f(`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`, false)
	f(`{"choices":null,"usage":{"prompt_tokens":1,"completion_tokens":2}}`, false)
	f(contentChunk, false)
	f(errorChunk, false)
	f(`[DONE]`, false)
}

func TestContentBytes(t *testing.T) {
	f := func(in string, want int) {
		t.Helper()
		if got := ContentBytes([]byte(in)); got != want {
			t.Fatalf("ContentBytes(%s) = %d, want %d", in, got, want)
		}
	}
	f(contentChunk, len(" today"))
	f(twoChoices, len("Hello")+len(" What"))
	f(legacyChunk, len(" quiet"))
	f(`{"choices":[{"text":"ab","index":0},{"text":"cde","index":1}]}`, 5)
	f(escapedChunk, len("line\none \"q\" é 中 😀"))
	f(`{"choices":[{"delta":{"content":"\ud800"}}]}`, len("\uFFFD"))
	f(`{"choices":[{"delta":{"content":"\ud800\u0041"}}]}`, len("\uFFFDA"))
	f(`{"choices":[{"delta":{"content":"\udc00\ud83d"}}]}`, 2*len("\uFFFD"))
	f(`{"choices":[{"delta":{"content":"a\\b\/c\t"}}]}`, len("a\\b/c\t"))
	f(`{"choices":[{"delta":{"role":"assistant","content":"","refusal":null}}]}`, 0)
	f(`{"choices":[{"delta":{"content":null,"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}`, 2)
	f(`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{\"a\""}},{"index":1,"function":{"arguments":":1}"}}]}}]}`, len(`{"a"`)+len(`:1}`))
	f(`{"choices":[{"delta":{"refusal":"no"}},{"delta":{"reasoning_content":"think"}},{"delta":{"reasoning":"hm","content":"ok"}}]}`, 2+5+2+2)
	f(`{"choices":[{"delta":{"tool_calls":null}}]}`, 0)
	f(`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`, 0)
	f(`{"choices":[1,null,{"delta":{"content":"ab"}}]}`, 2)
	f(`{"choices":[{"delta":null,"text":"ab"}]}`, 2)
	f(`{"choices":[{"delta":{"content":7}}]}`, 0)
	f(`{"choices":{"0":{"delta":{"content":"ab"}}}}`, 0)
	f(`{ "choices" : [ { "delta" : { "content" : "ab" } } ] }`, 2)
	f("{\"choices\":["+strings.Repeat(`{"text":"a"},`, 200)+`{"text":"a"}]}`, maxChoices)
	f(usageChunk, 0)
	f(errorChunk, 0)
	f(`[DONE]`, 0)
	f(``, 0)
}

func TestHasError(t *testing.T) {
	f := func(in string, want bool) {
		t.Helper()
		if got := HasError([]byte(in)); got != want {
			t.Fatalf("HasError(%s) = %v, want %v", in, got, want)
		}
	}
	f(errorChunk, true)
	f(` {"error":{}}`, true)
	f(`{"error":null}`, false)
	f(`{"error":"boom"}`, false)
	f(`{"choices":[{"delta":{"content":"error"}}]}`, false)
	f(`{"choices":[{"error":{"message":"nested"}}]}`, false)
	f(contentChunk, false)
	f(`[DONE]`, false)
}

// tally is what a stream adds up to, read event by event.
type tally struct {
	events, content, errors int
	prompt, completion      int64
	usageOnly               int
	done                    bool
}

// TestOpenAIStreams reads recorded-shape OpenAI streams (chat and legacy
// completions, n=1 and n=2, with and without stream_options.include_usage,
// one broken off by an error) and checks what accounting would see.
func TestOpenAIStreams(t *testing.T) {
	f := func(file string, want tally) {
		t.Helper()
		in, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		for _, stream := range [][]byte{in, bytes.ReplaceAll(in, []byte("\n"), []byte("\r\n"))} {
			var got tally
			var stripped []byte // the stream as relayed with its usage chunk stripped
			s := sse.NewScanner(4 << 10)
			for c := range slices.Chunk(stream, 333) { // reads that end mid-line, and mid-CRLF

				s.Feed(c)
				for {
					ev, ok, err := s.Next()
					if err != nil {
						t.Fatalf("%s: %v", file, err)
					}
					if !ok {
						break
					}
					got.events++
					got.done = got.done || ev.IsDone()
					if HasError(ev.Data) {
						got.errors++
					}
					if used, ok := ChunkUsage(ev.Data); ok {
						got.prompt, got.completion = used.Prompt, used.Completion
					}
					n := ContentBytes(ev.Data)
					if want := decodedContent(t, ev.Data); n != want {
						t.Fatalf("%s: ContentBytes(%s) = %d, want %d", file, ev.Data, n, want)
					}
					got.content += n
					if IsUsageOnlyChunk(ev.Data) {
						got.usageOnly++
						continue
					}
					stripped = append(stripped, ev.Raw...)
				}
			}
			s.End()
			if _, ok, _ := s.Next(); ok || len(s.Pending()) > 0 {
				t.Fatalf("%s: bytes left after the last event: %q", file, s.Pending())
			}
			if got != want {
				t.Fatalf("%s: read %+v, want %+v", file, got, want)
			}
			if want.usageOnly > 0 {
				// The usage chunk is the last before [DONE].
				usage := stream[bytes.LastIndex(stream, []byte(`data: {"id"`)):bytes.LastIndex(stream, []byte("data: [DONE]"))]
				if wantStripped := bytes.Replace(stream, usage, nil, 1); !bytes.Equal(stripped, wantStripped) {
					t.Fatalf("%s: stripping the usage chunk relayed\n%s\nwant\n%s", file, stripped, wantStripped)
				}
			} else if !bytes.Equal(stripped, stream) {
				t.Fatalf("%s: relayed stream differs from the upstream's", file)
			}
		}
	}
	f("chat.sse", tally{events: 13, content: 37, done: true})
	f("chat_usage.sse", tally{events: 14, content: 37, prompt: 19, completion: 10, usageOnly: 1, done: true})
	f("chat_n2_usage.sse", tally{events: 25, content: 65, prompt: 19, completion: 19, usageOnly: 1, done: true})
	f("chat_n2_together.sse", tally{events: 15, content: 65, done: true})
	f("completion.sse", tally{events: 8, content: 29, done: true})
	f("completion_n2_usage.sse", tally{events: 14, content: 47, prompt: 4, completion: 12, usageOnly: 1, done: true})
	f("chat_error.sse", tally{events: 5, content: 11, errors: 1})
}

// decodedContent is ContentBytes the slow way, by decoding the chunk.
func decodedContent(t *testing.T, data []byte) int {
	t.Helper()
	if string(data) == "[DONE]" {
		return 0
	}
	type call struct {
		Function *struct{ Arguments *string }
	}
	var c struct {
		Choices []struct {
			Delta *struct {
				Content, Refusal, ReasoningContent, Reasoning *string
				ToolCalls                                     []call `json:"tool_calls"`
			}
			Text *string
		}
	}
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatalf("chunk %s: %v", data, err)
	}
	n := 0
	for _, ch := range c.Choices {
		if d := ch.Delta; d != nil {
			for _, s := range []*string{d.Content, d.Refusal, d.ReasoningContent, d.Reasoning} {
				if s != nil {
					n += len(*s)
				}
			}
			for _, tc := range d.ToolCalls {
				if tc.Function != nil && tc.Function.Arguments != nil {
					n += len(*tc.Function.Arguments)
				}
			}
		} else if ch.Text != nil {
			n += len(*ch.Text)
		}
	}
	return n
}

// FuzzChunk: the readers take any bytes an upstream sends without panicking,
// and ContentBytes agrees with a full decode of well-formed chunks.
func FuzzChunk(f *testing.F) {
	for _, c := range []string{contentChunk, usageChunk, escapedChunk, twoChoices, legacyChunk, errorChunk, "[DONE]", `{"choices":[{"delta":{"content":"\ud800\u`} {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if used, ok := ChunkUsage(data); ok && (used.Prompt < 0 || used.Completion < 0 || used.Cached < 0) {
			t.Fatalf("ChunkUsage(%s) = %+v", data, used)
		}
		IsUsageOnlyChunk(data)
		HasError(data)
		n := ContentBytes(data)
		if n < 0 || n > 3*len(data) {
			t.Fatalf("ContentBytes(%s) = %d", data, n)
		}
	})
}

// FuzzUnquotedLen: the length of a JSON string, counted without decoding it,
// is that of the decoded string.
func FuzzUnquotedLen(f *testing.F) {
	for _, s := range []string{`"abc"`, `"line\none \"q\" \u00e9 \u4e2d \ud83d\ude00"`, `"\ud800\u0041"`, `"\udc00\ud83d"`, `"a\\b\/c\t"`, `""`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		var s string
		if !utf8.ValidString(q) || json.Unmarshal([]byte(q), &s) != nil {
			return // not a JSON string, or one with invalid UTF-8, which decoding would replace
		}
		q = strings.TrimSpace(q) // json.Unmarshal allows whitespace around the value
		if got := unquotedLen(q); got != len(s) {
			t.Fatalf("unquotedLen(%s) = %d, want %d", q, got, len(s))
		}
	})
}

// TestContentBytesMatchesDecode: on chunks that encoding/json writes (it
// escapes <, > and & as \u003c and the like), ContentBytes agrees with a
// full decode, whatever the text and the number of choices.
func TestContentBytesMatchesDecode(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := []rune("ab <>&\"\\/\n\t\x00\x1fé中😀\u2028\uFFFD")
	text := func() *string {
		if r.IntN(5) == 0 {
			return nil
		}
		s := make([]rune, r.IntN(12))
		for i := range s {
			s[i] = alphabet[r.IntN(len(alphabet))]
		}
		str := string(s)
		return &str
	}
	type delta struct {
		Role    string  `json:"role,omitempty"`
		Content *string `json:"content"`
	}
	type choice struct {
		Index        int     `json:"index"`
		Delta        *delta  `json:"delta,omitempty"`
		Text         *string `json:"text,omitempty"`
		FinishReason *string `json:"finish_reason"`
	}
	for range 5000 {
		var choices []choice
		for i := range r.IntN(4) {
			c := choice{Index: i}
			if r.IntN(2) == 0 {
				c.Delta = &delta{Content: text()}
			} else {
				c.Text = text()
			}
			choices = append(choices, c)
		}
		data, err := json.Marshal(map[string]any{"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": choices, "usage": nil})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := ContentBytes(data), decodedContent(t, data); got != want {
			t.Fatalf("ContentBytes(%s) = %d, want %d", data, got, want)
		}
	}
}
