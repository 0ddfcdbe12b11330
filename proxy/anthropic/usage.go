package anthropic

import (
	"github.com/bytedance/sonic"
	"github.com/bytedance/sonic/ast"
)

// Usage is what an Anthropic answer bills, in Anthropic's four counts.
// InputTokens excludes the cache's: the prompt is their sum.
type Usage struct {
	InputTokens              int64 `json:"input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
}

// maxCount bounds a count read from an upstream (15 digits, as parseCount
// reads): sums of four stay far from overflow.
const maxCount = 999_999_999_999_999

// PromptTokens is the chat prompt_tokens: input, cache reads and cache
// writes, all of which the model read.
func (u Usage) PromptTokens() int64 {
	return u.InputTokens + u.CacheReadInputTokens + u.CacheCreationInputTokens
}

// clamped is u with every count in [0, maxCount]: a decoded body may say
// anything, and a negative count would refund.
func (u Usage) clamped() Usage {
	c := func(v int64) int64 { return min(max(v, 0), maxCount) }
	return Usage{c(u.InputTokens), c(u.CacheReadInputTokens), c(u.CacheCreationInputTokens), c(u.OutputTokens)}
}

// appendChat appends the chat usage member, "usage":{...}.
func (u Usage) appendChat(dst []byte) []byte {
	dst = append(dst, `"usage":{"prompt_tokens":`...)
	dst = appendInt(dst, u.PromptTokens())
	dst = append(dst, `,"completion_tokens":`...)
	dst = appendInt(dst, u.OutputTokens)
	dst = append(dst, `,"total_tokens":`...)
	dst = appendInt(dst, u.PromptTokens()+u.OutputTokens)
	dst = append(dst, `,"prompt_tokens_details":{"cached_tokens":`...)
	dst = appendInt(dst, u.CacheReadInputTokens)
	return append(dst, "}}"...)
}

// UsageFields says which counts a usage object held.
type UsageFields uint8

// The counts of a usage object.
const (
	HasInput UsageFields = 1 << iota
	HasCacheRead
	HasCacheCreation
	HasOutput
)

// Update sets the counts of u that has says from v: message_delta's usage
// is cumulative, so a later count replaces an earlier one.
func (u *Usage) Update(v Usage, has UsageFields) {
	if has&HasInput != 0 {
		u.InputTokens = v.InputTokens
	}
	if has&HasCacheRead != 0 {
		u.CacheReadInputTokens = v.CacheReadInputTokens
	}
	if has&HasCacheCreation != 0 {
		u.CacheCreationInputTokens = v.CacheCreationInputTokens
	}
	if has&HasOutput != 0 {
		u.OutputTokens = v.OutputTokens
	}
}

// BodyUsage reads the usage of a whole Messages response body (for
// /v1/messages pass-through billing). ok is false without a usage object.
// A count that is absent, null or not a non-negative integer reads as 0
// and is not in has. It allocates nothing.
func BodyUsage(body []byte) (u Usage, has UsageFields, ok bool) {
	if !isObject(body) || !sonic.Valid(body) {
		return Usage{}, 0, false
	}
	n := nodes.Get().(*ast.Node)
	defer release(n)
	return readUsage(n, b2s(body), "usage")
}

// EventUsage reads the usage an event of a Messages stream carries: a
// message_start's message.usage (the input counts, and an output count of
// a token or so) or a message_delta's usage (the cumulative output count,
// and, from recent API versions, the input counts again). ok is false for
// any other event. data is the event's data; it allocates nothing.
func EventUsage(data []byte) (u Usage, has UsageFields, ok bool) {
	if !isObject(data) || !sonic.Valid(data) {
		return Usage{}, 0, false
	}
	n := nodes.Get().(*ast.Node)
	defer release(n)
	js := b2s(data)
	typ, _ := find(n, js, "type")
	switch typ {
	case `"message_start"`:
		return readUsage(n, js, "message", "usage")
	case `"message_delta"`:
		return readUsage(n, js, "usage")
	}
	return Usage{}, 0, false
}

// readUsage reads the usage object at path in js.
func readUsage(n *ast.Node, js string, path ...any) (u Usage, has UsageFields, ok bool) {
	obj, t := find(n, js, path...)
	if t != ast.V_OBJECT {
		return Usage{}, 0, false
	}
	var v int64
	if v, ok = count(n, obj, "input_tokens"); ok {
		u.InputTokens, has = v, has|HasInput
	}
	if v, ok = count(n, obj, "cache_read_input_tokens"); ok {
		u.CacheReadInputTokens, has = v, has|HasCacheRead
	}
	if v, ok = count(n, obj, "cache_creation_input_tokens"); ok {
		u.CacheCreationInputTokens, has = v, has|HasCacheCreation
	}
	if v, ok = count(n, obj, "output_tokens"); ok {
		u.OutputTokens, has = v, has|HasOutput
	}
	return u, has, true
}
