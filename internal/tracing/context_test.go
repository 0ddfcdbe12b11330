package tracing

import (
	"encoding/hex"
	"testing"
)

func TestParseTraceparent(t *testing.T) {
	f := func(h string, wantOK bool, wantTrace, wantParent string, wantFlags byte) {
		t.Helper()
		traceID, parentID, flags, ok := ParseTraceparent([]byte(h))
		if ok != wantOK {
			t.Fatalf("%q: ok %v, want %v", h, ok, wantOK)
		}
		if !ok {
			return
		}
		if hex.EncodeToString(traceID[:]) != wantTrace || hex.EncodeToString(parentID[:]) != wantParent || flags != wantFlags {
			t.Fatalf("%q: %x %x %02x", h, traceID, parentID, flags)
		}
	}
	const trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	f("00-"+trace+"-"+parent+"-01", true, trace, parent, 1)                      // the specification's example
	f("00-"+trace+"-"+parent+"-00", true, trace, parent, 0)                      // not sampled
	f("01-"+trace+"-"+parent+"-09-future-field", true, trace, parent, 9)         // a later version's extra fields are ignored
	f("01-"+trace+"-"+parent+"-01", true, trace, parent, 1)                      // a later version, no extra field
	f("00-"+trace+"-"+parent+"-01-", false, "", "", 0)                           // version 00 is exactly 55 bytes
	f("01-"+trace+"-"+parent+"-01x", false, "", "", 0)                           // an extra field must follow a dash
	f("ff-"+trace+"-"+parent+"-01", false, "", "", 0)                            // version ff is invalid
	f("00-00000000000000000000000000000000-"+parent+"-01", false, "", "", 0)     // all-zero trace id
	f("00-"+trace+"-0000000000000000-01", false, "", "", 0)                      // all-zero parent id
	f("00-4BF92F3577B34DA6A3CE929D0E0E4736-"+parent+"-01", false, "", "", 0)     // upper-case hex
	f("00-"+trace+"-"+parent+"-0g", false, "", "", 0)                            // not hex
	f("00_"+trace+"-"+parent+"-01", false, "", "", 0)                            // wrong separator
	f("00-"+trace[:31]+"-"+parent+"-01", false, "", "", 0)                       // short
	f("", false, "", "", 0)                                                      // empty
	f(" 00-"+trace+"-"+parent+"-01", false, "", "", 0)                           // leading space: a different length
	f("00-"+trace+"-"+parent+"-01\x00", false, "", "", 0)                        // trailing NUL
	f("0x-"+trace+"-"+parent+"-01", false, "", "", 0)                            // version not hex
	f("00-"+trace+"-"+parent+"-01"+string(make([]byte, 1000)), false, "", "", 0) // long garbage
}

func TestBeginHonoursTheClientsTraceparent(t *testing.T) {
	const trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	never := &Tracer{sampleBound: sampleBound(0)}
	always := &Tracer{sampleBound: sampleBound(1)}
	f := func(tr *Tracer, headers []string, wantRemote, wantSampled bool) {
		t.Helper()
		var h [][]byte
		for _, s := range headers {
			h = append(h, []byte(s))
		}
		c := tr.Begin(h)
		if c.Remote != wantRemote || c.Sampled != wantSampled {
			t.Fatalf("%q: remote %v sampled %v, want %v %v", headers, c.Remote, c.Sampled, wantRemote, wantSampled)
		}
		if c.SpanID == ([8]byte{}) || c.TraceID == ([16]byte{}) {
			t.Fatalf("%q: zero ids %+v", headers, c)
		}
		if wantRemote && (hex.EncodeToString(c.TraceID[:]) != trace || hex.EncodeToString(c.ParentID[:]) != parent ||
			hex.EncodeToString(c.SpanID[:]) == parent) {
			t.Fatalf("%q: %+v does not continue the client's trace as a child", headers, c)
		}
		if !wantRemote && (c.ParentID != [8]byte{} || hex.EncodeToString(c.TraceID[:]) == trace) {
			t.Fatalf("%q: %+v kept a client context it should not", headers, c)
		}
	}
	sampled, unsampled := "00-"+trace+"-"+parent+"-01", "00-"+trace+"-"+parent+"-00"
	f(never, []string{sampled}, true, true)                              // the client's sampled flag decides, even at ratio 0
	f(always, []string{unsampled}, true, false)                          // and its unsampled flag, even at ratio 1
	f(always, nil, false, true)                                          // no traceparent: a new trace at the ratio
	f(never, nil, false, false)                                          //
	f(always, []string{"garbage"}, false, true)                          // an invalid one is ignored: a new trace
	f(never, []string{sampled, sampled}, false, false)                   // two traceparents are invalid (W3C): a new trace
	f(never, []string{"00-" + trace + "-" + parent + "-03"}, true, true) // unknown flags beside sampled
}

func TestSampleRatio(t *testing.T) {
	tr := &Tracer{sampleBound: sampleBound(0.25)}
	n, sampled := 20000, 0
	for range n {
		if tr.Begin(nil).Sampled {
			sampled++
		}
	}
	// 25% of 20000 is 5000, its standard deviation about 61: 10 of them.
	if sampled < 4400 || sampled > 5600 {
		t.Fatalf("ratio 0.25 sampled %d of %d", sampled, n)
	}
}

func TestAppendTraceparentRoundTrips(t *testing.T) {
	tr := &Tracer{sampleBound: sampleBound(1)}
	for _, sampled := range []bool{true, false} {
		c := tr.Begin(nil)
		c.Sampled = sampled
		h := AppendTraceparent(nil, &c)
		traceID, spanID, flags, ok := ParseTraceparent(h)
		if !ok || len(h) != TraceparentLen || traceID != c.TraceID || spanID != c.SpanID || (flags == 1) != sampled {
			t.Fatalf("%s does not name %+v", h, c)
		}
	}
}

func FuzzParseTraceparent(f *testing.F) {
	f.Add([]byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	f.Add([]byte("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"))
	f.Fuzz(func(t *testing.T, h []byte) {
		traceID, parentID, flags, ok := ParseTraceparent(h)
		if !ok {
			return
		}
		// What parses names what it says: written back, it reads the same.
		c := SpanContext{TraceID: traceID, SpanID: parentID, Sampled: flags&flagSampled != 0}
		t2, p2, f2, ok2 := ParseTraceparent(AppendTraceparent(nil, &c))
		if !ok2 || t2 != traceID || p2 != parentID || f2&1 != flags&1 {
			t.Fatalf("%q does not round-trip", h)
		}
	})
}
