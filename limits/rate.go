package limits

import (
	"strconv"
	"time"
)

// Rate is a token bucket of Limit tokens per minute, refilled continuously, that
// holds at most Limit tokens (a full minute's worth may be spent at once). It
// is kept as GCRA's theoretical arrival time: one integer, exact, O(1), no
// floating point and no allocation. The zero Rate is an empty history (full
// bucket). It is not safe for concurrent use; callers hold a lock.
type Rate struct {
	tat   int64 // unix nanoseconds when the bucket will be full again
	limit int64 // the limit tat was computed for
}

// rescale keeps the tokens in use when the limit changes (a plan or key
// edit): tat is in time units of the old limit's refill interval.
func (r *Rate) rescale(limit, now int64) {
	if r.limit != limit {
		if r.limit != 0 && r.tat > now {
			used := (r.tat - now) / interval(r.limit)
			r.tat = now + used*interval(limit)
		}
		r.limit = limit
	}
}

const minute = int64(time.Minute)

// interval is the nanoseconds one token takes to refill. Limits beyond 60
// billion a minute (plans cap them far lower) refill a token per nanosecond.
func interval(limit int64) int64 { return max(minute/limit, 1) }

// RateState is a bucket as reported in x-ratelimit-* headers.
type RateState struct {
	Limit     int64
	Remaining int64
	// Reset is how long until the bucket is full again.
	Reset time.Duration
}

// Take spends n tokens at now (unix nanoseconds) from a bucket of limit per
// minute. When the bucket lacks them it spends nothing and says how long to
// wait until it would have them. n may exceed limit only to be refused.
func (r *Rate) Take(limit, n, now int64) (ok bool, retryAfter time.Duration) {
	r.rescale(limit, now)
	iv := interval(limit)
	tat := max(r.tat, now)
	next := tat + n*iv
	if over := next - now - minute; over > 0 {
		if n > limit {
			return false, time.Duration(minute) // never fits; wait the longest
		}
		return false, time.Duration(over)
	}
	r.tat = next
	return true, 0
}

// Adjust corrects an earlier Take by delta tokens: negative gives tokens back
// (a charge that turned out too high), positive charges more (possibly past
// empty, which then delays later Takes).
func (r *Rate) Adjust(limit, delta, now int64) {
	r.rescale(limit, now)
	iv := interval(limit)
	r.tat = max(r.tat, now) + delta*iv
	if r.tat < now {
		r.tat = now
	}
}

// State reports the bucket at now.
func (r *Rate) State(limit, now int64) RateState {
	r.rescale(limit, now)
	iv := interval(limit)
	used := max(r.tat-now, 0)
	return RateState{
		Limit:     limit,
		Remaining: max(min((minute-used)/iv, limit), 0),
		Reset:     time.Duration(used),
	}
}

// AppendDuration appends d the way OpenAI writes rate-limit resets ("1s",
// "6m0s", "12ms", "1.5s"): Go's time.Duration format at millisecond
// precision, without allocating.
func AppendDuration(b []byte, d time.Duration) []byte {
	ms := int64((d + time.Millisecond/2) / time.Millisecond)
	if ms <= 0 {
		return append(b, "0s"...)
	}
	if ms < 1000 {
		b = strconv.AppendInt(b, ms, 10)
		return append(b, "ms"...)
	}
	h, rest := ms/3_600_000, ms%3_600_000
	m, rest := rest/60_000, rest%60_000
	s, frac := rest/1000, rest%1000
	if h > 0 {
		b = strconv.AppendInt(b, h, 10)
		b = append(b, 'h')
	}
	if h > 0 || m > 0 {
		b = strconv.AppendInt(b, m, 10)
		b = append(b, 'm')
	}
	b = strconv.AppendInt(b, s, 10)
	if frac > 0 {
		b = append(b, '.')
		digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
		n := 3
		for digits[n-1] == '0' {
			n--
		}
		b = append(b, digits[:n]...)
	}
	return append(b, 's')
}
