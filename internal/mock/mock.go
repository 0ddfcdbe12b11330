// Package mock is an OpenAI-compatible fake upstream: chat completions,
// legacy completions and responses (the Responses API; all three buffered
// and streamed as server-sent events), the Responses API's follow-ups on
// stored responses (followups.go), embeddings and the model list, answered from a fixed word list and
// deterministic hashes instead of a model.
//
// It plays two roles. It is the gateway's built-in "mock" model, run in-process
// behind an in-memory listener; and it is the upstream of the benchmark, the
// ceiling a gateway is measured against. So it must be both faithful to
// OpenAI's wire format (the official SDKs parse its answers) and cheap: bodies
// are appended into pooled buffers and requests are read with one scan, never
// decoded, so a buffered answer costs no allocations.
//
// It lives in internal/ because production code (the built-in model) imports
// it, and production code must not import the bench tooling.
//
// Beside the OpenAI API it serves Anthropic's Messages API (POST /v1/messages,
// buffered and streamed, and /v1/messages/count_tokens) with Anthropic's
// checks, error shapes and event sequence; see [AnthropicOptions].
//
// Behaviour is set per server with [Options] and per request with headers:
// X-Mock-Latency and X-Mock-Interval (Go durations), X-Mock-Chunks,
// X-Mock-Status and X-Mock-Fail-After (integers) override the options of the
// same meaning.
package mock

import (
	"bytes"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Defaults for zero [Options] fields.
const (
	DefaultChunks        = 16
	DefaultEmbeddingDims = 1536
)

// Bounds that keep every answer finite whatever a request asks for.
const (
	maxChunks        = 1 << 16
	maxChoices       = 128
	maxEmbeddingDims = 16384
	maxInputs        = 2048
	// maxAnswerWords (choices times words) and maxEmbeddingValues (inputs
	// times dimensions) keep one answer within tens of megabytes: the mock
	// also runs inside the gateway, where any key holder can reach it.
	maxAnswerWords     = 1 << 20
	maxEmbeddingValues = 1 << 22
	maxDelay           = 10 * time.Minute
)

// Options shape the mock's answers. The zero value answers at once with
// [DefaultChunks] words and [DefaultEmbeddingDims]-dimensional embeddings.
type Options struct {
	// Latency is slept before a buffered answer (including a Status error) or
	// before the first event of a stream. It applies to the inference
	// endpoints, not to /v1/models.
	Latency time.Duration
	// Chunks is the number of words in an answer, which is also the number of
	// content chunks of a stream, when the request's max_tokens (or
	// max_completion_tokens) does not bound it lower.
	Chunks int
	// ChunkInterval is the gap before each content chunk of a stream after the
	// first, and before its finishing chunk.
	ChunkInterval time.Duration
	// EmbeddingDims is the length of an embedding when the request does not set
	// dimensions.
	EmbeddingDims int
	// Status, when non-zero, makes every request answer this HTTP status with an
	// OpenAI-shaped error body, for failover and error-path tests.
	Status int
	// FailAfterChunks, when positive, cuts every stream after that many content
	// chunks: the connection is closed in the middle of the chunked body, with
	// no finishing chunk and no [DONE], as when an upstream dies. Buffered
	// answers are not affected.
	FailAfterChunks int
	// OverReportTokens, when positive, is added to the completion tokens every
	// usage reports: an upstream that bills more than the request could
	// produce, which a gateway must bill and notice.
	OverReportTokens int
	// CachedTokens, when positive, is how many of the prompt tokens every
	// usage reports as read from the provider's prompt cache, in
	// prompt_tokens_details.cached_tokens as OpenAI does (part of
	// prompt_tokens, not on top); legacy completions then carry that object
	// too, as vLLM's do. It is reported as set, even past prompt_tokens: an
	// upstream that lies, which a gateway must not bill below the prompt.
	CachedTokens int
	// Anthropic shapes the answers of Anthropic's Messages API.
	Anthropic AnthropicOptions

	// The faults below make the mock a provider having a bad minute, for the
	// gateway's health checking; they apply to the inference endpoints.

	// Hang makes every request read and never answered (a provider that
	// stalls), until Close.
	Hang bool
	// ErrorRate is the fraction of requests, from 0 to 1, answered 500
	// instead, spread evenly: with 0.5 every second one.
	ErrorRate float64
	// RetryAfter, with Status 429 or 503, is sent in the answer's
	// retry-after-ms and retry-after (whole seconds, rounded up) headers.
	RetryAfter time.Duration
}

// Server answers OpenAI API requests. It is safe for concurrent use.
type Server struct {
	opts     Options
	requests atomic.Uint64
	// inferences counts the inference requests, for ErrorRate.
	inferences atomic.Uint64
	// closed releases the requests Hang holds.
	closed    chan struct{}
	closeOnce sync.Once
	ids       atomic.Uint64
	models    []byte // the /v1/models body, fixed at New
	bufs      sync.Pool
	streams   sync.Pool
	// anthropicCalls pools the state of Messages API requests.
	anthropicCalls sync.Pool
	// stored are the responses created with store not false, for the
	// follow-ups (see followups.go); slots are scratch copies of them.
	stored storedRing
	slots  sync.Pool
}

// New returns a Server answering as o says.
func New(o Options) *Server {
	if o.Chunks <= 0 {
		o.Chunks = DefaultChunks
	}
	o.Chunks = min(o.Chunks, maxChunks)
	if o.EmbeddingDims <= 0 {
		o.EmbeddingDims = DefaultEmbeddingDims
	}
	o.EmbeddingDims = min(o.EmbeddingDims, maxEmbeddingDims)
	s := &Server{opts: o, closed: make(chan struct{})}
	s.bufs.New = func() any { return new(buffer) }
	s.streams.New = func() any { return new(stream) }
	s.anthropicCalls.New = func() any { return new(anthropicCall) }
	s.stored.init()
	s.slots.New = func() any { return &storedResponse{buf: make([]byte, 0, storedInitialBytes)} }
	m := append([]byte(nil), `{"object":"list","data":[{"id":"mock","object":"model","created":`...)
	m = strconv.AppendInt(m, time.Now().Unix(), 10)
	s.models = append(m, `,"owned_by":"tokenhub"}]}`...)
	return s
}

// Close answers the requests Hang holds (with a 500: the connection of a
// real stalled provider would be cut) and every later one at once, so the
// server can shut down.
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.closed) }) }

