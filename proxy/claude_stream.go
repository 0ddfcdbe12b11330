package proxy

import (
	"bytes"
	"sync"

	"github.com/tokenhub/tokenhub/proxy/anthropic"
	"github.com/tokenhub/tokenhub/proxy/openai"
	"github.com/tokenhub/tokenhub/sse"
)

// claudeStream is what a relay translating a Messages stream into a chat
// completion stream holds: the translator and the buffer it writes into,
// pooled, so that a translated stream allocates nothing per event.
type claudeStream struct {
	t   anthropic.StreamTranslator
	out []byte
	// outputFinal: message_delta came, whose output count is the answer's
	// (cumulative, as Anthropic sends it); before it the count is
	// message_start's, which says only that the answer began.
	outputFinal bool
}

var claudeStreams = sync.Pool{New: func() any { return new(claudeStream) }}

// maxPooledTranslation bounds the buffer a pooled claudeStream keeps: an
// event rarely translates to more than a few KiB, and one huge event must
// not pin its buffer in the pool.
const maxPooledTranslation = 64 << 10

var eventMessageDelta = []byte("message_delta")

// translateClaude makes the relay translate the upstream's Messages
// events into chat.completion.chunk events for a client that asked for
// model, at created (Unix seconds); includeUsage: the client asked for the
// usage chunk.
func (r *streamRelay) translateClaude(model string, created int64, includeUsage bool) {
	cs := claudeStreams.Get().(*claudeStream)
	cs.t.Reset(model, created, includeUsage)
	cs.out, cs.outputFinal = cs.out[:0], false
	r.claude = cs
}

// releaseClaude gives the translator back once the stream is over.
func (r *streamRelay) releaseClaude() {
	cs := r.claude
	if cs == nil {
		return
	}
	r.claude = nil
	if cap(cs.out) <= maxPooledTranslation {
		claudeStreams.Put(cs)
	}
}

// passClaude relays one upstream event of a translated stream: what the
// translator makes of it is what the client gets. Its usage is noted as it
// comes (input and cache counts from message_start, the output count from
// message_delta; until then the output is estimated from the text relayed,
// as a chat stream's is), each chunk with text is held against the budget
// before it is written, and the stream is billed before the write that
// ends it ([DONE], or the error event an Anthropic error becomes).
func (r *streamRelay) passClaude(ev sse.Event) *apiError {
	cs := r.claude
	if !ev.HasData || cs.t.Done() {
		return nil // a comment, a keep-alive, or past the end: nothing a chat client reads
	}
	out := cs.t.Translate(cs.out[:0], ev.Name, ev.Data)
	cs.out = out[:0]
	if bytes.Equal(ev.Name, eventMessageDelta) || cs.t.FinishReason() != "" {
		cs.outputFinal = true
	}
	for rest := out; len(rest) > 0; {
		var data []byte
		data, rest = nextChatEvent(rest)
		n := openai.ContentBytes(data)
		if n == 0 {
			continue
		}
		r.contentEvents++
		r.contentBytes += int64(n)
		r.noteClaudeUsage()
		if !r.covered() {
			// Not relayed, so not billed.
			r.contentEvents--
			r.contentBytes -= int64(n)
			r.noteClaudeUsage()
			return errStreamBudget
		}
	}
	r.noteClaudeUsage()
	if cs.t.Done() {
		r.settle()
	}
	r.emit(out)
	return nil
}

// noteClaudeUsage sets the stream's usage from the translator's, once
// message_start has reported one: the input counts exact, the output
// message_delta's count or, before it, the larger of message_start's and
// the estimate from the text relayed (a stream cut before message_delta is
// billed what it produced, not the one token message_start reports).
func (r *streamRelay) noteClaudeUsage() {
	cs := r.claude
	u := cs.t.Usage()
	if u == (anthropic.Usage{}) && !cs.outputFinal {
		return
	}
	r.used, r.usageKnown = claudeTokens(u), true
	if !cs.outputFinal {
		r.used.Completion = max(u.OutputTokens, r.estimatedOutput())
	}
}

var dataPrefix = []byte("data: ")

// nextChatEvent splits the first event off b, the translator's output
// ("data: ...\n\n" events back to back): its data, and the rest.
func nextChatEvent(b []byte) (data, rest []byte) {
	end := bytes.Index(b, []byte("\n\n"))
	if end < 0 {
		end = len(b)
		rest = b[end:]
	} else {
		rest = b[end+2:]
	}
	return bytes.TrimPrefix(b[:end], dataPrefix), rest
}
