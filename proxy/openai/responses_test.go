package openai

import (
	"encoding/json"
	"testing"

	"github.com/tokenhub/tokenhub/internal/usd"
)

func TestResponsesFields(t *testing.T) {
	f := func(body, wantModel string, wantStream bool, wantMax int64, wantPrev string, wantChained, wantBackground bool) {
		t.Helper()
		var rf Request
		if d, err := rf.ParseResponses([]byte(body)); err != nil {
			t.Fatalf("ParseResponses(%s): %v %s", body, err, d)
		}
		if string(rf.Model) != wantModel || rf.Stream != wantStream || rf.MaxTokens != wantMax ||
			string(rf.PreviousResponseID) != wantPrev || rf.Chained != wantChained || rf.Background != wantBackground {
			t.Fatalf("ParseResponses(%s) = model %q stream %v max %d prev %q chained %v background %v", body,
				rf.Model, rf.Stream, rf.MaxTokens, rf.PreviousResponseID, rf.Chained, rf.Background)
		}
	}
	f(`{"model":"m","input":"hi"}`, "m", false, -1, "", false, false)
	f(`{"model":"m","input":"hi","stream":true,"max_output_tokens":50}`, "m", true, 50, "", false, false)
	f(`{"model":"m","max_output_tokens":null}`, "m", false, -1, "", false, false)
	f(`{"model":"m","previous_response_id":"resp_1"}`, "m", false, -1, "resp_1", true, false)
	f(`{"model":"m","previous_response_id":"resp\u005f2"}`, "m", false, -1, "resp_2", true, false)
	f(`{"model":"m","previous_response_id":null}`, "m", false, -1, "", false, false)
	f(`{"model":"m","conversation":"conv_1"}`, "m", false, -1, "", true, false)
	f(`{"model":"m","conversation":{"id":"conv_1"}}`, "m", false, -1, "", true, false)
	f(`{"model":"m","conversation":null}`, "m", false, -1, "", false, false)
	f(`{"model":"m","background":true}`, "m", false, -1, "", false, true)
	f(`{"model":"m","background":"true"}`, "m", false, -1, "", false, true)
	f(`{"model":"m","background":false,"store":false}`, "m", false, -1, "", false, false)
	// What the upstream adds to the input from elsewhere: a stored prompt,
	// an earlier item referenced by id (its type optional, escapes decoded).
	f(`{"model":"m","prompt":{"id":"pmpt_1"}}`, "m", false, -1, "", true, false)
	f(`{"model":"m","prompt":null}`, "m", false, -1, "", false, false)
	f(`{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}`, "m", false, -1, "", true, false)
	f(`{"model":"m","input":[{"role":"user","content":"hi"},{"id":"msg_1"}]}`, "m", false, -1, "", true, false)
	f(`{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}`, "m", false, -1, "", true, false)
	f(`{"model":"m","input":[{"Type":"item_reference","id":"msg_1"}]}`, "m", false, -1, "", true, false)
	f(`{"model":"m","input":[{"role":"user","content":"a \"type\":\"item_reference\""},{"type":"message","role":"user","content":[{"type":"input_text","text":"x"}]}]}`, "m", false, -1, "", false, false)
	f(`{"model":"m","input":[{"type":"message","id":"msg_1","role":"assistant","content":[]}, 1, "s", []]}`, "m", false, -1, "", false, false)
	f(`{"model":"m","input":[{"type":null,"id":"msg_1","content":null}]}`, "m", false, -1, "", true, false)
	f(`{"model":"m","input":[]}`, "m", false, -1, "", false, false)
	f(`{"model":"m","input":"item_reference"}`, "m", false, -1, "", false, false)
	// Chat's fields are not the Responses API's: passed on, not read.
	f(`{"model":"m","max_tokens":0,"n":0,"max_output_tokens":7}`, "m", false, 7, "", false, false)
}

