package limits

import (
	"testing"
	"time"
)

func TestRateAdmitsExactlyTheLimitPerMinute(t *testing.T) {
	const limit = 60
	var r Rate
	now := int64(1_000_000_000_000)
	admitted := 0
	// Hammer it for ten minutes, one try per 10ms.
	for at := now; at < now+10*minute; at += int64(10 * time.Millisecond) {
		if ok, _ := r.Take(limit, 1, at); ok {
			admitted++
		}
	}
	// One full bucket at the start plus one token per second after.
	if want := limit + 10*60 - 1; admitted < want-1 || admitted > want+1 {
		t.Fatalf("admitted %d in 10 minutes, want %d±1", admitted, want)
	}
}

func TestRateTake(t *testing.T) {
	var r Rate
	now := int64(5 * minute)
	if ok, _ := r.Take(10, 10, now); !ok {
		t.Fatal("a full bucket refused its whole capacity")
	}
	ok, retry := r.Take(10, 1, now)
	if ok || retry != 6*time.Second {
		t.Fatalf("empty bucket: ok %v retry %s, want refusal with 6s", ok, retry)
	}
	if ok, _ := r.Take(10, 1, now+int64(6*time.Second)); !ok {
		t.Fatal("refused after the advertised wait")
	}
	if ok, retry := r.Take(10, 11, now+10*minute); ok || retry != time.Minute {
		t.Fatalf("more than the limit: ok %v retry %s", ok, retry)
	}
}

func TestRateAdjustAndState(t *testing.T) {
	var r Rate
	now := int64(minute)
	r.Take(100, 40, now)
	if s := r.State(100, now); s.Remaining != 60 || s.Reset != 24*time.Second || s.Limit != 100 {
		t.Fatalf("after 40 of 100: %+v", s)
	}
	r.Adjust(100, -30, now) // 30 of the 40 were not needed
	if s := r.State(100, now); s.Remaining != 90 {
		t.Fatalf("after giving 30 back: %+v", s)
	}
	r.Adjust(100, 500, now) // a charge far past empty
	if s := r.State(100, now); s.Remaining != 0 {
		t.Fatalf("overdrawn: %+v", s)
	}
	if ok, _ := r.Take(100, 1, now); ok {
		t.Fatal("overdrawn bucket admitted")
	}
	r.Adjust(100, -1000, now)
	if s := r.State(100, now); s.Remaining != 100 || s.Reset != 0 {
		t.Fatalf("refunded past full: %+v", s)
	}
}

func TestAppendDuration(t *testing.T) {
	f := func(d time.Duration, want string) {
		t.Helper()
		if got := string(AppendDuration(nil, d)); got != want {
			t.Fatalf("AppendDuration(%s) = %q, want %q", d, got, want)
		}
		if d >= time.Millisecond && d.Round(time.Millisecond).String() != want {
			t.Fatalf("%s: Go writes %q, we %q", d, d.Round(time.Millisecond).String(), want)
		}
	}
	f(0, "0s")
	f(12*time.Millisecond, "12ms")
	f(time.Second, "1s")
	f(1500*time.Millisecond, "1.5s")
	f(17275*time.Millisecond, "17.275s")
	f(6*time.Minute, "6m0s")
	f(time.Hour+2*time.Minute+3*time.Second, "1h2m3s")
	f(999*time.Microsecond, "1ms")
}

func TestRateRescalesWhenTheLimitChanges(t *testing.T) {
	var r Rate
	now := int64(minute)
	r.Take(1, 1, now) // the whole bucket of a 1-per-minute limit
	if s := r.State(3, now); s.Remaining != 2 {
		t.Fatalf("one of 3 used after raising the limit: %+v", s)
	}
	if ok, _ := r.Take(3, 2, now); !ok {
		t.Fatal("the raised limit's room was refused")
	}
}
