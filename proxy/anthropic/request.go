package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"

	"github.com/bytedance/sonic"
	"github.com/bytedance/sonic/decoder"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
)

// Anthropic API versions (the anthropic-version header) whose request
// shapes differ for the translation.
const (
	// Version20230601 takes temperature and top_p.
	Version20230601 = "2023-06-01"
	// Version20261021 refuses temperature, top_p and top_k, even at their
	// defaults. It is what the official SDKs' current majors send.
	Version20261021 = "2026-10-21"
	// DefaultVersion is the version an upstream speaks unless configured.
	DefaultVersion = Version20261021
)

// RequestOptions are what a chat request does not say and a Messages
// request needs: they come from the route.
type RequestOptions struct {
	// Model is the upstream's model name, written as the request's model.
	Model string
	// APIVersion is the anthropic-version the request is sent with
	// (DefaultVersion when empty): it decides whether sampling parameters
	// can be written.
	APIVersion string
	// DefaultMaxTokens is max_tokens when the client gives neither
	// max_completion_tokens nor max_tokens (Anthropic requires one): the
	// model's max_output_tokens. 0 makes such a request an error.
	DefaultMaxTokens int64
}

// RequestInfo is what the translation learnt that the stream translator
// and the accounting need.
type RequestInfo struct {
	// Stream: the client asked for a stream.
	Stream bool
	// IncludeUsage: the client asked for the usage chunk at the end of the
	// stream (stream_options.include_usage).
	IncludeUsage bool
	// MaxTokens is the max_tokens written: what the answer can bill as output.
	MaxTokens int64
}

// FieldError is a chat request's field that cannot be translated or is
// malformed. Param names it as OpenAI's error param does
// ("messages[2].tool_calls[0].function.arguments"); the caller answers 400
// with it. It holds no request content.
type FieldError struct {
	Param  string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Param == "" {
		return "anthropic: " + e.Reason
	}
	return "anthropic: " + e.Param + ": " + e.Reason
}

func fieldErr(param, reason string) error { return &FieldError{Param: param, Reason: reason} }

// strict reads chat bodies as OpenAI's servers do: keys matched exactly
// (encoding/json would take "Role" for "role"), strings checked.
var strict = sonic.Config{CaseSensitive: true, ValidateString: true}.Froze()

// chatRequest is a chat completion request as far as the translation reads
// it. Values whose JSON type varies (content, stop, tool_choice) stay raw.
type chatRequest struct {
	Messages            []chatMessage   `json:"messages"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	Temperature         json.Number     `json:"temperature"`
	TopP                json.Number     `json:"top_p"`
	Stop                json.RawMessage `json:"stop"`
	Stream              *bool           `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage *bool `json:"include_usage"`
	} `json:"stream_options"`
	User              *string         `json:"user"`
	Tools             []chatTool      `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	N                 *int64          `json:"n"`
	Logprobs          *bool           `json:"logprobs"`
	TopLogprobs       *int64          `json:"top_logprobs"`
	PresencePenalty   *float64        `json:"presence_penalty"`
	FrequencyPenalty  *float64        `json:"frequency_penalty"`
	LogitBias         map[string]any  `json:"logit_bias"`
	ResponseFormat    *struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	} `json:"response_format"`
	Modalities []string `json:"modalities"`
}

type chatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCalls  []chatToolCall  `json:"tool_calls"`
	ToolCallID *string         `json:"tool_call_id"`
}

type chatPart struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	Refusal  string `json:"refusal"`
	ImageURL *struct {
		URL string `json:"url"`
	} `json:"image_url"`
}

type chatToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type chatTool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description *string         `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
	} `json:"function"`
}

