package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// The garbage collector's floor (runtime.gc_min_heap).
//
// Go's collector starts a cycle when the heap has grown by GOGC percent (100) over what the
// last one found live. A broker whose queues are shallow keeps little live, about 6 MB under
// the persistent 1p/1c benchmark, while every message allocates a few KiB that die within
// milliseconds (its body, etcd raft's copy of its log entry): the heap goal was 12 MB and a
// cycle ran every 6 MB allocated, some 30 a second, and the collector took a tenth of the
// broker's CPU (docs/performance.md, "Durable path, December 5"). Its cost per cycle hardly
// depends on the garbage, so the fix is fewer cycles: the floor raises GOGC while the live
// heap is small, so that the goal is at least minHeap, and gives GOGC back as the live heap
// grows past minHeap/2, from where GOGC's own goal is higher anyway. A broker holding much
// (10,000 idle connections, deep queues in memory) is collected as before; a small one trades
// up to minHeap of resident memory for far fewer cycles. GOGC set in the environment is the
// operator's choice: the floor then stays off, and GOMEMLIMIT still bounds everything.
//
// The floor looks at the live heap after each cycle (a cleanup attached to an object that only
// that cycle frees) and sets GOGC when it should move by more than a tenth.
type gcFloor struct {
	minHeap uint64
	base    int // GOGC without the floor
	set     int // GOGC as last set
	stopped atomic.Bool
	mu      sync.Mutex
	sample  []metrics.Sample
	log     *zap.Logger
}

// startGCFloor starts the floor and returns the function that stops it and gives GOGC back.
// minHeap 0, or GOGC set in the environment, leaves the collector alone.
func startGCFloor(minHeap uint64, log *zap.Logger) (stop func()) {
	if minHeap == 0 {
		return func() {}
	}
	if v, ok := os.LookupEnv("GOGC"); ok {
		log.Info("GOGC set in the environment: runtime.gc_min_heap is not applied", zap.String("GOGC", v))
		return func() {}
	}
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base <= 0 {
		return func() {}
	}
	f := &gcFloor{minHeap: minHeap, base: base, set: base, log: log,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	f.arm()
	return func() {
		f.stopped.Store(true)
		f.mu.Lock()
		debug.SetGCPercent(f.base)
		f.set = f.base
		f.mu.Unlock()
	}
}

// gcSentinel is what a cycle frees to tell the floor it ran: not a tiny pointer-free object,
// which the runtime may batch with live ones (runtime.AddCleanup).
type gcSentinel struct {
	_ *gcFloor
	_ [8]byte
}

// arm attaches the next look to an object the next cycle frees.
func (f *gcFloor) arm() {
	runtime.AddCleanup(&gcSentinel{}, func(f *gcFloor) { f.look() }, f)
}

// look runs after a cycle: it sets GOGC for the live heap that cycle found, and arms the next.
func (f *gcFloor) look() {
	if f.stopped.Load() {
		return
	}
	f.mu.Lock()
	metrics.Read(f.sample)
	live := uint64(0)
	if f.sample[0].Value.Kind() == metrics.KindUint64 {
		live = f.sample[0].Value.Uint64()
	}
	want := gcPercentFor(f.minHeap, live, f.base)
	if !f.stopped.Load() && (want > f.set+f.set/10 || want < f.set-f.set/10 || (want == f.base && f.set != f.base)) {
		debug.SetGCPercent(want)
		f.set = want
	}
	f.mu.Unlock()
	f.arm()
}

// gcPercentFor is the GOGC that puts the heap goal at minHeap for a live heap of live bytes
// (the goal is about live × (1 + GOGC/100)), never below base, and at most 100 × minHeap/1 MiB
// for a live heap too small to measure.
func gcPercentFor(minHeap, live uint64, base int) int {
	live = max(live, 1<<20)
	if live*uint64(100+base) >= minHeap*100 {
		return base
	}
	return int((minHeap - live) * 100 / live)
}
