package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// proposeAll proposes per goroutine entries "g<w>-<i>=<i>" from workers
// goroutines, spread over groups, and returns the results by group.
func proposeAll(t *testing.T, ctx context.Context, groups []*Group, workers, per int) map[uint64][]uint64 {
	t.Helper()
	var mu sync.Mutex
	results := make(map[uint64][]uint64)
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			futs := make([]*Future, 0, per)
			gs := make([]*Group, 0, per)
			for i := range per {
				g := groups[(w+i)%len(groups)]
				f, err := g.Propose(ctx, fmt.Appendf(nil, "w%d-%d=%d", w, i, i))
				if err != nil {
					errc <- err
					return
				}
				futs = append(futs, f)
				gs = append(gs, g)
			}
			for i, f := range futs {
				res, err := f.Wait(ctx)
				if err != nil {
					errc <- fmt.Errorf("worker %d proposal %d: %w", w, i, err)
					return
				}
				mu.Lock()
				results[gs[i].ID()] = append(results[gs[i].ID()], res.(uint64))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	return results
}

func TestProposeManyGroupsManyGoroutines(t *testing.T) {
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	h := startHost(t, Config{}, eng)
	defer h.Stop()

	sms := make([]*kv, 4)
	groups := make([]*Group, 4)
	for i := range groups {
		sms[i] = newKV()
		groups[i] = addGroup(t, ctx, h, uint64(i+1), sms[i])
	}
	const workers, per = 32, 100
	results := proposeAll(t, ctx, groups, workers, per)

	total := 0
	for i, g := range groups {
		res := results[g.ID()]
		slices.Sort(res)
		// Every proposal applied exactly once: results are 1..n.
		for j, r := range res {
			if r != uint64(j+1) {
				t.Fatalf("group %d: results %v are not 1..%d", g.ID(), res, len(res))
			}
		}
		data, count := sms[i].state()
		if count != uint64(len(res)) || len(data) != len(res) {
			t.Fatalf("group %d: state has %d keys, count %d; want %d", g.ID(), len(data), count, len(res))
		}
		total += len(res)
	}
	if total != workers*per {
		t.Fatalf("%d results, want %d", total, workers*per)
	}
	m := h.Metrics()
	t.Logf("metrics: %+v", m)
	if m.EntriesPerFsync <= 1 {
		t.Errorf("entries per fsync %.2f: want > 1 under concurrent load (group commit)", m.EntriesPerFsync)
	}
	if m.Proposals != workers*per || m.Groups != 4 {
		t.Errorf("metrics %+v: want %d proposals, 4 groups", m, workers*per)
	}
	for _, g := range groups {
		if !g.IsLeader() {
			t.Errorf("group %d: leader %d, want this node", g.ID(), g.Leader())
		}
	}
}

func TestProposeAsyncCallback(t *testing.T) {
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	h := startHost(t, Config{}, eng)
	defer h.Stop()
	g := addGroup(t, ctx, h, 7, newKV())

	const n = 500
	done := make(chan uint64, n)
	for i := range n {
		err := g.ProposeAsync(fmt.Appendf(nil, "k%d=v", i), func(res any, err error) {
			if err != nil {
				t.Errorf("proposal %d: %v", i, err)
				done <- 0
				return
			}
			done <- res.(uint64)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Proposals of one goroutine apply in the order proposed.
	for i := range n {
		select {
		case r := <-done:
			if r != uint64(i+1) {
				t.Fatalf("result %d is %d: out of order", i, r)
			}
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
}

// An entry proposed in place gets its header in the room left for it, and the state machine
// sees exactly the bytes after that room; mixed with ordinary proposals, the order holds.
func TestProposeAsyncInPlace(t *testing.T) {
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	h := startHost(t, Config{}, eng)
	defer h.Stop()
	sm := newKV()
	g := addGroup(t, ctx, h, 9, sm)

	if err := g.ProposeAsyncInPlace(make([]byte, EntryHeaderRoom-1), nil); err == nil {
		t.Fatal("an entry shorter than the header room was accepted")
	}
	const n = 100
	done := make(chan uint64, n)
	for i := range n {
		cb := func(res any, err error) {
			if err != nil {
				t.Errorf("proposal %d: %v", i, err)
				done <- 0
				return
			}
			done <- res.(uint64)
		}
		var err error
		if i%2 == 0 {
			entry := fmt.Appendf(make([]byte, EntryHeaderRoom), "p%d=v%d", i, i)
			err = g.ProposeAsyncInPlace(entry, cb)
		} else {
			err = g.ProposeAsync(fmt.Appendf(nil, "p%d=v%d", i, i), cb)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		select {
		case r := <-done:
			if r != uint64(i+1) {
				t.Fatalf("result %d is %d: out of order", i, r)
			}
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	for i := range n {
		if v, ok := sm.get(fmt.Sprintf("p%d", i)); !ok || v != fmt.Sprintf("v%d", i) {
			t.Fatalf("p%d = %q %v after apply", i, v, ok)
		}
	}
}

func TestRestartRecoversSnapshotAndLog(t *testing.T) {
	t.Run("snapshots", func(t *testing.T) { testRestart(t, 50) })
	t.Run("log only", func(t *testing.T) { testRestart(t, DefaultSnapshotEntries) })
}

func testRestart(t *testing.T, snapshotEntries uint64) {
	ctx := testContext(t)
	dir := t.TempDir()
	cfg := Config{SnapshotEntries: snapshotEntries}
	compacts := snapshotEntries < 100

	eng := openEngine(t, dir, vfs.Default)
	h := startHost(t, cfg, eng)
	sms := []*kv{newKV(), newKV(), newKV()}
	var groups []*Group
	for i, sm := range sms {
		groups = append(groups, addGroup(t, ctx, h, uint64(10+i), sm))
	}
	proposeAll(t, ctx, groups, 8, 73) // not a multiple of 50: a log tail after the snapshot
	// Each group applied more than SnapshotEntries: each compacts its log
	// (at the end of the cycle that applied the entries, so perhaps just
	// after the futures completed).
	for _, g := range groups {
		rl, err := eng.RaftLog(g.ID())
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, fmt.Sprintf("group %d to compact its log", g.ID()), func() bool {
			first, err := rl.FirstIndex()
			if err != nil {
				t.Fatal(err)
			}
			return !compacts || first > 1
		})
	}
	h.Stop()
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}

	eng = openEngine(t, dir, vfs.Default)
	defer eng.Close()
	h = startHost(t, cfg, eng)
	defer h.Stop()
	stored, err := h.StoredGroups()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(stored, []uint64{10, 11, 12}) {
		t.Fatalf("stored groups %v", stored)
	}
	for i, old := range sms {
		sm := newKV()
		g := addGroup(t, ctx, h, uint64(10+i), sm)
		wantData, wantCount := old.state()
		gotData, gotCount := sm.state()
		if gotCount != wantCount || !maps.Equal(gotData, wantData) {
			t.Fatalf("group %d recovered %d entries (%d keys), want %d (%d keys)",
				g.ID(), gotCount, len(gotData), wantCount, len(wantData))
		}
		// And it goes on from there.
		f, err := g.Propose(ctx, []byte("after=restart"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := f.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.(uint64) != wantCount+1 {
			t.Fatalf("group %d: first result after restart %v, want %d", g.ID(), res, wantCount+1)
		}
	}
}

func TestRemoveGroupDestroysData(t *testing.T) {
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	h := startHost(t, Config{}, eng)
	defer h.Stop()
	keep := addGroup(t, ctx, h, 1, newKV())
	gone := addGroup(t, ctx, h, 2, newKV())
	proposeAll(t, ctx, []*Group{keep, gone}, 4, 10)

	if err := h.RemoveGroup(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := gone.Propose(ctx, []byte("x=y")); !errors.Is(err, ErrGroupRemoved) {
		t.Fatalf("propose to removed group: %v, want ErrGroupRemoved", err)
	}
	stored, err := h.StoredGroups()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(stored, []uint64{1}) {
		t.Fatalf("stored groups after remove: %v", stored)
	}
	if err := h.RemoveGroup(ctx, 2); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("second remove: %v, want ErrUnknownGroup", err)
	}
	// The id can be reused: a new, empty group.
	sm := newKV()
	again := addGroup(t, ctx, h, 2, sm)
	if _, count := sm.state(); count != 0 {
		t.Fatalf("re-added group has %d entries", count)
	}
	f, err := again.Propose(ctx, []byte("a=b"))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := f.Wait(ctx); err != nil || res.(uint64) != 1 {
		t.Fatalf("re-added group result %v, %v", res, err)
	}
	if _, err := h.AddGroup(ctx, 1, newKV()); !errors.Is(err, ErrGroupExists) {
		t.Fatalf("AddGroup of a running group: %v, want ErrGroupExists", err)
	}
}

func TestStopFailsWaitingProposals(t *testing.T) {
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	h := startHost(t, Config{}, eng)
	g := addGroup(t, ctx, h, 1, newKV())
	var futs []*Future
	for i := range 200 {
		f, err := g.Propose(ctx, fmt.Appendf(nil, "k%d=v", i))
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
	}
	h.Stop()
	// Every future completes: applied before the stop, or ErrStopped.
	for _, f := range futs {
		if _, err := f.Wait(ctx); err != nil && !errors.Is(err, ErrStopped) {
			t.Fatalf("future after stop: %v", err)
		}
	}
	if _, err := g.Propose(ctx, []byte("k=v")); !errors.Is(err, ErrStopped) {
		t.Fatalf("propose after stop: %v, want ErrStopped", err)
	}
	if _, err := h.AddGroup(ctx, 2, newKV()); !errors.Is(err, ErrStopped) {
		t.Fatalf("AddGroup after stop: %v, want ErrStopped", err)
	}
}

func TestConfigValidation(t *testing.T) {
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	for _, cfg := range []Config{
		{},
		{NodeID: 1, Peers: map[uint64]string{2: "x"}},
		{NodeID: 1, ElectionTicks: 2, HeartbeatTicks: 2},
	} {
		if _, err := NewHost(cfg, eng, nil); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewHost(%+v): %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

// TestIdleGroupsCostNothing: once every lone group leads and nothing is
// proposed, ticks go by without ticking a group or running a Ready cycle.
func TestIdleGroupsCostNothing(t *testing.T) {
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	h := startHost(t, Config{TickInterval: time.Millisecond}, eng)
	defer h.Stop()
	var groups []*Group
	for i := range 200 {
		groups = append(groups, addGroup(t, ctx, h, uint64(i+1), newKV()))
	}
	waitFor(t, ctx, "every group to lead", func() bool {
		for _, g := range groups {
			if !g.IsLeader() {
				return false
			}
		}
		return true
	})
	// Let the loop settle: the cycle that made the last leader may still
	// be finishing, and each leader applies its term's first entry after.
	waitFor(t, ctx, "every group serving", func() bool {
		for _, g := range groups {
			if !g.Serving() {
				return false
			}
		}
		return true
	})
	waitFor(t, ctx, "a few ticks", func() bool { return h.Metrics().Ticks > 5 })
	before := h.Metrics()
	waitFor(t, ctx, "20 more ticks", func() bool { return h.Metrics().Ticks >= before.Ticks+20 })
	after := h.Metrics()
	if after.GroupTicks != before.GroupTicks || after.ReadyCycles != before.ReadyCycles {
		t.Fatalf("idle groups did work: before %+v, after %+v", before, after)
	}
}
