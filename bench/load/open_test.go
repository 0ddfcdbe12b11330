package load

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/mock"
)

func TestScheduleDueBefore(t *testing.T) {
	f := func(rate float64, d time.Duration, want uint64) {
		t.Helper()
		s := schedule{perRequest: 1e9 / rate}
		got := s.dueBefore(d)
		if got != want {
			t.Fatalf("rate %v, before %v: %d due, want %d", rate, d, got, want)
		}
		// The count agrees with the offsets it is made of.
		if got > 0 && s.offset(got-1) >= d || s.offset(got) < d {
			t.Fatalf("rate %v, before %v: %d due, but offsets %v and %v", rate, d, got, s.offset(got-1), s.offset(got))
		}
	}
	f(1000, 0, 0)                        // nothing is due before the start
	f(1000, time.Nanosecond, 1)          // request 0 is due at the start
	f(1000, time.Second, 1000)           // 0 to 999ms, not the one at 1s
	f(1000, time.Second+1, 1001)         // the one at 1s too
	f(3, time.Second, 3)                 // 0, 333.3ms, 666.7ms: thirds round cleanly
	f(7, time.Second, 7)                 // sevenths do not
	f(0.5, 10*time.Second, 5)            // one every 2s: 0, 2, 4, 6, 8
	f(1e6, time.Millisecond, 1000)       // the highest rate
	f(333.333, 3*time.Second, 1000)      // a rate that is not a whole number
	f(2500, 1500*time.Millisecond, 3750) // a window that ends between requests
}

func TestNewSchedule(t *testing.T) {
	f := func(rate float64, warmup, duration time.Duration, wantWarmup, wantEnd uint64, wantFirst, wantLast time.Duration) {
		t.Helper()
		s := newSchedule(rate, warmup, duration)
		if s.warmup != wantWarmup || s.end != wantEnd {
			t.Fatalf("rate %v, %v+%v: warmup %d, end %d; want %d and %d", rate, warmup, duration, s.warmup, s.end, wantWarmup, wantEnd)
		}
		if first, last := s.offset(s.warmup), s.offset(s.end-1); first != wantFirst || last != wantLast {
			t.Fatalf("rate %v, %v+%v: window's first request at %v, last at %v; want %v and %v", rate, warmup, duration, first, last, wantFirst, wantLast)
		}
	}
	f(100, time.Second, 2*time.Second, 100, 300, time.Second, 2990*time.Millisecond)
	f(100, 0, time.Second, 0, 100, 0, 990*time.Millisecond)
	f(4, 300*time.Millisecond, time.Second, 2, 6, 500*time.Millisecond, 1250*time.Millisecond)
}

func openConfig(t *testing.T, addr string, rate float64, conns int, warmup, duration time.Duration) Config {
	t.Helper()
	c := chatConfig(t, addr)
	c.Rate, c.Conns, c.Warmup, c.Duration = rate, conns, warmup, duration
	return c
}

