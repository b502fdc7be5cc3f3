package main

import (
	"os"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestGCPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		min, live  uint64
		base, want int
	}{
		{64 * mib, 6 * mib, 100, 966},   // the 1p/1c benchmark's live heap: goal about 64 MiB
		{64 * mib, 0, 100, 6300},        // nothing measured yet: as for 1 MiB
		{64 * mib, 32 * mib, 100, 100},  // GOGC's own goal reaches the floor
		{64 * mib, 500 * mib, 100, 100}, // far above it
		{64 * mib, 16 * mib, 300, 300},  // a higher GOGC is kept
	} {
		if got := gcPercentFor(c.min, c.live, c.base); got != c.want {
			t.Errorf("gcPercentFor(%d MiB, %d MiB, %d) = %d, want %d", c.min/mib, c.live/mib, c.base, got, c.want)
		}
	}
}

func gogc() int64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// The floor raises GOGC after a cycle finds the live heap small, and gives it back when
// stopped.
func TestGCFloor(t *testing.T) {
	if _, ok := os.LookupEnv("GOGC"); ok {
		t.Skip("GOGC is set in the environment: the floor stays off by design")
	}
	base := gogc()
	stop := startGCFloor(1<<30, zap.NewNop())
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for gogc() <= base && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // the cleanup runs on its own goroutine
	}
	if got := gogc(); got <= base {
		t.Fatalf("GOGC %d after cycles with a small live heap and a 1 GiB floor, want above %d", got, base)
	}
	stop()
	stopped = true
	if got := gogc(); got != base {
		t.Fatalf("GOGC %d after the floor stopped, want %d back", got, base)
	}
}
