package mock

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// words is the text the mock "generates": word i of an answer is
// words[i%len(words)], one word per token, each with its leading space as a
// tokenizer would emit it. None needs JSON escaping.
var words = [...]string{
	" lorem", " ipsum", " dolor", " sit", " amet", " consectetur", " adipiscing", " elit",
	" sed", " do", " eiusmod", " tempor", " incididunt", " ut", " labore", " et",
	" dolore", " magna", " aliqua", " enim", " ad", " minim", " veniam", " quis",
	" nostrud", " exercitation", " ullamco", " laboris", " nisi", " aliquip", " ex", " ea",
}

// Text returns the answer the mock gives when it generates n words: what a
// client should see as the content of every choice.
func Text(n int) string {
	return string(appendWords(nil, n))
}

func appendWords(b []byte, n int) []byte {
	for i := range n {
		b = append(b, words[i%len(words)]...)
	}
	return b
}

// Finish reasons.
const (
	finishStop   = "stop"
	finishLength = "length"
)

const systemFingerprint = "fp_mock"

// appendHead appends the fields every answer and chunk starts with:
// {"id":...,"object":...,"created":...,"model":...,
func (s *Server) appendHead(b []byte, ep endpoint, object string, model []byte) []byte {
	b = append(b, `{"id":"`...)
	if ep == epChat {
		b = append(b, "chatcmpl-mock"...)
	} else {
		b = append(b, "cmpl-mock"...)
	}
	seq := s.ids.Add(1)
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[(seq>>uint(shift))&0xf])
	}
	b = append(b, `","object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = strconv.AppendInt(b, time.Now().Unix(), 10)
	b = append(b, `,"model":`...)
	b = append(b, model...)
	return append(b, ',')
}

// appendUsage appends a usage object. Chat answers carry the token-detail
// objects OpenAI sends; legacy completions do not, unless some prompt
// tokens are cached.
func appendUsage(b []byte, ep endpoint, prompt, cached, completion int) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	if ep == epChat || cached > 0 {
		b = append(b, `,"prompt_tokens_details":{"cached_tokens":`...)
		b = strconv.AppendInt(b, int64(cached), 10)
		b = append(b, `,"audio_tokens":0}`...)
	}
	if ep == epChat {
		b = append(b, `,"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}`...)
	}
	return append(b, '}')
}

// writeCompletion answers a buffered chat or legacy completion of n words per choice.
func (s *Server) writeCompletion(ctx *fasthttp.RequestCtx, ep endpoint, r *request, n int, finish string) {
	buf := s.getBuffer()
	b := buf.b[:0]
	choices := r.n * r.prompts
	if ep == epChat {
		b = s.appendHead(b, ep, "chat.completion", r.model)
		b = append(b, `"choices":[`...)
		for i := range choices {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"index":`...)
			b = strconv.AppendInt(b, int64(i), 10)
			b = append(b, `,"message":{"role":"assistant","content":"`...)
			b = appendWords(b, n)
			b = append(b, `","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"`...)
			b = append(b, finish...)
			b = append(b, `"}`...)
		}
	} else {
		b = s.appendHead(b, ep, "text_completion", r.model)
		b = append(b, `"choices":[`...)
		for i := range choices {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"text":"`...)
			b = appendWords(b, n)
			b = append(b, `","index":`...)
			b = strconv.AppendInt(b, int64(i), 10)
			b = append(b, `,"logprobs":null,"finish_reason":"`...)
			b = append(b, finish...)
			b = append(b, `"}`...)
		}
	}
	b = append(b, `],"usage":`...)
	b = appendUsage(b, ep, r.promptTokens, max(s.opts.CachedTokens, 0), n*r.generated()+s.opts.OverReportTokens)
	b = append(b, `,"system_fingerprint":"`+systemFingerprint+`"}`...)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(b)
	buf.b = b
	s.putBuffer(buf)
}
