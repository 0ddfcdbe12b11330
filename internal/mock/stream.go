package mock

import (
	"bufio"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// stream is one streamed answer, prepared while the handler runs (the request
// body is gone once it returns) and written afterwards by fasthttp's body
// stream goroutine, or by a hijacked connection when the stream is to be cut.
type stream struct {
	chat         bool
	prefix       []byte // "data: " and the chunk's head, up to and including `"choices":[`
	suffix       string // closes a chunk and its event
	buf          []byte
	choices      int
	words        int
	finish       string
	includeUsage bool
	promptTokens int
	// billed is the completion tokens the usage chunk reports, cached the
	// prompt tokens it reports as cached.
	billed    int
	cached    int
	latency   time.Duration
	interval  time.Duration
	failAfter int
}

// eventWriter sends one server-sent event on its way at once.
type eventWriter interface {
	writeEvent(p []byte) error
}

// startStream answers r with a server-sent event stream of n words per choice.
func (s *Server) startStream(ctx *fasthttp.RequestCtx, ep endpoint, r *request, set *settings, n int, finish string) {
	st := s.streams.Get().(*stream)
	*st = stream{
		chat:         ep == epChat,
		prefix:       st.prefix[:0],
		buf:          st.buf[:0],
		choices:      r.n * r.prompts,
		words:        n,
		finish:       finish,
		includeUsage: r.includeUsage,
		promptTokens: r.promptTokens,
		billed:       n*r.generated() + s.opts.OverReportTokens,
		cached:       max(s.opts.CachedTokens, 0),
		latency:      set.latency,
		interval:     set.interval,
		failAfter:    set.failAfter,
	}
	object := "text_completion"
	if st.chat {
		object = "chat.completion.chunk"
	}
	st.prefix = append(st.prefix, "data: "...)
	st.prefix = s.appendHead(st.prefix, ep, object, r.model)
	st.prefix = append(st.prefix, `"system_fingerprint":"`+systemFingerprint+`",`...)
	st.prefix = append(st.prefix, `"choices":[`...)
	st.suffix = "]}\n\n"
	if st.includeUsage {
		st.suffix = "],\"usage\":null}\n\n"
	}

	if st.failAfter > 0 {
		// fasthttp always ends a streamed body properly, so a stream that must
		// die mid-body takes over the connection and writes HTTP itself; the
		// server closes the connection when the hijack handler returns.
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) {
			st.run(&chunkedConn{conn: c, head: sseResponseHead})
			s.putStream(st)
		})
		return
	}
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		st.run(flushWriter{w})
		s.putStream(st)
	})
}

func (s *Server) putStream(st *stream) {
	if cap(st.buf) > maxPooledBuffer {
		return
	}
	s.streams.Put(st)
}

// run writes the stream's events. It returns early when the client goes away
// or when the stream is to be cut.
func (st *stream) run(w eventWriter) {
	sleep(st.latency)
	if st.chat {
		// OpenAI opens each choice with the role and empty content.
		for i := range st.choices {
			if !st.event(w, i, `"delta":{"role":"assistant","content":"","refusal":null}`, "", "") {
				return
			}
		}
	}
	for k := range st.words {
		if st.failAfter > 0 && k == st.failAfter {
			return
		}
		if k > 0 {
			sleep(st.interval)
		}
		word := words[k%len(words)]
		for i := range st.choices {
			if !st.event(w, i, "", word, "") {
				return
			}
		}
	}
	if st.failAfter > 0 {
		return
	}
	sleep(st.interval)
	for i := range st.choices {
		if !st.event(w, i, "", "", st.finish) {
			return
		}
	}
	if st.includeUsage {
		b := append(st.buf[:0], st.prefix...)
		b = append(b, `],"usage":`...)
		ep := epCompletions
		if st.chat {
			ep = epChat
		}
		b = appendUsage(b, ep, st.promptTokens, st.cached, st.billed)
		b = append(b, "}\n\n"...)
		st.buf = b
		if w.writeEvent(b) != nil {
			return
		}
	}
	_ = w.writeEvent(doneEvent)
}

var doneEvent = []byte("data: [DONE]\n\n")

// event writes one chunk for choice i. A chat chunk carries delta (or the
// word as delta content, or an empty delta); a legacy chunk carries the word
// as text. finish is the finish_reason, "" for null.
func (st *stream) event(w eventWriter, i int, delta, word, finish string) bool {
	b := append(st.buf[:0], st.prefix...)
	b = append(b, `{`...)
	if st.chat {
		b = append(b, `"index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		switch {
		case delta != "":
			b = append(b, ',')
			b = append(b, delta...)
		case word != "":
			b = append(b, `,"delta":{"content":"`...)
			b = append(b, word...)
			b = append(b, `"}`...)
		default:
			b = append(b, `,"delta":{}`...)
		}
	} else {
		b = append(b, `"text":"`...)
		b = append(b, word...)
		b = append(b, `","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
	}
	b = append(b, `,"logprobs":null,"finish_reason":`...)
	if finish == "" {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = append(b, finish...)
		b = append(b, '"')
	}
	b = append(b, '}')
	b = append(b, st.suffix...)
	st.buf = b
	return w.writeEvent(b) == nil
}

// flushWriter hands each event to fasthttp's stream writer and flushes it, so
// that it reaches the client as soon as it is produced.
type flushWriter struct{ w *bufio.Writer }

func (f flushWriter) writeEvent(p []byte) error {
	if _, err := f.w.Write(p); err != nil {
		return err
	}
	return f.w.Flush()
}

// sseResponseHead is the response head a hijacked stream writes itself.
var sseResponseHead = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")

// chunkedConn writes events as HTTP/1.1 chunks straight to a hijacked
// connection, the response head before the first.
type chunkedConn struct {
	conn  net.Conn
	head  []byte
	frame []byte
}

func (c *chunkedConn) writeEvent(p []byte) error {
	b := append(c.frame[:0], c.head...)
	c.head = nil
	b = strconv.AppendInt(b, int64(len(p)), 16)
	b = append(b, "\r\n"...)
	b = append(b, p...)
	b = append(b, "\r\n"...)
	c.frame = b
	_, err := c.conn.Write(b)
	return err
}
