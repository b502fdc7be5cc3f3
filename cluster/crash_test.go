package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestCrashLosesNoAckedProposal runs proposers against groups on Pebble's
// crashable in-memory filesystem, takes a crash image (all synced data, and
// a random part of the unsynced) while they run, and recovers from it: every
// proposal acknowledged before the crash must be in the recovered state.
// Snapshots are frequent so crashes land around compactions too.
func TestCrashLosesNoAckedProposal(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			crashOnce(t, seed)
		})
	}
}

func crashOnce(t *testing.T, seed uint64) {
	ctx := testContext(t)
	const dir, ngroups = "/data", 3
	cfg := Config{SnapshotEntries: 40}
	fs := vfs.NewCrashableMem()
	eng := openEngine(t, dir, fs)
	h := startHost(t, cfg, eng)
	var groups []*Group
	for i := range ngroups {
		groups = append(groups, addGroup(t, ctx, h, uint64(i+1), newKV()))
	}

	// acked[g] holds every key whose proposal completed without error.
	var mu sync.Mutex
	acked := make([]map[string]bool, ngroups)
	for i := range acked {
		acked[i] = make(map[string]bool)
	}
	var nacked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				gi := (w + i) % ngroups
				key := fmt.Sprintf("w%d-%d", w, i)
				f, err := groups[gi].Propose(ctx, []byte(key+"=v"))
				if err != nil {
					return // the host stopped
				}
				if _, err := f.Wait(ctx); err != nil {
					return
				}
				mu.Lock()
				acked[gi][key] = true
				mu.Unlock()
				nacked.Add(1)
			}
		})
	}
	// Crash at some point after a few snapshots' worth of proposals.
	rng := rand.New(rand.NewPCG(seed, 42))
	target := int64(300 + rng.IntN(600))
	waitFor(t, ctx, "acknowledged proposals", func() bool { return nacked.Load() >= target })
	mu.Lock()
	want := make([]map[string]bool, ngroups)
	for i := range acked {
		want[i] = make(map[string]bool, len(acked[i]))
		for k := range acked[i] {
			want[i][k] = true
		}
	}
	mu.Unlock()
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
	close(stop)
	h.Stop()
	wg.Wait()
	_ = eng.Close()

	eng = openEngine(t, dir, crashed)
	defer eng.Close()
	h = startHost(t, cfg, eng)
	defer h.Stop()
	for i := range ngroups {
		sm := newKV()
		addGroup(t, context.Background(), h, uint64(i+1), sm)
		data, count := sm.state()
		for k := range want[i] {
			if _, ok := data[k]; !ok {
				t.Fatalf("group %d: acknowledged key %s lost in the crash (recovered %d entries, %d acked before the crash)",
					i+1, k, count, len(want[i]))
			}
		}
		if count != uint64(len(data)) {
			t.Fatalf("group %d: %d entries applied for %d distinct keys: an entry applied twice", i+1, count, len(data))
		}
	}
}
