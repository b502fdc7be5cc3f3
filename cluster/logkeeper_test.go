package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// keeper is a kv that needs the log from keep on, and reads entries back through its reader.
type keeper struct {
	*kv
	reader      LogReader
	attached    bool
	keep        atomic.Uint64
	interval    uint64
	transferred atomic.Int32 // snapshots installed from another node
	where       sync.Map     // command -> the index it was applied at
}

func (k *keeper) AttachLog(r LogReader)    { k.reader, k.attached = r, true }
func (k *keeper) KeepFrom() uint64         { return k.keep.Load() }
func (k *keeper) SnapshotInterval() uint64 { return k.interval }

// TransferSnapshot marks the snapshot, so Restore can tell one that came from another node.
func (k *keeper) TransferSnapshot(data []byte, index uint64) ([]byte, error) {
	return append(fmt.Appendf(nil, "xfer@%d:", index), data...), nil
}

func (k *keeper) Restore(data []byte) error {
	if rest, ok := bytes.CutPrefix(data, []byte("xfer@")); ok {
		_, after, _ := bytes.Cut(rest, []byte(":"))
		k.transferred.Add(1)
		data = after
	}
	return k.kv.Restore(data)
}

// Apply records where each command went, for the test to find its entry.
func (k *keeper) Apply(index uint64, data []byte) any {
	k.where.Store(string(data), index)
	return k.kv.Apply(index, data)
}

func (k *keeper) indexOf(cmd string) uint64 {
	i, _ := k.where.Load(cmd)
	return i.(uint64)
}

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
	propose := func(from, n int) {
		for i := from; i < from+n; i++ {
			f, err := g.Propose(ctx, fmt.Appendf(nil, "k%d=v%d", i, i))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	propose(0, 1) // the entry to keep
	first := k.indexOf("k0=v0")
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

// Large entries bring a snapshot (and the compaction that goes with it) before SnapshotEntries
// of them: a queue fed in bursts writes batch entries of many messages, and 10,000 of those
// were hundreds of megabytes of log kept after every message was consumed. A LogKeeper's
// SnapshotInterval still comes first.
func TestSnapshotMaxLogBytes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval uint64
		want     bool
	}{{"bytes", 0, true}, {"keeper interval first", 1000, false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			eng := openEngine(t, t.TempDir(), vfs.Default)
			defer eng.Close()
			h := startHost(t, Config{SnapshotEntries: 10000, SnapshotMaxLogBytes: 64 << 10}, eng)
			defer h.Stop()
			g := addGroup(t, ctx, h, 8, &keeper{kv: newKV(), interval: tc.interval})
			value := strings.Repeat("v", 8<<10)
			for i := range 20 { // 160 KiB in 20 entries
				f, err := g.Propose(context.Background(), fmt.Appendf(nil, "k%d=%s", i, value))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.Wait(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if n := h.Metrics().Snapshots; (n > 0) != tc.want {
				t.Fatalf("%d snapshots after 20 entries of 8 KiB (SnapshotMaxLogBytes 64 KiB, keeper interval %d); want some: %v",
					n, tc.interval, tc.want)
			}
		})
	}
}

// A follower that fell behind the compacted log gets the leader's snapshot as TransferSnapshot
// completed it, never the stored one.
func TestLogKeeperSnapshotToFollowerIsTransferred(t *testing.T) {
	ctx := testContext(t)
	net := NewLocalNetwork()
	peers := map[uint64]string{1: "n1", 2: "n2", 3: "n3"}
	hosts := map[uint64]*Host{}
	sms := map[uint64]*keeper{}
	groups := map[uint64]*Group{}
	for id := range peers {
		eng := openEngine(t, t.TempDir(), vfs.Default)
		t.Cleanup(func() { _ = eng.Close() })
		h := startHost(t, Config{NodeID: id, Peers: peers, Transport: net.Transport(id),
			TickInterval: 5 * time.Millisecond, SnapshotEntries: 20, SnapshotCatchUpEntries: 1}, eng)
		net.Attach(h)
		hosts[id] = h
		sms[id] = &keeper{kv: newKV()}
		groups[id] = addGroup(t, ctx, h, 100, sms[id])
	}
	t.Cleanup(func() {
		for _, h := range hosts {
			h.Stop()
		}
	})
	var lead uint64
	waitFor(t, ctx, "a leader", func() bool {
		lead = groups[1].Leader()
		return lead != 0 && groups[lead].IsLeader()
	})
	behind := lead%3 + 1
	net.Isolate(behind, true)
	for i := range 80 {
		for {
			// The leader may change meanwhile (a quiesced group's leader woken by the
			// proposal can step down, see quiesce.go): find it, and retry a dropped
			// proposal as a client would.
			waitFor(t, ctx, "a leader on the connected side", func() bool {
				lead = groups[behind%3+1].Leader()
				return lead != 0 && lead != behind && groups[lead].IsLeader()
			})
			f, err := groups[lead].Propose(ctx, fmt.Appendf(nil, "k%d=v", i))
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.Wait(ctx)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrDropped) {
				t.Fatal(err)
			}
		}
	}
	net.Isolate(behind, false)
	waitFor(t, ctx, "the follower to catch up", func() bool {
		v, _ := sms[behind].get("k79")
		return v == "v"
	})
	if sms[behind].transferred.Load() == 0 {
		t.Fatal("the follower caught up without a transferred snapshot")
	}
}

// A group whose only member is this node snapshots and compacts its log once SnapshotLogBytes
// of entries were applied, long before SnapshotEntries (scheduler.go, "Compacting while the
// memtable holds it"); with the bound off it waits for SnapshotEntries.
func TestSnapshotLogBytes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		logBytes int64
		want     bool
	}{{"on", 64 << 10, true}, {"off", -1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			eng := openEngine(t, t.TempDir(), vfs.Default)
			defer eng.Close()
			h := startHost(t, Config{SnapshotEntries: 1 << 20, SnapshotLogBytes: tc.logBytes}, eng)
			defer h.Stop()
			k := &keeper{kv: newKV()}
			g := addGroup(t, ctx, h, 9, k)
			val := bytes.Repeat([]byte{'v'}, 4<<10)
			for i := range 40 { // 160 KiB of entries, one key: the snapshot stays small
				f, err := g.Propose(ctx, append([]byte("k="), val...))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.Wait(ctx); err != nil {
					t.Fatalf("entry %d: %v", i, err)
				}
			}
			rl, _ := eng.RaftLog(9)
			fi, _ := rl.FirstIndex()
			if got := h.Metrics().Snapshots > 0 && fi > 1; got != tc.want {
				t.Fatalf("%d snapshots, log starts at %d after 160 KiB with SnapshotLogBytes %d: compacted %v, want %v",
					h.Metrics().Snapshots, fi, tc.logBytes, got, tc.want)
			}
			if got, _ := k.get("k"); got != string(val) {
				t.Fatalf("state after the snapshots: %d bytes, want %d", len(got), len(val))
			}
		})
	}
}
