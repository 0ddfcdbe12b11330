// Package openai reads and edits the OpenAI wire format as bytes: the
// top-level fields of an inference request the gateway acts on (Request),
// the edits it makes to a body before forwarding it (ModelEdit, UsageEdit,
// AppendEdits), the arithmetic that bounds what a request can make the
// upstream produce and bill (EstimatePrompt, BoundPrompt,
// Request.Completions, Request.OutputBound), and the fields of answers that
// accounting needs: usage in a whole body (Usage) and in a streamed chunk
// (ChunkUsage, IsUsageOnlyChunk), generated text (ContentBytes), and error
// objects (HasError).
//
// Every reader is a targeted lookup over the bytes, never a decode of the
// whole body, and allocates nothing in steady state (the TestAllocs* tests):
// it runs once per request or per streamed event.
//
// It must not import fasthttp, keys or limits, nor anything of proxy: it
// takes bytes and returns values and sentinel errors (ErrXxx), which proxy
// maps to its HTTP answers in one place. The protocol-neutral event framing
// is sse's.
package openai