func TestResponsesFieldsRejects(t *testing.T) {
	f := func(body string, want error, wantDetail string) {
		t.Helper()
		var rf Request
		d, err := rf.ParseResponses([]byte(body))
		if err != want || string(d) != wantDetail {
			t.Fatalf("ParseResponses(%s) = %v %q, want %v %q", body, err, d, want, wantDetail)
		}
	}
	f(`{"input":"hi"}`, ErrMissingModel, "")
	f(`{"model":"m","model":"n"}`, ErrDuplicateField, "model")
	f(`{"model":"m","mod\u0065l":"n"}`, ErrDuplicateField, "model")
	f(`{"model":"m","stream":false,"stream":true}`, ErrDuplicateField, "stream")
	f(`{"model":"m","max_output_tokens":1,"max_output_tokens":100000}`, ErrDuplicateField, "max_output_tokens")
	f(`{"model":"m","max_output_tokens":1,"max_output_toke\u006es":100000}`, ErrDuplicateField, "max_output_tokens")
	f(`{"model":"m","previous_response_id":null,"previous_response_id":"resp_1"}`, ErrDuplicateField, "previous_response_id")
	f(`{"model":"m","conversation":null,"conversation":"conv_1"}`, ErrDuplicateField, "conversation")
	f(`{"model":"m","background":false,"background":true}`, ErrDuplicateField, "background")
	f(`{"model":"m","store":false,"store":true}`, ErrDuplicateField, "store")
	f(`{"model":"m","input":"hi","input":[{"type":"item_reference","id":"msg_1"}]}`, ErrDuplicateField, "input")
	f(`{"model":"m","prompt":null,"prompt":{"id":"pmpt_1"}}`, ErrDuplicateField, "prompt")
	f(`{"model":"m","Input":[{"id":"msg_1"}]}`, ErrAmbiguousKey, "input")
	f(`{"model":"m","input":[{"typ\e":"item_reference"}]}`, ErrMalformedJSON, "")
	// Go's encoding/json reads these as the keys they fold to.
	f(`{"model":"m","Max_Output_Tokens":100000}`, ErrAmbiguousKey, "max_output_tokens")
	f(`{"model":"m","Previous_Response_ID":"resp_1"}`, ErrAmbiguousKey, "previous_response_id")
	f(`{"model":"m","Background":true}`, ErrAmbiguousKey, "background")
	f(`{"model":"m","max_output_tokens":0}`, ErrMaxTokens, "0")
	f(`{"model":"m","max_output_tokens":"5"}`, ErrMaxTokens, `"5"`)
	f(`{"model":"m","max_output_tokens":1.5}`, ErrMaxTokens, "1.5")
	f(`{"model":"m","previous_response_id":7}`, ErrPreviousResponseID, "")
}

// A response as OpenAI answers it, and the events of a stream.
const (
	responseBody = `{"id":"resp_abc","object":"response","created_at":1,"status":"completed","model":"m",` +
		`"output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"usage \"id\"","annotations":[]}]}],` +
		`"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":4},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":9},"total_tokens":42}}`
	createdEvent   = `{"type":"response.created","sequence_number":0,"response":{"id":"resp_abc","object":"response","status":"in_progress","usage":null}}`
	deltaEvent     = `{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":" lorem\u00e9","logprobs":[]}`
	argsEvent      = `{"type":"response.function_call_arguments.delta","sequence_number":5,"item_id":"fc_1","output_index":0,"delta":"{\"a\":1}"}`
	textDoneEvent  = `{"type":"response.output_text.done","sequence_number":6,"item_id":"msg_1","output_index":0,"content_index":0,"text":" lorem ipsum"}`
	completedEvent = `{"type":"response.completed","sequence_number":9,"response":{"id":"resp_abc","object":"response","status":"completed",` +
		`"output":[{"type":"message","content":[{"type":"output_text","text":"\"delta\":\"x\""}]}],` +
		`"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":4},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":9},"total_tokens":42}}}`
	incompleteEvent = `{"type":"response.incomplete","sequence_number":9,"response":{"id":"resp_abc","status":"incomplete","usage":{"input_tokens":3,"output_tokens":16}}}`
	failedEvent     = `{"type":"response.failed","sequence_number":9,"response":{"id":"resp_abc","status":"failed","usage":null}}`
	errorEvent      = `{"type":"error","sequence_number":3,"code":"server_error","message":"boom","param":null}`
)

func TestResponseUsage(t *testing.T) {
	f := func(data string, want usd.Tokens, wantOK bool) {
		t.Helper()
		got, ok := ResponseUsage([]byte(data))
		if got != want || ok != wantOK {
			t.Fatalf("ResponseUsage(%s) = %+v %v, want %+v %v", data, got, ok, want, wantOK)
		}
	}
	full := usd.Tokens{Prompt: 12, Completion: 30, Cached: 4}
	f(responseBody, full, true)
	f(completedEvent, full, true)
	f(incompleteEvent, usd.Tokens{Prompt: 3, Completion: 16}, true)
	f(failedEvent, usd.Tokens{}, false)
	f(createdEvent, usd.Tokens{}, false)
	f(`{"usage":{"prompt_tokens":3,"completion_tokens":4}}`, usd.Tokens{}, false) // chat's names are not these
	f(`{"usage":{"input_tokens":-1,"output_tokens":4}}`, usd.Tokens{}, false)
	f(`[DONE]`, usd.Tokens{}, false)
	f(``, usd.Tokens{}, false)
	// A repeated key counts as its last, as the client's SDK reads it.
	f(`{"usage":{"input_tokens":1,"output_tokens":2,"input_tokens":50}}`, usd.Tokens{Prompt: 50, Completion: 2}, true)
}