// fault answers the request as the fault options say, reporting whether it
// did.
func (s *Server) fault(ctx *fasthttp.RequestCtx) bool {
	if s.opts.Hang {
		<-s.closed
		writeStatusError(ctx, fasthttp.StatusInternalServerError)
		return true
	}
	if r := s.opts.ErrorRate; r > 0 {
		n := float64(s.inferences.Add(1))
		if int64(n*r) != int64((n-1)*r) {
			writeStatusError(ctx, fasthttp.StatusInternalServerError)
			return true
		}
	}
	return false
}

// Requests returns how many requests the server has received, errors included.
func (s *Server) Requests() uint64 { return s.requests.Load() }

// buffer is the per-request scratch space, pooled so that a steady load
// allocates nothing: b holds the body being built, tmp the raw float32 bytes
// of a base64 embedding.
type buffer struct {
	b, tmp []byte
}

// maxPooledBuffer keeps a rare huge answer (many large embeddings) from being
// held by the pool for ever.
const maxPooledBuffer = 4 << 20

func (s *Server) getBuffer() *buffer { return s.bufs.Get().(*buffer) }

func (s *Server) putBuffer(b *buffer) {
	if cap(b.b) > maxPooledBuffer || cap(b.tmp) > maxPooledBuffer {
		return
	}
	s.bufs.Put(b)
}

// settings are the options in force for one request, after header overrides.
type settings struct {
	latency, interval time.Duration
	chunks            int
	status            int
	failAfter         int
}

// Handler serves one request. Paths carry the /v1 prefix, as upstream base
// URLs end in /v1.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	s.requests.Add(1)
	if isAnthropicPath(ctx.Path()) {
		s.serveAnthropic(ctx)
		return
	}
	var set settings
	if e := s.settings(ctx, &set); e != nil {
		writeError(ctx, e)
		return
	}

	path := ctx.Path()
	ep := endpointOf(path)
	if ep != epModels && ep != epUnknown && s.fault(ctx) {
		return
	}
	if set.status != 0 {
		if ep != epModels {
			sleep(set.latency)
		}
		if d := s.opts.RetryAfter; d > 0 && (set.status == fasthttp.StatusTooManyRequests || set.status == fasthttp.StatusServiceUnavailable) {
			var b [20]byte
			ctx.Response.Header.SetBytesV("Retry-After-Ms", strconv.AppendInt(b[:0], d.Milliseconds(), 10))
			ctx.Response.Header.SetBytesV(fasthttp.HeaderRetryAfter, strconv.AppendInt(b[:0], int64((d+time.Second-1)/time.Second), 10))
		}
		writeStatusError(ctx, set.status)
		return
	}
	switch ep {
	case epUnknown:
		if isFollowUp(path) {
			s.serveFollowUp(ctx)
			return
		}
		writeUnknownURL(ctx, fasthttp.StatusNotFound, ctx.Method(), path)
		return
	case epModels:
		if !ctx.IsGet() {
			writeUnknownURL(ctx, fasthttp.StatusMethodNotAllowed, ctx.Method(), path)
			return
		}
		ctx.SetContentTypeBytes(contentTypeJSON)
		ctx.SetBody(s.models)
		return
	}
	if !ctx.IsPost() {
		writeUnknownURL(ctx, fasthttp.StatusMethodNotAllowed, ctx.Method(), path)
		return
	}

	var r request
	if e := r.parse(ctx.PostBody(), ep, s.opts.EmbeddingDims); e != nil {
		writeError(ctx, e)
		return
	}
	if ep == epEmbeddings {
		sleep(set.latency)
		s.writeEmbeddings(ctx, &r)
		return
	}
	words, finish := set.chunks, finishStop
	if r.maxTokens > 0 && r.maxTokens < words {
		words, finish = r.maxTokens, finishLength
	}
	if words*r.generated() > maxAnswerWords {
		writeError(ctx, errAnswerTooLong)
		return
	}
	if ep == epResponses {
		if r.stream {
			s.startResponseStream(ctx, &r, &set, words, finish)
			return
		}
		sleep(set.latency)
		s.writeResponse(ctx, &r, words, finish)
		return
	}
	if r.stream {
		s.startStream(ctx, ep, &r, &set, words, finish)
		return
	}
	sleep(set.latency)
	s.writeCompletion(ctx, ep, &r, words, finish)
}

