package storage

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// TestCrashKeepsEverySyncedEntry appends to several groups in a loop, each
// round one batch committed with sync, while the test takes crash clones of
// Pebble's in-memory filesystem at arbitrary moments (each keeping a random
// share of the unsynced writes). Reopened from a clone, every group must have
// every entry whose commit had returned, intact, and nothing beyond what had
// been handed to Pebble.
func TestCrashKeepsEverySyncedEntry(t *testing.T) {
	const groups = 4
	fs := vfs.NewCrashableMem()
	opts := testOptions(fs)
	opts.MemTableSize = 256 << 10 // flush and compact during the run
	opts.TailCacheBytes = 4 << 10
	e := openEngine(t, "data", opts)
	defer e.Close()

	var durable, attempted [groups + 1]atomic.Uint64
	commits := make(chan struct{}, 1)
	stop := make(chan struct{})
	failed := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		last := [groups + 1]uint64{}
		for round := 0; ; round++ {
			select {
			case <-stop:
				return
			default:
			}
			b := e.NewBatch()
			var next [groups + 1]uint64
			for g := uint64(1); g <= groups; g++ {
				if rng.IntN(3) == 0 {
					next[g] = last[g]
					continue // not every group in every batch
				}
				l, err := e.RaftLog(g)
				if err != nil {
					failed <- err
					return
				}
				n := uint64(1 + rng.IntN(8))
				// Some bodies above the value-separation threshold.
				size := []int{16, 200, 3000}[rng.IntN(3)]
				ents := entries(g, last[g]+1, last[g]+1+n, 1, size)
				next[g] = last[g] + n
				attempted[g].Store(next[g])
				err = l.Append(b, ents)
				if err == nil {
					err = l.SetHardState(b, &raftpb.HardState{Term: new(uint64(1)), Commit: new(next[g])})
				}
				if err == nil && round%25 == 24 && next[g] > 20 {
					// Snapshot and truncate, so crashes also land around
					// range deletions and their compactions.
					if err = l.CreateSnapshot(b, next[g]-5, nil, []byte("snap")); err == nil {
						err = l.Compact(b, next[g]-10)
					}
				}
				if err != nil {
					failed <- err
					return
				}
			}
			if err := b.Commit(true); err != nil {
				failed <- err
				return
			}
			b.Close()
			for g := uint64(1); g <= groups; g++ {
				last[g] = next[g]
				durable[g].Store(next[g])
			}
			select {
			case commits <- struct{}{}:
			default:
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	crashes := 12
	if os.Getenv("PARLEY_TEST_LONG") != "" { // make test-long
		crashes = 300
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for crash := 0; crash < crashes; crash++ {
		// Let the writer get a few commits further, then crash wherever it is.
		for range 1 + rng.IntN(20) {
			select {
			case <-commits:
			case err := <-failed:
				t.Fatal(err)
			case <-t.Context().Done():
				t.Fatal("test ended")
			}
		}
		var lower, upper [groups + 1]uint64
		for g := range lower {
			lower[g] = durable[g].Load()
		}
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(uint64(crash), 5))})
		for g := range upper {
			upper[g] = attempted[g].Load()
		}
		checkCrashClone(t, clone, opts, lower, upper)
	}
}

func checkCrashClone(t *testing.T, clone *vfs.MemFS, opts Options, lower, upper [5]uint64) {
	t.Helper()
	opts.FS = clone
	e := openEngine(t, "data", opts)
	defer e.Close()
	for g := uint64(1); g < uint64(len(lower)); g++ {
		l := raftLog(t, e, g)
		first, _ := l.FirstIndex()
		last, _ := l.LastIndex()
		if last < lower[g] {
			t.Fatalf("group %d: last index %d after crash, but %d was synced", g, last, lower[g])
		}
		if last > upper[g] {
			t.Fatalf("group %d: last index %d after crash, but only %d was ever written", g, last, upper[g])
		}
		if last < first {
			continue
		}
		ents, err := l.Entries(first, last+1, ^uint64(0))
		if err != nil {
			t.Fatalf("group %d: Entries(%d, %d): %v", g, first, last+1, err)
		}
		for i, ent := range ents {
			idx := first + uint64(i)
			d := ent.GetData()
			if ent.GetIndex() != idx || ent.GetTerm() != 1 || len(d) == 0 || !bytes.Equal(d, payload(g, idx, 1, len(d))) {
				t.Fatalf("group %d: entry %d torn or foreign: index %d term %d data %q", g, idx, ent.GetIndex(), ent.GetTerm(), trunc(d))
			}
		}
		hs, _, err := l.InitialState()
		if err != nil {
			t.Fatal(err)
		}
		if hs.GetCommit() > last || (lower[g] > 0 && hs.GetCommit() < lower[g]) {
			t.Fatalf("group %d: hard state commit %d, log %d..%d, synced %d", g, hs.GetCommit(), first, last, lower[g])
		}
	}
	// The clone is a working database: it takes new writes.
	l := raftLog(t, e, 1)
	last, _ := l.LastIndex()
	appendEntries(t, e, l, entries(1, last+1, last+3, 1, 10))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
}
