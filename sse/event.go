package sse

import (
	"bytes"
	"time"
)

// Event is one event of a stream, as the Scanner returns it. Its slices point
// into the Scanner's buffers and stay valid until the next Feed.
type Event struct {
	// Raw is the event's bytes exactly as received, its comments and its
	// terminating blank line included, so relaying Raw of every event (and
	// Scanner.Pending at the end) reproduces the stream byte for byte. The
	// first event's Raw holds the stream's byte order mark, if it had one.
	Raw []byte
	// Data is the value of the event's data fields, joined with '\n' when
	// there are several, each without the one space that may follow "data:".
	Data []byte
	// Name is the value of the event: field, nil when there is none.
	Name []byte
	// ID is the value of the id: field, nil when there is none (or when it
	// holds a NUL, which the spec says to ignore). It is this event's field
	// only: the "last event ID" that browsers carry over is the caller's.
	ID []byte
	// Retry is the retry: field in milliseconds, as a duration; negative when
	// the event has none, or one that is not all ASCII digits.
	Retry time.Duration
	// HasData reports whether the event had a data field. Only such events
	// reach a browser's onmessage; the others (comments sent as keep-alives,
	// stray blank lines) are returned all the same, for their Raw.
	HasData bool
}

var done = []byte("[DONE]")

// IsDone reports whether the event is OpenAI's end-of-stream marker,
// "data: [DONE]".
func (e Event) IsDone() bool { return e.HasData && bytes.Equal(e.Data, done) }