// endpoint is one of the paths the mock answers.
type endpoint uint8

const (
	epUnknown endpoint = iota
	epChat
	epCompletions
	epEmbeddings
	epModels
	epResponses
)

func endpointOf(path []byte) endpoint {
	switch string(path) {
	case "/v1/chat/completions":
		return epChat
	case "/v1/completions":
		return epCompletions
	case "/v1/embeddings":
		return epEmbeddings
	case "/v1/models":
		return epModels
	case "/v1/responses":
		return epResponses
	}
	return epUnknown
}

// Override headers, each replacing the [Options] field of the same meaning for
// one request.
const (
	HeaderLatency   = "X-Mock-Latency"
	HeaderChunks    = "X-Mock-Chunks"
	HeaderInterval  = "X-Mock-Interval"
	HeaderStatus    = "X-Mock-Status"
	HeaderFailAfter = "X-Mock-Fail-After"
)

// settings fills set from the options and the request's override headers.
func (s *Server) settings(ctx *fasthttp.RequestCtx, set *settings) *apiError {
	*set = settings{
		latency:   s.opts.Latency,
		interval:  s.opts.ChunkInterval,
		chunks:    s.opts.Chunks,
		status:    s.opts.Status,
		failAfter: s.opts.FailAfterChunks,
	}
	h := &ctx.Request.Header
	if raw := h.RawHeaders(); len(raw) > 0 && !mentionsMock(raw) {
		// Looking the five headers up costs about 100 ns, an eighth of a whole
		// buffered answer; one pass over the raw headers rules them all out.
		return nil
	}
	if v := h.Peek(HeaderLatency); v != nil {
		d, err := time.ParseDuration(string(v))
		if err != nil || d < 0 || d > maxDelay {
			return errBadLatency
		}
		set.latency = d
	}
	if v := h.Peek(HeaderInterval); v != nil {
		d, err := time.ParseDuration(string(v))
		if err != nil || d < 0 || d > maxDelay {
			return errBadInterval
		}
		set.interval = d
	}
	if v := h.Peek(HeaderChunks); v != nil {
		n, err := fasthttp.ParseUint(v)
		if err != nil || n < 1 || n > maxChunks {
			return errBadChunks
		}
		set.chunks = n
	}
	if v := h.Peek(HeaderStatus); v != nil {
		n, err := fasthttp.ParseUint(v)
		if err != nil || (n != 0 && (n < 400 || n > 599)) {
			return errBadStatus
		}
		set.status = n
	}
	if v := h.Peek(HeaderFailAfter); v != nil {
		n, err := fasthttp.ParseUint(v)
		if err != nil || n > maxChunks {
			return errBadFailAfter
		}
		set.failAfter = n
	}
	return nil
}

// mentionsMock reports whether the raw request headers may hold an override
// header: whether "-mock-", in any case, occurs in them.
func mentionsMock(raw []byte) bool {
	for i := 0; ; {
		k := bytes.IndexByte(raw[i:], '-')
		if k < 0 {
			return false
		}
		i += k + 1
		if len(raw)-i >= 5 && raw[i+4] == '-' &&
			raw[i]|0x20 == 'm' && raw[i+1]|0x20 == 'o' && raw[i+2]|0x20 == 'c' && raw[i+3]|0x20 == 'k' {
			return true
		}
	}
}

func sleep(d time.Duration) {
	if d > 0 {
		time.Sleep(d)
	}
}
