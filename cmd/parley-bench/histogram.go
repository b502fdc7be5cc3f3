package main

import (
	"math"
	"math/bits"
	"time"
)

// Histogram is a log-linear histogram of non-negative durations in nanoseconds, in the
// spirit of HdrHistogram: values below 2^subBits are kept exactly; above that each power of
// two is split into 2^(subBits-1) equal sub-buckets, so every recorded value is known to
// within 1/2^(subBits-1) (0.8%) of itself whatever its magnitude. Recording is one index
// computation and an increment, with no allocation, which matters because it runs once per
// consumed message. Not safe for concurrent use: each consumer owns one, merged at the end.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    float64
	min    int64
	max    int64
}

const (
	subBits  = 8
	subCount = 1 << subBits       // values below this are exact
	subHalf  = 1 << (subBits - 1) // sub-buckets per power of two above that
	// The largest shift is for a value with 64 significant bits; bucket indexes above that
	// cannot occur.
	histBuckets = subCount + (64-subBits)*subHalf
)

// bucketOf returns the bucket index of v (v >= 0).
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(v) - subBits // v>>shift is in [subHalf, subCount)
	return subCount + (shift-1)*subHalf + int(v>>uint(shift)) - subHalf
}

// bucketRange returns the smallest and largest value that map to bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < subCount {
		return uint64(i), uint64(i)
	}
	j := i - subCount
	shift := j/subHalf + 1
	m := uint64(j%subHalf + subHalf)
	lo = m << uint(shift)
	hi = lo + (uint64(1) << uint(shift)) - 1
	return lo, hi
}

// Record adds one observation; negative values (clock oddities) count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(uint64(v))]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds every observation of o into h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 { return h.n }

// Min and Max are exact.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max is the largest observation, exact.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is exact up to float rounding.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the value at quantile q in [0,1]: the upper edge of the bucket holding the
// ceil(q*n)-th smallest observation, clamped to the exact min and max. Reporting the upper
// edge errs on the pessimistic side, as latency figures should.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q <= 0 {
		return time.Duration(h.min)
	}
	if q >= 1 {
		return time.Duration(h.max)
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bucketRange(i)
			v := int64(hi)
			if v > h.max || hi > math.MaxInt64 {
				v = h.max
			}
			if v < h.min {
				v = h.min
			}
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}