// topLevel says, for each top-level key of a chat request, whether it is
// translated (true) or dropped (false). A key not listed is refused with a
// FieldError naming it: silently dropping what a client asked for would
// answer another question than the one asked.
//
// Dropped, and why: model (the route's upstream model is written);
// stream_options (read, but Anthropic streams always carry usage); seed
// (best effort at OpenAI, no equivalent); store and metadata (OpenAI's stored
// completions, which the gateway does not offer); service_tier (OpenAI's
// tiers have no Anthropic equivalent; the upstream's default applies).
var topLevel = map[string]bool{
	"model": false, "messages": true, "max_tokens": true, "max_completion_tokens": true,
	"temperature": true, "top_p": true, "stop": true, "stream": true, "stream_options": true,
	"user": true, "tools": true, "tool_choice": true, "parallel_tool_calls": true,
	"n": true, "logprobs": true, "top_logprobs": true, "presence_penalty": true,
	"frequency_penalty": true, "logit_bias": true, "response_format": true, "modalities": true,
	"seed": false, "store": false, "metadata": false, "service_tier": false,
}

// ErrNotObject: the body is not a JSON object.
var ErrNotObject = errors.New("anthropic: the body is not a JSON object")

// ChatToMessages appends to dst the Anthropic Messages request that the chat
// completion request body asks for, and returns it with what the stream
// translation needs. An error is a *FieldError (the client's fault: answer
// 400 with its Param) or ErrNotObject. It runs once per request and
// allocates as a decode does; the per-event work is StreamTranslator's.
//
// Every object of the body is checked for repeated keys, escapes decoded, as
// proxy/openai checks the top level: the gateway, this translation and any
// upstream must read the same request.
func ChatToMessages(dst, body []byte, opts RequestOptions) ([]byte, RequestInfo, error) {
	var info RequestInfo
	if !sonic.Valid(body) {
		return dst, info, fieldErr("", "the body is not valid JSON")
	}
	if !isObject(body) {
		return dst, info, ErrNotObject
	}
	if name, err := checkKeys(body); err != nil {
		return dst, info, keysErr("", name, err)
	}
	if err := checkTopLevel(body); err != nil {
		return dst, info, err
	}
	var req chatRequest
	if err := strict.Unmarshal(body, &req); err != nil {
		return dst, info, fieldErr("", typeErrorField(err))
	}
	if err := req.refuseUntranslatable(); err != nil {
		return dst, info, err
	}
	switch {
	case req.MaxCompletionTokens != nil:
		info.MaxTokens = *req.MaxCompletionTokens
	case req.MaxTokens != nil:
		info.MaxTokens = *req.MaxTokens
	default:
		info.MaxTokens = opts.DefaultMaxTokens
	}
	if info.MaxTokens < 1 {
		return dst, info, fieldErr("max_tokens", "must be a positive integer (Anthropic requires max_tokens, and the model has no default)")
	}
	info.Stream = req.Stream != nil && *req.Stream
	info.IncludeUsage = info.Stream && req.StreamOptions != nil &&
		req.StreamOptions.IncludeUsage != nil && *req.StreamOptions.IncludeUsage

	dst = append(dst, `{"model":`...)
	dst = appendString(dst, opts.Model)
	dst = append(dst, `,"max_tokens":`...)
	dst = appendInt(dst, info.MaxTokens)
	var err error
	if dst, err = appendMessages(dst, req.Messages); err != nil {
		return dst, info, err
	}
	if dst, err = appendSampling(dst, "temperature", req.Temperature, opts.APIVersion); err != nil {
		return dst, info, err
	}
	if dst, err = appendSampling(dst, "top_p", req.TopP, opts.APIVersion); err != nil {
		return dst, info, err
	}
	if dst, err = appendStop(dst, req.Stop); err != nil {
		return dst, info, err
	}
	if info.Stream {
		dst = append(dst, `,"stream":true`...)
	}
	if req.User != nil && *req.User != "" {
		dst = append(dst, `,"metadata":{"user_id":`...)
		dst = appendString(dst, *req.User)
		dst = append(dst, '}')
	}
	if dst, err = appendTools(dst, &req); err != nil {
		return dst, info, err
	}
	if dst, err = appendOutputFormat(dst, &req); err != nil {
		return dst, info, err
	}
	return append(dst, '}'), info, nil
}