// TestRunOpenOnTime: an open loop sends the schedule, paced over the window
// rather than as fast as the target answers, and accounts for every request
// of it. Both are checked the way that holds on a loaded machine: a request
// is never sent before it is due, so however late the generator runs, the
// mock can never have seen more than the schedule has made due by the time
// it is asked; and every scheduled request is either recorded or counted
// unsent. On an idle machine all 200 are sent; under ten times the load
// the last ones can miss the window's end (it failed so beside another
// make test), which Unsent and an invalid result then report rather than hide.
func TestRunOpenOnTime(t *testing.T) {
	s, addr := startMock(t, mock.Options{})
	c := openConfig(t, addr, 400, 32, 100*time.Millisecond, 500*time.Millisecond)
	// No recorded request goes out while the hook reads the target, however
	// long it takes or late it runs: it failed beside another make test when
	// the hook ran beside the dispatcher, and the pause makes that certain.
	var atRecord uint64
	c.OnRecord = func() {
		time.Sleep(20 * time.Millisecond)
		atRecord = s.Requests()
	}
	begin := time.Now()
	// dueBy is how many requests are due by now at 400/s from begin.
	dueBy := func() uint64 { return uint64(400*time.Since(begin).Seconds()) + 1 }
	type sample struct{ seen, due uint64 }
	samples := make(chan sample, 1)
	go func() {
		time.Sleep(c.Warmup + c.Duration/2)
		seen := s.Requests()
		samples <- sample{seen, dueBy()}
	}()
	res, err := RunOpen(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	half := <-samples
	if res.Scheduled != 200 || res.Requests+res.Unsent != 200 || res.Requests == 0 || res.OK != res.Requests || res.Errors != 0 {
		t.Fatalf("%+v: want the 200 scheduled requests each recorded or counted unsent, every recorded one answered", res)
	}
	if seen := s.Requests(); seen > 240 || seen < res.Requests {
		t.Fatalf("mock saw %d requests, %d recorded: want at most the 40 warmup and 200 recorded ones, each sent once", seen, res.Requests)
	}
	if res.Unsent > 0 && res.Valid() {
		t.Fatalf("%+v: requests unsent, yet the result says it kept the schedule", res)
	}
	// Unpaced, the 240 would all be in within milliseconds.
	if atRecord > 40 || half.seen > half.due {
		t.Fatalf("mock saw %d requests when the window opened (the 40 of the warmup, none recorded before the hook read it) and %d half way through (%d due): sent early, not paced at 400/s",
			atRecord, half.seen, half.due)
	}
	if res.Elapsed != 500*time.Millisecond || res.Throughput != float64(res.OK)/0.5 || res.Rate != 400 {
		t.Fatalf("elapsed %v, throughput %v, rate %v: want the window and the rate", res.Elapsed, res.Throughput, res.Rate)
	}
	// Timed from the due time, a request can only look slower than when
	// timed from its sending.
	l, sv := res.Latency, res.Service
	if !(0 < sv.Min && sv.Min <= l.Min && sv.P50 <= l.P50 && sv.Max <= l.Max && l.P50 <= l.P99 && l.P99 <= l.Max) {
		t.Fatalf("latency %+v, service %+v", l, sv)
	}
	if res.SendLag.Min < 0 || res.SendLag.Max < res.SendLag.P50 {
		t.Fatalf("send lag %+v: a request was sent before it was due", res.SendLag)
	}
}

// TestRunOpenCoordinatedOmission: a target that cannot keep up shows it in
// the latency timed from the due time, while the service time, what a
// closed loop would report, stays flat.
func TestRunOpenCoordinatedOmission(t *testing.T) {
	_, addr := startMock(t, mock.Options{Latency: 20 * time.Millisecond})
	// Two connections of 20ms answers carry 100/s; 200/s are asked.
	res, err := RunOpen(context.Background(), openConfig(t, addr, 200, 2, 0, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if res.Scheduled != 100 || res.Requests+res.Unsent != 100 || res.Unsent < 30 || res.Late < 30 || res.Valid() {
		t.Fatalf("%+v: want about half the 100 requests unsent and most of the rest late", res)
	}
	if res.Errors != 0 || res.OK != res.Requests {
		t.Fatalf("%+v: want every request sent answered", res)
	}
	// Each request's latency is its send lag plus its service time, so the
	// quantiles are ordered that way too; the queue (the lag) outweighs the
	// 20ms answers, however slow a busy machine makes them.
	if res.SendLag.P90 < 100*time.Millisecond || res.Latency.P90 < res.SendLag.P90 || res.Latency.P90 < res.Service.P90 ||
		res.Service.P90 >= res.SendLag.P90 {
		t.Fatalf("latency p90 %v, service p90 %v, send lag p90 %v: the queue's wait must show in the latency, not the service time",
			res.Latency.P90, res.Service.P90, res.SendLag.P90)
	}
}

func TestRunOpenCancel(t *testing.T) {
	_, addr := startMock(t, mock.Options{})
	c := openConfig(t, addr, 100, 4, 0, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	res, err := RunOpen(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	// Stopping "at once" is judged against the minute the run would last.
	if took := time.Since(begin); took > 30*time.Second || res.OK < 1 || res.Elapsed > 30*time.Second {
		t.Fatalf("took %v, %d answers, elapsed %v: a cancelled run must stop at once with what it has", took, res.OK, res.Elapsed)
	}
	c.Warmup = time.Minute
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := RunOpen(ctx, c); err == nil || !strings.Contains(err.Error(), "warmup") {
		t.Fatalf("cancelled in the warmup: %v", err)
	}
}

func TestRunOpenConfigCheck(t *testing.T) {
	f := func(c Config, want string) {
		t.Helper()
		_, err := RunOpen(context.Background(), c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%+v: error %v, want one containing %q", c, err, want)
		}
	}
	ok := Config{Addr: "127.0.0.1:1", Conns: 1, Rate: 10, Duration: time.Second, Request: Request{Path: "/v1/models"}}
	c := ok
	c.Rate = 0
	f(c, "rate 0")
	c.Rate = MaxRate + 1
	f(c, "rate 1.000001e+06")
	c = ok
	c.Duration, c.Requests = 0, 10
	f(c, "needs a duration")
	c = ok
	c.Addrs = []string{"127.0.0.1:1", "192.168.1.1:80"}
	f(c, "only loopback")
}

// TestHooks: OnRecord and OnRecordEnd bracket exactly the recorded requests,
// give or take the warmup's last requests in flight.
func TestHooks(t *testing.T) {
	// open: an open loop's warmup requests the generator could not send on
	// time (a loaded machine) go out after the window opened, unrecorded, so
	// the mock may see more than Conns of them after OnRecord (it failed so
	// beside another make test: 8 with 4 connections); the closed loop's
	// warmup ends with at most Conns in flight.
	f := func(name string, open bool, run func(c Config) (uint64, error)) {
		t.Helper()
		s, addr := startMock(t, mock.Options{})
		c := openConfig(t, addr, 500, 4, 100*time.Millisecond, 300*time.Millisecond)
		var begins, ends int
		var atBegin, atEnd uint64
		c.OnRecord = func() { begins++; atBegin = s.Requests() }
		c.OnRecordEnd = func() { ends++; atEnd = s.Requests() }
		recorded, err := run(c)
		if err != nil {
			t.Fatal(err)
		}
		warmup := s.Requests() - recorded
		// Requests due as the window opens race the hook, and so do the
		// warmup's last ones in flight: at most Conns either way, and for
		// an open loop at most the warmup the mock had not seen.
		over := int64(c.Conns)
		if open {
			over += max(int64(warmup)-int64(atBegin), 0)
		}
		if d := int64(atEnd-atBegin) - int64(recorded); begins != 1 || ends != 1 || atBegin == 0 || d < -int64(c.Conns) || d > over {
			t.Fatalf("%s: hooks called %d and %d times, mock at %d and %d, %d recorded of %d", name, begins, ends, atBegin, atEnd, recorded, s.Requests())
		}
	}
	f("closed", false, func(c Config) (uint64, error) {
		res, err := Run(context.Background(), c)
		if err != nil {
			return 0, err
		}
		return res.Requests, nil
	})
	f("open", true, func(c Config) (uint64, error) {
		res, err := RunOpen(context.Background(), c)
		if err != nil {
			return 0, err
		}
		return res.Requests, nil
	})
}

// TestResultJSON pins the field names reports are read by.
func TestResultJSON(t *testing.T) {
	lat := Latency{Min: 1, Mean: 2, P50: 3, P90: 4, P99: 5, P999: 6, Max: 7}
	res := &OpenResult{
		Result: Result{Target: "tokenhub", Conns: 64, Elapsed: time.Second, Requests: 10, OK: 7, Errors: 1, Refused: 2,
			ErrorsByKind: map[string]uint64{"bad_refusal": 1}, RefusedLatency: &lat, Throughput: 7, Latency: lat},
		Rate: 10, Scheduled: 11, Late: 3, Unsent: 1, Service: lat, SendLag: lat,
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	f := func(path string, want any) {
		t.Helper()
		var v any = m
		for _, k := range strings.Split(path, ".") {
			v = v.(map[string]any)[k]
		}
		if v != want {
			t.Fatalf("%s = %v (%T), want %v in %s", path, v, v, want, b)
		}
	}
	f("target", "tokenhub")
	f("conns", 64.0)
	f("elapsed_ns", 1e9)
	f("requests", 10.0)
	f("ok", 7.0)
	f("errors", 1.0)
	f("errors_by_kind.bad_refusal", 1.0)
	f("refused", 2.0)
	f("refused_latency.p99_ns", 5.0)
	f("throughput_rps", 7.0)
	f("latency.min_ns", 1.0)
	f("latency.mean_ns", 2.0)
	f("latency.p50_ns", 3.0)
	f("latency.p90_ns", 4.0)
	f("latency.p99_ns", 5.0)
	f("latency.p99_9_ns", 6.0)
	f("latency.max_ns", 7.0)
	f("rate_rps", 10.0)
	f("scheduled", 11.0)
	f("late", 3.0)
	f("unsent", 1.0)
	f("service.p50_ns", 3.0)
	f("send_lag.max_ns", 7.0)
	if len(m) != 17 {
		t.Fatalf("%d fields, want 17: a new one needs a line here: %s", len(m), b)
	}

	// Without refusals the refusal fields are left out.
	b, err = json.Marshal(&Result{Target: "direct"})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); strings.Contains(s, "refused") || strings.Contains(s, "errors_by_kind") {
		t.Fatalf("empty fields not left out: %s", s)
	}
}
