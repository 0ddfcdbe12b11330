package anthropic

import "testing"

func TestEventUsage(t *testing.T) {
	f := func(data string, want Usage, wantHas UsageFields, wantOK bool) {
		t.Helper()
		u, has, ok := EventUsage([]byte(data))
		if u != want || has != wantHas || ok != wantOK {
			t.Fatalf("EventUsage(%s) = %+v %04b %v, want %+v %04b %v", data, u, has, ok, want, wantHas, wantOK)
		}
	}
	all := HasInput | HasCacheRead | HasCacheCreation | HasOutput
	f(`{"type":"message_start","message":{"usage":{"input_tokens":25,"cache_read_input_tokens":3,"cache_creation_input_tokens":4,"output_tokens":1}}}`, Usage{25, 3, 4, 1}, all, true)
	f(`{"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}`, Usage{InputTokens: 25, OutputTokens: 1}, HasInput|HasOutput, true)
	f(`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}`, Usage{OutputTokens: 15}, HasOutput, true)
	f(`{"type":"message_delta","usage":{"input_tokens":9,"cache_read_input_tokens":null,"output_tokens":15}}`, Usage{InputTokens: 9, OutputTokens: 15}, HasInput|HasOutput, true)
	f(`{"type":"message_delta","usage":{"output_tokens":-1,"input_tokens":1.5,"cache_read_input_tokens":"3"}}`, Usage{}, 0, true)
	f(`{"type":"message_delta","usage":{"output_tokens":1234567890123456}}`, Usage{}, 0, true)
	f(`{"type":"message_delta","delta":{}}`, Usage{}, 0, false)
	f(`{"type":"content_block_delta","usage":{"output_tokens":15}}`, Usage{}, 0, false)
	f(`{"type":"ping"}`, Usage{}, 0, false)
	f(`{"usage":{"output_tokens":15}}`, Usage{}, 0, false)
	f(`[DONE]`, Usage{}, 0, false)
	f(`{"type":"message_delta","usage":{"output_tokens":15}`, Usage{}, 0, false)
	f(``, Usage{}, 0, false)
}

func TestBodyUsage(t *testing.T) {
	f := func(body string, want Usage, wantOK bool) {
		t.Helper()
		u, _, ok := BodyUsage([]byte(body))
		if u != want || ok != wantOK {
			t.Fatalf("BodyUsage(%s) = %+v %v, want %+v %v", body, u, ok, want, wantOK)
		}
	}
	f(`{"id":"m","type":"message","content":[{"type":"text","text":"{\"usage\":{\"input_tokens\":99}}"}],"usage":{"input_tokens":2095,"output_tokens":503,"cache_creation_input_tokens":100,"cache_read_input_tokens":1000}}`, Usage{2095, 1000, 100, 503}, true)
	f(`{"type":"message","usage":null}`, Usage{}, false)
	f(`{"type":"message"}`, Usage{}, false)
	f(`{"type":"error","error":{"type":"api_error","message":"x"}}`, Usage{}, false)
	f(`not json`, Usage{}, false)
}

func TestUsageUpdateAndPrompt(t *testing.T) {
	var u Usage
	u.Update(Usage{InputTokens: 10, CacheReadInputTokens: 5, OutputTokens: 1}, HasInput|HasCacheRead|HasOutput)
	u.Update(Usage{OutputTokens: 40, InputTokens: 999}, HasOutput)
	if want := (Usage{InputTokens: 10, CacheReadInputTokens: 5, OutputTokens: 40}); u != want {
		t.Fatalf("usage %+v, want %+v", u, want)
	}
	if u.PromptTokens() != 15 {
		t.Fatalf("prompt %d, want 15", u.PromptTokens())
	}
}