// appendSampling writes temperature or top_p (name) when the API version
// takes it. Version 2026-10-21 and later refuse both, even at their
// defaults: the default (1, in both APIs) is dropped, as it asks for what
// the model does anyway; any other value is refused, naming the field,
// since the answer would not be the one asked for. Anthropic's range for
// both is 0 to 1 (OpenAI's temperature goes to 2).
func appendSampling(dst []byte, name string, v json.Number, version string) ([]byte, error) {
	if v == "" {
		return dst, nil
	}
	f, err := v.Float64()
	if err != nil || f < 0 || f > 1 {
		return dst, fieldErr(name, "must be from 0 to 1 for an Anthropic model")
	}
	if version != Version20230601 {
		if f == 1 {
			return dst, nil
		}
		return dst, fieldErr(name, "is not accepted by Anthropic API version "+Version20261021+
			" (an upstream pinned to anthropic-version "+Version20230601+" takes it)")
	}
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return append(dst, v...), nil
}

// checkTopLevel refuses a top-level key this translation does not know.
// body is a valid JSON object whose keys checkKeys has read (their escapes
// are valid), so a walk over its members suffices: no decode.
func checkTopLevel(body []byte) error {
	i := jsonscan.SkipSpace(body, jsonscan.SkipSpace(body, 0)+1)
	var buf []byte
	for i < len(body) && body[i] != '}' {
		keyEnd := jsonscan.SkipString(body, i)
		key := body[i+1 : keyEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			buf, _ = jsonscan.AppendUnescaped(buf[:0], body[i:keyEnd])
			key = buf
		}
		if _, known := topLevel[string(key)]; !known {
			return fieldErr(string(key), "is not supported for an Anthropic model")
		}
		i = jsonscan.SkipSpace(body, keyEnd)
		i = jsonscan.SkipSpace(body, i+1) // the ':'
		i = jsonscan.SkipSpace(body, jsonscan.SkipValue(body, i))
		if i < len(body) && body[i] == ',' {
			i = jsonscan.SkipSpace(body, i+1)
		}
	}
	return nil
}

// keysErr describes a checkKeys failure at param.
func keysErr(param, name string, err error) error {
	if errors.Is(err, errDuplicateKey) {
		return fieldErr(param, "the key "+strconv.Quote(name)+" is repeated in an object")
	}
	return fieldErr(param, err.Error())
}

// typeErrorField returns a short, content-free description of a decode
// error: the decoder's own message quotes the body, which must not reach a
// log line; the expected type does not. (sonic's offset is not where the
// value starts, so it is left out rather than mislead.)
func typeErrorField(err error) string {
	var mismatch *decoder.MismatchTypeError
	if errors.As(err, &mismatch) && mismatch.Type != nil {
		return "a value is not a " + jsonTypeOf(mismatch.Type) + " where the chat completions API takes one"
	}
	return "see the OpenAI chat completions reference"
}

// jsonTypeOf names, in JSON's terms, what a Go type decodes from.
func jsonTypeOf(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64, reflect.Float64:
		return "number"
	case reflect.String:
		if t == reflect.TypeFor[json.Number]() {
			return "number"
		}
		return "string"
	case reflect.Slice:
		return "array"
	}
	return "object"
}

