package load

import (
	"math"
	"math/bits"
	"time"
)

// The histogram is log-linear, like HdrHistogram: values below 2^subBits
// nanoseconds get a bucket each, and every power of two above is split into
// 2^(subBits-1) equal buckets. A bucket's width is then at most 1/128 of the
// values in it, so every reported percentile is within 0.8% of the true one,
// with a fixed 35 KB of counters and a Record that is a few instructions.
const (
	subBits      = 8
	subCount     = 1 << subBits // 256 linear buckets for 0-255 ns
	halfCount    = subCount / 2 // buckets per power of two above them
	maxValueBits = 40           // 2^40 ns, about 18 minutes
	maxShift     = maxValueBits - subBits
	numBuckets   = subCount + maxShift*halfCount
	maxTrackable = 1<<maxValueBits - 1 // larger values count as this
)

// Histogram records latencies for percentile reports. The zero value is ready
// to use. A Histogram is not safe for concurrent use: give each worker its
// own and Merge them.
type Histogram struct {
	counts   [numBuckets]uint64
	total    uint64
	sum      float64 // nanoseconds, for the mean
	min, max int64
}

// bucketOf returns the index of the bucket holding v nanoseconds.
func bucketOf(v int64) int {
	if v < subCount {
		return int(max(v, 0))
	}
	if v > maxTrackable {
		v = maxTrackable
	}
	shift := bits.Len64(uint64(v)) - subBits // 1..maxShift
	mantissa := int(v >> shift)              // halfCount..subCount-1
	return subCount + (shift-1)*halfCount + mantissa - halfCount
}

// bucketHigh returns the largest value bucket i holds.
func bucketHigh(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := (i-subCount)/halfCount + 1
	mantissa := int64((i-subCount)%halfCount + halfCount)
	return (mantissa+1)<<shift - 1
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	h.counts[bucketOf(v)]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
	h.sum += float64(v)
}

// Merge adds o's records to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.total == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.total += o.total
	h.sum += o.sum
}

// Count returns the number of records.
func (h *Histogram) Count() uint64 { return h.total }

// Min returns the smallest latency recorded, exactly.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max returns the largest latency recorded, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the average latency.
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}

// Summary returns the percentiles reports show, with the minimum, mean and
// maximum.
func (h *Histogram) Summary() Latency {
	return Latency{
		Min: h.Min(), Mean: h.Mean(),
		P50: h.Quantile(0.50), P90: h.Quantile(0.90), P99: h.Quantile(0.99), P999: h.Quantile(0.999),
		Max: h.Max(),
	}
}

// Quantile returns the latency below or at which a fraction q (0 to 1) of the
// records fall: the upper end of the bucket holding the record of that rank,
// so it overstates by at most 1/128 and never understates. Quantile(1) is the
// exact maximum.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(max(bucketHigh(i), h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
