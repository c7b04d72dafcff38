package main

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"time"
)

// This file holds the pure arithmetic of the benchmarks: percentiles of samples, a compact
// latency histogram for runs too large to keep every sample, and the check that a stream's
// event ids arrive exactly once and in order.

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the nearest-rank method:
// the smallest sample such that at least p% of the samples are at or below it. It returns 0
// for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// summary describes a set of duration samples.
type summary struct {
	N   int     `json:"n"`
	Min float64 `json:"min_ms"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// summarize sorts a copy of samples and describes it, in milliseconds.
func summarize(samples []time.Duration) summary {
	s := slices.Clone(samples)
	slices.Sort(s)
	if len(s) == 0 {
		return summary{}
	}
	return summary{N: len(s), Min: ms(s[0]), P50: ms(percentile(s, 50)), P99: ms(percentile(s, 99)), Max: ms(s[len(s)-1])}
}

// median is the nearest-rank median of xs (the lower middle of an even count), or 0.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ratio is a/b, or 0 when b is 0 (no figure rather than an infinity in the JSON).
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// fmtMS prints milliseconds with precision that suits their size.
func fmtMS(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.3f ms", v)
	}
}

// histBuckets bounds latencyHist: bucket 127 starts above an hour.
const histBuckets = 128

// latencyHist counts latencies in logarithmic buckets: 1 µs wide below 4 µs, then four
// buckets per power of two, so each bucket is at most 25% wide. A 10,000-subscriber run
// cannot keep every sample (millions); 512 bytes a subscriber can.
type latencyHist [histBuckets]uint32

// histIndex is the bucket of d; negative durations (clock steps) count as 0.
func histIndex(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	if us < 4 {
		return int(us)
	}
	e := bits.Len64(us) - 1 // us lies in [2^e, 2^(e+1))
	sub := (us >> (e - 2)) & 3
	return min(4*(e-1)+int(sub), histBuckets-1)
}

// histLower is the smallest duration that falls in bucket i.
func histLower(i int) time.Duration {
	if i < 4 {
		return time.Duration(i) * time.Microsecond
	}
	e, sub := i/4+1, i%4
	return time.Duration((4+sub)<<(e-2)) * time.Microsecond
}

func (h *latencyHist) add(d time.Duration) { h[histIndex(d)]++ }

func (h *latencyHist) merge(o *latencyHist) {
	for i := range h {
		h[i] += o[i]
	}
}

func (h *latencyHist) count() uint64 {
	var n uint64
	for _, c := range h {
		n += uint64(c)
	}
	return n
}

// quantile returns an upper bound of the p-th percentile: the top of the bucket that holds it.
func (h *latencyHist) quantile(p float64) time.Duration {
	n := h.count()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i, c := range h {
		seen += uint64(c)
		if seen >= rank {
			if i == histBuckets-1 {
				return histLower(i)
			}
			return histLower(i + 1)
		}
	}
	return histLower(histBuckets - 1)
}

// maxBound is an upper bound of the largest latency counted.
func (h *latencyHist) maxBound() time.Duration {
	for i := histBuckets - 1; i >= 0; i-- {
		if h[i] > 0 {
			if i == histBuckets-1 {
				return histLower(i)
			}
			return histLower(i + 1)
		}
	}
	return 0
}

// idChecker verifies that one stream delivers event ids 1, 2, 3, ... each exactly once: an
// id beyond the next is a gap (those in between are missing), an id at or below the last is a
// repeat (or a reordering).
type idChecker struct {
	last    int // the highest id seen
	seen    int // ids seen, repeats included
	gaps    int // times the ids jumped
	missing int // ids skipped by those jumps, plus those never reached by finish
	repeats int // ids seen again, or out of order
}

func (c *idChecker) see(id int) {
	c.seen++
	switch {
	case id == c.last+1:
		c.last = id
	case id <= c.last:
		c.repeats++
	default:
		c.gaps++
		c.missing += id - c.last - 1
		c.last = id
	}
}

// finish checks that the stream reached want, the last id the server says it has.
func (c *idChecker) finish(want int) {
	if c.last < want {
		c.gaps++
		c.missing += want - c.last
		c.last = want
	}
}

// ok reports whether every id so far arrived once, in order, with none missing.
func (c *idChecker) ok() bool { return c.gaps == 0 && c.repeats == 0 }

func (c *idChecker) String() string {
	if c.ok() {
		return fmt.Sprintf("ids 1..%d, each once", c.last)
	}
	return fmt.Sprintf("up to id %d: %d gaps (%d ids missing), %d repeated or out of order", c.last, c.gaps, c.missing, c.repeats)
}
