// Package upstream is the gateway's side towards the providers: a client
// per upstream (Upstream: its keep-alive pools for buffered answers and for
// streams, dialing and TLS within connect_timeout, the per-event deadline of
// streams, the probe that finds a pooled connection the upstream closed
// before a request is written to it, and cutting every connection at
// shutdown's deadline), the upstreams of one configuration (Set, which a
// reload rebuilds keeping the unchanged ones with their warm connections),
// the routes of a model (Routes: each route's passive health, peak-EWMA
// latency and requests in flight, and Pick, the choice of each attempt's
// route among the healthy ones by the power of two choices), each
// upstream's retry budget for the failovers it takes, and the rules of
// what may fail over: a 429 or 5xx answer (FailsOver, with the pause its
// RetryAfter asks for), and of the failures only those that prove the
// request never reached the upstream (NeverSent), never one it may have
// read and billed (IsDropped, IsTimeout). A pooled connection found closed
// before a byte was written is the one failure retried on the same
// upstream.
//
// It knows nothing of HTTP handlers, keys, limits or the error contract: it
// must not import proxy (which imports it) nor keys or limits. It takes the
// config and fasthttp requests and returns fasthttp answers and errors that
// proxy classifies with NeverSent, IsTimeout and IsDropped. It may import
// config, proxy/openai and internal/... (internal/mock for the in-process
// mock provider).
package upstream
