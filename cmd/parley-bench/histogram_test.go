package main

import (
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// Every value must land in a bucket whose range contains it, and bucket ranges must tile the
// number line without gaps or overlaps; otherwise quantiles would silently drift.
func TestBucketsTileAndContain(t *testing.T) {
	var prevHi uint64
	for i := range histBuckets {
		lo, hi := bucketRange(i)
		if i > 0 && lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if lo > hi {
			t.Fatalf("bucket %d: lo %d > hi %d", i, lo, hi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d,%d]: bucketOf(lo)=%d bucketOf(hi)=%d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		prevHi = hi
		if hi == ^uint64(0) {
			if i != histBuckets-1 {
				t.Fatalf("bucket %d reaches max uint64 but there are %d buckets", i, histBuckets)
			}
			return
		}
	}
	t.Fatalf("buckets end at %d, short of max uint64", prevHi)
}

func TestBucketRelativeError(t *testing.T) {
	for _, v := range []uint64{0, 1, 255, 256, 257, 1000, 12345, 999_999, 1 << 40, 1<<62 + 12345} {
		lo, hi := bucketRange(bucketOf(v))
		if v < lo || v > hi {
			t.Fatalf("%d outside its bucket [%d,%d]", v, lo, hi)
		}
		if v >= subCount && float64(hi-lo)/float64(lo) > 1.0/subHalf {
			t.Fatalf("bucket of %d is [%d,%d]: wider than 1/%d", v, lo, hi, subHalf)
		}
	}
}

func TestQuantilesAgainstSortedSample(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	vals := make([]int64, 100_000)
	for i := range vals {
		// Log-uniform from 1µs to ~1s: the spread latency figures actually have.
		v := int64(float64(int64(1000)<<rng.IntN(20)) * (1 + rng.Float64()))
		vals[i] = v
		h.Record(time.Duration(v))
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	if h.Count() != uint64(len(vals)) {
		t.Fatalf("count %d, want %d", h.Count(), len(vals))
	}
	if h.Min() != time.Duration(vals[0]) || h.Max() != time.Duration(vals[len(vals)-1]) {
		t.Fatalf("min/max %v/%v, want %v/%v", h.Min(), h.Max(), vals[0], vals[len(vals)-1])
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := int64(h.Quantile(q))
		// Upper bucket edge: never below the true value, at most one bucket width above.
		if got < exact || float64(got-exact) > float64(exact)/subHalf+1 {
			t.Errorf("q%.3f = %d, exact %d", q, got, exact)
		}
	}
}

func TestQuantileEdgeCases(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram must report zeros")
	}
	h.Record(-5) // clock oddity: counts as zero, never panics
	h.Record(7 * time.Millisecond)
	if h.Min() != 0 || h.Max() != 7*time.Millisecond {
		t.Fatalf("min %v max %v", h.Min(), h.Max())
	}
	if h.Quantile(1) != 7*time.Millisecond || h.Quantile(0.999) != 7*time.Millisecond {
		t.Fatalf("top quantile %v must clamp to the exact max", h.Quantile(0.999))
	}
	if h.Quantile(0.5) != 0 {
		t.Fatalf("median of {0, 7ms} is %v, want 0", h.Quantile(0.5))
	}
}

func TestMerge(t *testing.T) {
	var a, b, all Histogram
	for i := range 1000 {
		d := time.Duration(i) * time.Microsecond
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
		all.Record(d)
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&Histogram{}) // empty merges must not disturb min
	if m.Count() != all.Count() || m.Min() != all.Min() || m.Max() != all.Max() || m.Mean() != all.Mean() {
		t.Fatalf("merged %d/%v/%v/%v, want %d/%v/%v/%v", m.Count(), m.Min(), m.Max(), m.Mean(),
			all.Count(), all.Min(), all.Max(), all.Mean())
	}
	for _, q := range []float64{0.1, 0.5, 0.99} {
		if m.Quantile(q) != all.Quantile(q) {
			t.Fatalf("q%v: merged %v, direct %v", q, m.Quantile(q), all.Quantile(q))
		}
	}
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i&0xfffff) * time.Microsecond)
	}
}
