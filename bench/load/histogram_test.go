package load

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	// Every value lands in a bucket whose upper end is at least the value and
	// at most 1/128 above it, and buckets are contiguous.
	prevHigh := int64(-1)
	for i := range numBuckets {
		high := bucketHigh(i)
		if high <= prevHigh {
			t.Fatalf("bucket %d ends at %d, not after bucket %d (%d)", i, high, i-1, prevHigh)
		}
		if got := bucketOf(prevHigh + 1); got != i {
			t.Fatalf("value %d: bucket %d, want %d", prevHigh+1, got, i)
		}
		if got := bucketOf(high); got != i {
			t.Fatalf("value %d: bucket %d, want %d", high, got, i)
		}
		low := prevHigh + 1
		if low >= subCount && float64(high-low+1) > float64(low)/halfCount {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/%d of its values", i, low, high, halfCount)
		}
		prevHigh = high
	}
	if prevHigh != maxTrackable {
		t.Fatalf("last bucket ends at %d, want %d", prevHigh, int64(maxTrackable))
	}
	if bucketOf(maxTrackable*4) != numBuckets-1 || bucketOf(-5) != 0 {
		t.Fatal("out-of-range values must clamp to the end buckets")
	}
}

func TestQuantileAccuracy(t *testing.T) {
	f := func(name string, gen func(r *rand.Rand) time.Duration) {
		t.Helper()
		r := rand.New(rand.NewPCG(1, 2))
		var h Histogram
		values := make([]time.Duration, 100_000)
		for i := range values {
			values[i] = gen(r)
			h.Record(values[i])
		}
		slices.Sort(values)
		for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
			exact := values[int(q*float64(len(values)))-1]
			got := h.Quantile(q)
			if got < exact || float64(got-exact) > float64(exact)/halfCount+1 {
				t.Fatalf("%s: p%v = %v, exact %v: off by more than 1/%d", name, q*100, got, exact, halfCount)
			}
		}
		if h.Quantile(1) != values[len(values)-1] || h.Max() != values[len(values)-1] || h.Min() != values[0] {
			t.Fatalf("%s: min %v max %v q1 %v, want %v and %v", name, h.Min(), h.Max(), h.Quantile(1), values[0], values[len(values)-1])
		}
		if h.Count() != uint64(len(values)) {
			t.Fatalf("%s: count %d", name, h.Count())
		}
	}
	f("uniform 0-10ms", func(r *rand.Rand) time.Duration { return time.Duration(r.Int64N(int64(10 * time.Millisecond))) })
	f("exponential, mean 1ms", func(r *rand.Rand) time.Duration { return time.Duration(r.ExpFloat64() * float64(time.Millisecond)) })
	f("sub-microsecond", func(r *rand.Rand) time.Duration { return time.Duration(r.Int64N(1000)) })
	f("bimodal with a slow tail", func(r *rand.Rand) time.Duration {
		if r.IntN(100) == 0 {
			return time.Second + time.Duration(r.Int64N(int64(time.Second)))
		}
		return 200*time.Microsecond + time.Duration(r.Int64N(int64(100*time.Microsecond)))
	})
}

func TestQuantileExact(t *testing.T) {
	f := func(values []time.Duration, q float64, want time.Duration) {
		t.Helper()
		var h Histogram
		for _, v := range values {
			h.Record(v)
		}
		if got := h.Quantile(q); got != want {
			t.Fatalf("%v: q%v = %v, want %v", values, q, got, want)
		}
	}
	f(nil, 0.5, 0)
	f([]time.Duration{7}, 0.5, 7)                               // small values are exact
	f([]time.Duration{1, 2, 3, 4}, 0.5, 2)                      // the rank ceil(q*n) record
	f([]time.Duration{1, 2, 3, 4}, 0.51, 3)                     // just past it
	f([]time.Duration{time.Millisecond}, 0.5, time.Millisecond) // clamped to the only value
	f([]time.Duration{time.Hour}, 0.99, time.Hour)              // past the trackable range: still the exact max
}

func TestMerge(t *testing.T) {
	var a, b, all Histogram
	for i := range 1000 {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&Histogram{})
	if m != all {
		t.Fatalf("merged: count %d min %v max %v mean %v; want %d %v %v %v",
			m.Count(), m.Min(), m.Max(), m.Mean(), all.Count(), all.Min(), all.Max(), all.Mean())
	}
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram
	d := 1234567 * time.Nanosecond
	b.ReportAllocs()
	for b.Loop() {
		h.Record(d)
		d += 977
	}
}