// refuseUntranslatable refuses fields that have no Anthropic equivalent
// when they ask for something (their neutral values pass).
func (r *chatRequest) refuseUntranslatable() error {
	switch {
	case r.N != nil && *r.N != 1:
		return fieldErr("n", "only one choice (n: 1) can be asked of an Anthropic model")
	case r.Logprobs != nil && *r.Logprobs:
		return fieldErr("logprobs", "Anthropic models do not return log probabilities")
	case r.TopLogprobs != nil && *r.TopLogprobs != 0:
		return fieldErr("top_logprobs", "Anthropic models do not return log probabilities")
	case r.PresencePenalty != nil && *r.PresencePenalty != 0:
		return fieldErr("presence_penalty", "Anthropic models have no presence penalty")
	case r.FrequencyPenalty != nil && *r.FrequencyPenalty != 0:
		return fieldErr("frequency_penalty", "Anthropic models have no frequency penalty")
	case len(r.LogitBias) != 0:
		return fieldErr("logit_bias", "Anthropic models take no logit bias")
	case r.ResponseFormat != nil && r.ResponseFormat.Type != "" && r.ResponseFormat.Type != "text" && r.ResponseFormat.Type != "json_schema":
		// json_object asks for JSON without a schema: Anthropic's
		// structured outputs need one.
		return fieldErr("response_format", "only text and json_schema formats are translated for an Anthropic model")
	case r.MaxTokens != nil && *r.MaxTokens < 1:
		return fieldErr("max_tokens", "must be a positive integer")
	case r.MaxCompletionTokens != nil && *r.MaxCompletionTokens < 1:
		return fieldErr("max_completion_tokens", "must be a positive integer")
	}
	for _, m := range r.Modalities {
		if m != "text" {
			return fieldErr("modalities", "Anthropic models answer in text only")
		}
	}
	return nil
}

// turn writes messages, merging consecutive ones of a role into one, as
// Anthropic requires alternating turns (tool results are a user turn).
type turn struct {
	dst  []byte
	role string // "" before the first message
}

func (t *turn) open(role string) {
	if t.role == role {
		t.dst = append(t.dst, ',')
		return
	}
	if t.role != "" {
		t.dst = append(t.dst, "]},"...)
	}
	t.role = role
	t.dst = append(t.dst, `{"role":"`...)
	t.dst = append(t.dst, role...)
	t.dst = append(t.dst, `","content":[`...)
}

// appendMessages writes "messages" and, when there are system or developer
// messages, "system". All system and developer messages become the
// top-level system prompt, in order, wherever they stood: Anthropic has no
// system turn.
func appendMessages(dst []byte, msgs []chatMessage) ([]byte, error) {
	if len(msgs) == 0 {
		return dst, fieldErr("messages", "at least one message is required")
	}
	var system []byte
	dst = append(dst, `,"messages":[`...)
	t := turn{dst: dst}
	for i := range msgs {
		m := &msgs[i]
		param := "messages[" + strconv.Itoa(i) + "]"
		var err error
		switch m.Role {
		case "system", "developer":
			if system, err = appendTextBlocks(system, m.Content, param, len(system) > 0); err != nil {
				return t.dst, err
			}
		case "user":
			if isEmpty(m.Content) {
				return t.dst, fieldErr(param+".content", "a user message needs content")
			}
			t.open("user")
			if t.dst, err = appendUserContent(t.dst, m.Content, param); err != nil {
				return t.dst, err
			}
		case "assistant":
			if t.dst, err = appendAssistant(&t, m, param); err != nil {
				return t.dst, err
			}
		case "tool":
			if m.ToolCallID == nil || *m.ToolCallID == "" {
				return t.dst, fieldErr(param+".tool_call_id", "a tool message needs the id of its call")
			}
			t.open("user")
			t.dst = append(t.dst, `{"type":"tool_result","tool_use_id":`...)
			t.dst = appendString(t.dst, *m.ToolCallID)
			if !isEmpty(m.Content) {
				t.dst = append(t.dst, `,"content":[`...)
				if t.dst, err = appendTextBlocks(t.dst, m.Content, param, false); err != nil {
					return t.dst, err
				}
				t.dst = append(t.dst, ']')
			}
			t.dst = append(t.dst, '}')
		default:
			return t.dst, fieldErr(param+".role", "must be system, developer, user, assistant or tool for an Anthropic model")
		}
	}
	dst = t.dst
	if t.role == "" {
		return dst, fieldErr("messages", "a user or assistant message is required besides system messages")
	}
	dst = append(dst, "]}]"...)
	if len(system) > 0 {
		dst = append(dst, `,"system":[`...)
		dst = append(dst, system...)
		dst = append(dst, ']')
	}
	return dst, nil
}

