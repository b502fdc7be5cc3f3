package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// keeper is a kv that needs the log from keep on, and reads entries back through its reader.
type keeper struct {
	*kv
	reader   LogReader
	attached bool
	keep     atomic.Uint64
	interval uint64
}

func (k *keeper) AttachLog(r LogReader)    { k.reader, k.attached = r, true }
func (k *keeper) KeepFrom() uint64         { return k.keep.Load() }
func (k *keeper) SnapshotInterval() uint64 { return k.interval }
func (k *keeper) read(i uint64) (string, error) {
	var got string
	_, err := k.reader.Read(i, i+1, 1, func(_ uint64, data []byte) { got = string(data) })
	return got, err
}

// The host compacts a LogKeeper's log no further than KeepFrom, and the state machine reads
// its entries back; past KeepFrom, compaction goes on as usual.
func TestLogKeeperPinsTheLog(t *testing.T) {
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	h := startHost(t, Config{SnapshotEntries: 20, SnapshotCatchUpEntries: 1}, eng)
	defer h.Stop()
	k := &keeper{kv: newKV()}
	g := addGroup(t, ctx, h, 7, k)
	if !k.attached {
		t.Fatal("AttachLog was not called before the group ran")
	}
	propose := func(from, n int) (last uint64) {
		for i := from; i < from+n; i++ {
			f, err := g.Propose(ctx, fmt.Appendf(nil, "k%d=v%d", i, i))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return g.Applied()
	}
	first := propose(0, 1) // the entry to keep
	k.keep.Store(first)
	propose(1, 200)
	if got, err := k.read(first); err != nil || got != "k0=v0" {
		t.Fatalf("reading the kept entry %d: %q %v", first, got, err)
	}
	rl, _ := eng.RaftLog(7)
	if fi, _ := rl.FirstIndex(); fi > first {
		t.Fatalf("the log starts at %d, past the kept entry %d", fi, first)
	}
	// Released: the next snapshot compacts past it, and reading it says so.
	k.keep.Store(0)
	propose(201, 40)
	waitFor(t, ctx, "the log to be compacted past the released entry", func() bool {
		fi, _ := rl.FirstIndex()
		return fi > first
	})
	if _, err := k.read(first); !errors.Is(err, ErrCompacted) {
		t.Fatalf("reading a compacted entry: %v, want ErrCompacted", err)
	}
}

// A LogKeeper's SnapshotInterval stretches the snapshot interval beyond SnapshotEntries.
func TestLogKeeperSnapshotInterval(t *testing.T) {
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	h := startHost(t, Config{SnapshotEntries: 10}, eng)
	defer h.Stop()
	k := &keeper{kv: newKV(), interval: 1000}
	g := addGroup(t, ctx, h, 8, k)
	for i := range 100 {
		f, err := g.Propose(context.Background(), fmt.Appendf(nil, "k%d=v", i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.Metrics().Snapshots; n != 0 {
		t.Fatalf("%d snapshots in 100 entries with an interval of 1000", n)
	}
}
