// Package sse reads the Server-Sent Events streams that upstreams answer
// streamed completions with, so the gateway can act per event while it relays
// the bytes untouched.
//
// A Scanner splits a stream into events however its bytes were cut by the
// network, keeping each event's exact bytes (Event.Raw) beside its parsed
// fields: relaying every Raw reproduces the stream byte for byte, and leaving
// one out (an injected usage chunk) or adding one at a boundary (an error
// event) yields a stream that is still well formed. It allocates nothing per
// event once its buffers have grown, and bounds an event's size so a stream
// without blank lines is an error rather than unbounded memory.
//
// It knows nothing of what the data means: reading an OpenAI chunk is
// proxy/openai's.
package sse