// isEmpty reports whether a raw value is absent, null, "" or [].
func isEmpty(raw json.RawMessage) bool {
	v := bytes.TrimSpace(raw)
	return len(v) == 0 || string(v) == "null" || string(v) == `""` || string(v) == "[]"
}

// appendTextBlocks appends the text of content (a string or an array of text
// parts) as text blocks, after a comma when comma. Empty texts are left out:
// Anthropic refuses empty text blocks.
func appendTextBlocks(dst []byte, content json.RawMessage, param string, comma bool) ([]byte, error) {
	texts, err := textParts(content, param)
	if err != nil {
		return dst, err
	}
	for _, s := range texts {
		if s == "" {
			continue
		}
		if comma {
			dst = append(dst, ',')
		}
		comma = true
		dst = appendTextBlock(dst, s)
	}
	return dst, nil
}

func appendTextBlock(dst []byte, s string) []byte {
	dst = append(dst, `{"type":"text","text":`...)
	dst = appendString(dst, s)
	return append(dst, '}')
}

// textParts reads content that may hold text only: a string, or an array of
// text (or, from an assistant, refusal) parts.
func textParts(content json.RawMessage, param string) ([]string, error) {
	v := bytes.TrimSpace(content)
	if len(v) == 0 || string(v) == "null" {
		return nil, nil
	}
	if v[0] == '"' {
		var s string
		if err := strict.Unmarshal(v, &s); err != nil {
			return nil, fieldErr(param+".content", "is not a string or an array of parts")
		}
		return []string{s}, nil
	}
	var parts []chatPart
	if err := strict.Unmarshal(v, &parts); err != nil {
		return nil, fieldErr(param+".content", "is not a string or an array of parts")
	}
	texts := make([]string, 0, len(parts))
	for j, p := range parts {
		switch p.Type {
		case "text":
			texts = append(texts, p.Text)
		case "refusal":
			texts = append(texts, p.Refusal)
		default:
			return nil, fieldErr(param+".content["+strconv.Itoa(j)+"].type", "only text parts are translated here")
		}
	}
	return texts, nil
}

