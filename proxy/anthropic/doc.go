// Package anthropic reads, writes and translates Anthropic's Messages wire
// format as bytes: a chat completion request into a Messages request
// (ChatToMessages), a Messages answer into a chat completion
// (MessageToChat), a Messages stream into a chat.completion.chunk stream
// (StreamTranslator), the usage of native bodies and events for
// pass-through billing (BodyUsage, EventUsage), and errors both ways
// (ErrorToOpenAI, ErrorFromOpenAI, AppendError, AppendErrorEvent,
// FailsOver).
//
// # Integration
//
// For /v1/chat/completions to a model on an anthropic upstream, the server:
//
//  1. after proxy/openai's Request.Parse (which owns model, the whitelist
//     and the bounds), calls ChatToMessages(buf, body, RequestOptions{Model:
//     upstreamModel, DefaultMaxTokens: maxOutputTokens, APIVersion: the
//     upstream's anthropic-version}); a *FieldError is a 400 with its
//     Param; RequestInfo.MaxTokens is the output bound;
//  2. sends the result to <base_url>/messages (x-api-key,
//     anthropic-version);
//  3. on a 2xx non-stream answer, MessageToChat(buf, body,
//     ResponseOptions{Model: alias, Created: now}) gives the client's body
//     and the Usage to bill; on an error answer, ErrorToOpenAI(buf, status,
//     body) with the same status, and FailsOver(status) says whether to try
//     the next upstream (529 does);
//  4. on a stream, per upstream event from sse.Scanner: out =
//     t.Translate(out, ev.Name, ev.Data), flushed to the client; t.Usage()
//     at any point is what was produced (bill it on a disconnect or cut);
//     t.Done() says the stream ended. StreamTranslators are pooled and
//     Reset(alias, now, info.IncludeUsage) per stream.
//
// For /v1/messages to anthropic upstreams, bodies and events pass through:
// BodyUsage bills a buffered answer, EventUsage (message_start,
// message_delta) feeds Usage.Update for a stream, and errors the gateway
// makes itself are written with AppendError / AppendErrorEvent and
// ErrorType(status), or converted from the gateway's OpenAI-shaped body with
// ErrorFromOpenAI.
//
// # Translation rules
//
// Refused with a FieldError naming the field: n other than 1; logprobs
// true; top_logprobs; non-zero presence_penalty or frequency_penalty;
// a non-empty logit_bias; response_format json_object (Anthropic's
// structured outputs need a schema; json_schema maps to
// output_config.format); modalities other than
// text; temperature or top_p above 1 (Anthropic's range is 0 to 1), or, for
// an upstream on API version 2026-10-21 (DefaultVersion, which refuses
// sampling parameters), any value but their default 1, which is dropped
// (RequestOptions.APIVersion = Version20230601 writes them); parts other than
// text and image_url (audio, files); non-function tools; and any top-level
// field not listed in topLevel (reasoning_effort, audio, prediction,
// web_search_options, functions...), since dropping what a client asked for
// would answer another question. Dropped on purpose: seed, store, metadata,
// service_tier, stream_options (Anthropic streams always carry usage).
// Thinking blocks in answers are dropped: the translated request never
// asks for thinking.
//
// Every object of a chat body is checked for repeated keys (escapes
// decoded), and keys match exactly, as the upstreams read them: the
// gateway's reading and the translation's must be the one every parser has.
//
// # Cost
//
// The request and buffered-answer translations run once per request and
// allocate as a decode does. The per-event functions (StreamTranslator,
// EventUsage, BodyUsage) are targeted sonic lookups and appends to the
// caller's buffer, with no allocation in steady state (the TestAllocs*
// tests).
//
// It must not import fasthttp, keys or limits, nor anything of proxy.
package anthropic