func TestResponseID(t *testing.T) {
	f := func(data, want string, wantOK bool) {
		t.Helper()
		got, ok := ResponseID([]byte(data))
		if string(got) != want || ok != wantOK {
			t.Fatalf("ResponseID(%s) = %q %v, want %q %v", data, got, ok, want, wantOK)
		}
	}
	f(responseBody, "resp_abc", true)
	f(createdEvent, "resp_abc", true)
	f(completedEvent, "resp_abc", true)
	f(deltaEvent, "", false)
	f(`{"id":"resp_\u0041"}`, "", false)
	f(`{"id":7}`, "", false)
	f(`{"id":""}`, "", false)
	f(`[DONE]`, "", false)
}

func TestResponsesEvents(t *testing.T) {
	f := func(data string, want Event) {
		t.Helper()
		if got := (ResponsesEvents{}).Read([]byte(data)); got != want {
			t.Fatalf("Read(%s) = %+v, want %+v", data, got, want)
		}
	}
	f(createdEvent, Event{Created: true})
	f(deltaEvent, Event{ContentBytes: len(" loremé")})
	f(argsEvent, Event{ContentBytes: len(`{"a":1}`)})
	f(textDoneEvent, Event{})
	f(completedEvent, Event{Done: true, HasUsage: true, Usage: usd.Tokens{Prompt: 12, Completion: 30, Cached: 4}})
	f(incompleteEvent, Event{Done: true, HasUsage: true, Usage: usd.Tokens{Prompt: 3, Completion: 16}})
	f(failedEvent, Event{Done: true})
	f(errorEvent, Event{})
	f(`{"type":"response.output_text.delta","delta":7}`, Event{})
	f(`[DONE]`, Event{})
	f(``, Event{})
}

func TestChatEvents(t *testing.T) {
	f := func(data string, want Event) {
		t.Helper()
		if got := (ChatEvents{}).Read([]byte(data)); got != want {
			t.Fatalf("Read(%s) = %+v, want %+v", data, got, want)
		}
	}
	f(`[DONE]`, Event{Done: true})
	f(`{"choices":[{"index":0,"delta":{"content":"ab"}}],"usage":null}`, Event{ContentBytes: 2})
	f(`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}`,
		Event{HasUsage: true, UsageOnly: true, Usage: usd.Tokens{Prompt: 3, Completion: 4}})
}

// FuzzResponsesFields: what ParseResponses accepts, a Go upstream (the last
// of repeated keys wins, names match case-insensitively) reads the same
// way: the model, at most the max_output_tokens admitted, and no earlier
// response, conversation, stored prompt or item reference the gateway did
// not see.
func FuzzResponsesFields(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","input":"hi","stream":true,"max_output_tokens":20}`,
		`{"model":"m","previous_response_id":"resp_1","input":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","input":[{"type":"item_reference","id":"msg_1"},{"id":"msg_2"}]}`,
		`{"model":"m","max_output_tokens":16,"Max_Output_Tokens":1000}`, `{"model":"m","conversation":{"id":"c"}}`,
		`{"model":"m","input":[{"TYPE":"item_r\u0065ference"}],"prompt":null}`, `{"model":"m","background":1}`,
		`{"model":"m","input":[{"type":null,"content":null,"id":"x"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var rf Request
		if _, err := rf.ParseResponses(body); err != nil {
			return
		}
		var v struct {
			Model              string            `json:"model"`
			MaxOutputTokens    *int64            `json:"max_output_tokens"`
			PreviousResponseID *string           `json:"previous_response_id"`
			Conversation       json.RawMessage   `json:"conversation"`
			Prompt             json.RawMessage   `json:"prompt"`
			Input              []json.RawMessage `json:"input"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return // structural validation lets through what encoding/json refuses
		}
		if v.Model != string(rf.Model) {
			t.Fatalf("model of %q: got %q, encoding/json %q", body, rf.Model, v.Model)
		}
		if v.MaxOutputTokens != nil && (rf.MaxTokens < 0 || *v.MaxOutputTokens > rf.MaxTokens) {
			t.Fatalf("max_output_tokens of %q: got %d, encoding/json %d", body, rf.MaxTokens, *v.MaxOutputTokens)
		}
		chained := v.PreviousResponseID != nil || (len(v.Conversation) > 0 && string(v.Conversation) != "null") ||
			(len(v.Prompt) > 0 && string(v.Prompt) != "null")
		for _, item := range v.Input {
			var it struct {
				Type    *string         `json:"type"`
				Content json.RawMessage `json:"content"`
			}
			if json.Unmarshal(item, &it) == nil && ((it.Type != nil && *it.Type == "item_reference") || (it.Type == nil && it.Content == nil)) {
				chained = true
			}
		}
		if chained && !rf.Chained {
			t.Fatalf("%q chains input the gateway did not see", body)
		}
	})
}