// appendUserContent appends a user message's content: text and image parts.
func appendUserContent(dst []byte, content json.RawMessage, param string) ([]byte, error) {
	v := bytes.TrimSpace(content)
	if v[0] == '"' {
		return appendTextBlocks(dst, v, param, false)
	}
	var parts []chatPart
	if err := strict.Unmarshal(v, &parts); err != nil {
		return dst, fieldErr(param+".content", "is not a string or an array of parts")
	}
	comma := false
	for j, p := range parts {
		pparam := param + ".content[" + strconv.Itoa(j) + "]"
		switch p.Type {
		case "text":
			if p.Text == "" {
				continue
			}
			if comma {
				dst = append(dst, ',')
			}
			dst = appendTextBlock(dst, p.Text)
		case "image_url":
			if p.ImageURL == nil {
				return dst, fieldErr(pparam+".image_url", "is required")
			}
			if comma {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendImage(dst, p.ImageURL.URL, pparam+".image_url.url"); err != nil {
				return dst, err
			}
		default:
			return dst, fieldErr(pparam+".type", "only text and image_url parts are translated for an Anthropic model")
		}
		comma = true
	}
	if !comma {
		return dst, fieldErr(param+".content", "a user message needs content")
	}
	return dst, nil
}

// imageTypes are the media types Anthropic takes in a base64 image source.
var imageTypes = [...]string{"image/jpeg", "image/png", "image/gif", "image/webp"}

// appendImage appends an image block for an OpenAI image URL: a data: URL
// becomes a base64 source, an http(s) URL a url source.
func appendImage(dst []byte, url, param string) ([]byte, error) {
	if strings.HasPrefix(url, "https://") || strings.HasPrefix(url, "http://") {
		dst = append(dst, `{"type":"image","source":{"type":"url","url":`...)
		dst = appendString(dst, url)
		return append(dst, "}}"...), nil
	}
	rest, ok := strings.CutPrefix(url, "data:")
	if !ok {
		return dst, fieldErr(param, "must be an http(s) or data: URL")
	}
	mediaType, data, ok := strings.Cut(rest, ";base64,")
	if !ok {
		return dst, fieldErr(param, "a data: URL must be base64")
	}
	known := false
	for _, t := range imageTypes {
		known = known || mediaType == t
	}
	if !known {
		return dst, fieldErr(param, "the image must be JPEG, PNG, GIF or WebP")
	}
	dst = append(dst, `{"type":"image","source":{"type":"base64","media_type":`...)
	dst = appendString(dst, mediaType)
	dst = append(dst, `,"data":`...)
	dst = appendString(dst, data)
	return append(dst, "}}"...), nil
}

// appendAssistant appends an assistant message: its text, then its tool
// calls as tool_use blocks, whose input is the call's arguments, which must
// be a JSON object.
func appendAssistant(t *turn, m *chatMessage, param string) ([]byte, error) {
	texts, err := textParts(m.Content, param)
	if err != nil {
		return t.dst, err
	}
	wrote := false
	for _, s := range texts {
		if s == "" {
			continue
		}
		t.open("assistant")
		t.dst = appendTextBlock(t.dst, s)
		wrote = true
	}
	for j := range m.ToolCalls {
		c := &m.ToolCalls[j]
		cparam := param + ".tool_calls[" + strconv.Itoa(j) + "]"
		if c.Type != "" && c.Type != "function" {
			return t.dst, fieldErr(cparam+".type", "only function tool calls are translated")
		}
		if c.ID == "" || c.Function.Name == "" {
			return t.dst, fieldErr(cparam, "a tool call needs an id and a function name")
		}
		args := bytes.TrimSpace([]byte(c.Function.Arguments))
		if len(args) == 0 {
			args = []byte("{}") // a call without arguments, as some models write it
		}
		if !sonic.Valid(args) || args[0] != '{' {
			return t.dst, fieldErr(cparam+".function.arguments", "must be a JSON object")
		}
		if name, err := checkKeys(args); err != nil {
			return t.dst, keysErr(cparam+".function.arguments", name, err)
		}
		t.open("assistant")
		t.dst = append(t.dst, `{"type":"tool_use","id":`...)
		t.dst = appendString(t.dst, c.ID)
		t.dst = append(t.dst, `,"name":`...)
		t.dst = appendString(t.dst, c.Function.Name)
		t.dst = append(t.dst, `,"input":`...)
		t.dst = append(t.dst, args...)
		t.dst = append(t.dst, '}')
		wrote = true
	}
	if !wrote {
		return t.dst, fieldErr(param+".content", "an assistant message needs content or tool calls")
	}
	return t.dst, nil
}

// appendStop appends stop_sequences from stop: a string or an array of them.
func appendStop(dst []byte, stop json.RawMessage) ([]byte, error) {
	v := bytes.TrimSpace(stop)
	if len(v) == 0 || string(v) == "null" {
		return dst, nil
	}
	var seqs []string
	if v[0] == '"' {
		var s string
		if err := strict.Unmarshal(v, &s); err != nil {
			return dst, fieldErr("stop", "must be a string or an array of strings")
		}
		seqs = []string{s}
	} else if err := strict.Unmarshal(v, &seqs); err != nil {
		return dst, fieldErr("stop", "must be a string or an array of strings")
	}
	if len(seqs) == 0 {
		return dst, nil
	}
	dst = append(dst, `,"stop_sequences":[`...)
	for i, s := range seqs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']'), nil
}

