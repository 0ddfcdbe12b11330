package anthropic

import "testing"

func TestReadEvent(t *testing.T) {
	f := func(data string, want Event) {
		t.Helper()
		if got := ReadEvent([]byte(data)); got != want {
			t.Fatalf("%s:\ngot  %+v\nwant %+v", data, got, want)
		}
	}
	f(`{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":10,"cache_read_input_tokens":1000,"cache_creation_input_tokens":200,"output_tokens":1}}}`,
		Event{Kind: EventMessageStart, Usage: Usage{10, 1000, 200, 1}, Has: HasInput | HasCacheRead | HasCacheCreation | HasOutput, HasUsage: true})
	f(`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}`,
		Event{Kind: EventMessageDelta, Usage: Usage{OutputTokens: 42}, Has: HasOutput, HasUsage: true})
	f(`{"type":"message_delta","usage":{"output_tokens":-5,"input_tokens":null}}`,
		Event{Kind: EventMessageDelta, HasUsage: true})
	// An escape counts as one byte (é is two in UTF-8: it errs low).
	f(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"h\u00e9llo\n"}}`,
		Event{Kind: EventContentDelta, ContentBytes: 6})
	f(`{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}`,
		Event{Kind: EventContentDelta, ContentBytes: 5})
	f(`{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}`,
		Event{Kind: EventContentDelta, ContentBytes: 3})
	f(`{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"abc"}}`,
		Event{Kind: EventContentDelta})
	f(`{"type":"message_stop"}`, Event{Kind: EventMessageStop})
	f(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, Event{Kind: EventError})
	f(`{"type":"ping"}`, Event{})
	f(`{"type":"message_stop"`, Event{})
	f(`[DONE]`, Event{})
	f(``, Event{})
}

func TestIsError(t *testing.T) {
	f := func(body string, want bool) {
		t.Helper()
		if got := IsError([]byte(body)); got != want {
			t.Fatalf("%s: %v", body, got)
		}
	}
	f(`{"type":"error","error":{"type":"not_found_error","message":"model: x"}}`, true)
	f(`{"type":"error","error":{"message":"no type"}}`, false)
	f(`{"error":{"type":"invalid_request_error","message":"OpenAI's"}}`, false)
	f(`<html>502</html>`, false)
}