// appendTools appends tools and tool_choice. Without tools, tool_choice
// is left out: Anthropic takes none without tools, and "none" means
// the same as no tools.
func appendTools(dst []byte, r *chatRequest) ([]byte, error) {
	if len(r.Tools) == 0 {
		return dst, nil
	}
	dst = append(dst, `,"tools":[`...)
	for i := range r.Tools {
		tl := &r.Tools[i]
		param := "tools[" + strconv.Itoa(i) + "]"
		if tl.Type != "function" {
			return dst, fieldErr(param+".type", "only function tools are translated for an Anthropic model")
		}
		if tl.Function.Name == "" {
			return dst, fieldErr(param+".function.name", "is required")
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = appendString(dst, tl.Function.Name)
		if d := tl.Function.Description; d != nil && *d != "" {
			dst = append(dst, `,"description":`...)
			dst = appendString(dst, *d)
		}
		dst = append(dst, `,"input_schema":`...)
		schema := bytes.TrimSpace(tl.Function.Parameters)
		switch {
		case len(schema) == 0 || string(schema) == "null":
			// OpenAI takes a function without parameters; Anthropic needs
			// an object schema.
			dst = append(dst, `{"type":"object","properties":{}}`...)
		case schema[0] == '{':
			dst = append(dst, schema...)
		default:
			return dst, fieldErr(param+".function.parameters", "must be a JSON schema object")
		}
		dst = append(dst, '}')
	}
	dst = append(dst, ']')
	return appendToolChoice(dst, r)
}

// appendToolChoice maps tool_choice (auto, none, required, or a named
// function) to auto, none, any, or tool; parallel_tool_calls: false becomes
// disable_parallel_tool_use.
func appendToolChoice(dst []byte, r *chatRequest) ([]byte, error) {
	v := bytes.TrimSpace(r.ToolChoice)
	serial := r.ParallelToolCalls != nil && !*r.ParallelToolCalls
	choice, name := "auto", ""
	switch {
	case len(v) == 0 || string(v) == "null":
		if !serial {
			return dst, nil
		}
	case v[0] == '"':
		var s string
		_ = strict.Unmarshal(v, &s)
		switch s {
		case "auto":
		case "none":
			choice = "none"
		case "required":
			choice = "any"
		default:
			return dst, fieldErr("tool_choice", "must be auto, none, required or a named function")
		}
	default:
		var named struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if err := strict.Unmarshal(v, &named); err != nil || named.Type != "function" || named.Function.Name == "" {
			return dst, fieldErr("tool_choice", "must be auto, none, required or a named function")
		}
		choice, name = "tool", named.Function.Name
	}
	dst = append(dst, `,"tool_choice":{"type":"`...)
	dst = append(dst, choice...)
	dst = append(dst, '"')
	if name != "" {
		dst = append(dst, `,"name":`...)
		dst = appendString(dst, name)
	}
	if serial && choice != "none" {
		dst = append(dst, `,"disable_parallel_tool_use":true`...)
	}
	return append(dst, '}'), nil
}

// appendOutputFormat maps response_format json_schema to Anthropic's
// structured outputs, output_config.format. The schema is passed as given:
// Anthropic takes a subset of JSON Schema and answers 400 to the rest. The
// schema's name and strict have no counterpart (Anthropic's format is
// always strict).
func appendOutputFormat(dst []byte, r *chatRequest) ([]byte, error) {
	if r.ResponseFormat == nil || r.ResponseFormat.Type != "json_schema" {
		return dst, nil
	}
	var schema []byte
	if js := r.ResponseFormat.JSONSchema; js != nil {
		schema = bytes.TrimSpace(js.Schema)
	}
	if len(schema) == 0 || schema[0] != '{' {
		return dst, fieldErr("response_format.json_schema.schema", "must be a JSON schema object")
	}
	dst = append(dst, `,"output_config":{"format":{"type":"json_schema","schema":`...)
	dst = append(dst, schema...)
	return append(dst, "}}"...), nil
}
