package storage

import (
	"errors"
	"math/rand/v2"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func TestRaftLogRoundTripAndRestart(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, testOptions(nil))
	l := raftLog(t, e, 7)
	if again := raftLog(t, e, 7); again != l {
		t.Fatal("RaftLog returned two instances for one group")
	}

	hs, cs, err := l.InitialState()
	if err != nil || hs != nil || cs == nil || len(cs.GetVoters()) != 0 {
		t.Fatalf("fresh InitialState = %v %v %v", hs, cs, err)
	}
	if fi, _ := l.FirstIndex(); fi != 1 {
		t.Fatalf("fresh FirstIndex = %d", fi)
	}
	if li, _ := l.LastIndex(); li != 0 {
		t.Fatalf("fresh LastIndex = %d", li)
	}
	if s, err := l.Snapshot(); err != nil || !raft.IsEmptySnap(s) {
		t.Fatalf("fresh Snapshot = %v %v", s, err)
	}

	want := &raftpb.HardState{Term: new(uint64(3)), Vote: new(uint64(1)), Commit: new(uint64(8))}
	conf := &raftpb.ConfState{Voters: []uint64{1, 2, 3}}
	write(t, e, func(b *Batch) error {
		if err := l.Append(b, entries(7, 1, 11, 3, 100)); err != nil {
			return err
		}
		if err := l.SetHardState(b, want); err != nil {
			return err
		}
		return l.SetApplied(b, 8)
	})
	write(t, e, func(b *Batch) error { return l.CreateSnapshot(b, 6, conf, []byte("state at 6")) })

	check := func(l *RaftLog) {
		t.Helper()
		checkEntries(t, l, 1, 11, 3, 100)
		hs, cs, err := l.InitialState()
		if err != nil || !proto.Equal(hs, want) || !proto.Equal(cs, conf) {
			t.Fatalf("InitialState = %v %v %v", hs, cs, err)
		}
		if a := l.Applied(); a != 8 {
			t.Fatalf("Applied = %d", a)
		}
		s, err := l.Snapshot()
		if err != nil || s.GetMetadata().GetIndex() != 6 || s.GetMetadata().GetTerm() != 3 || string(s.GetData()) != "state at 6" || !proto.Equal(s.GetMetadata().GetConfState(), conf) {
			t.Fatalf("Snapshot = %v %v", s, err)
		}
	}
	check(l)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e = openEngine(t, dir, testOptions(nil))
	defer e.Close()
	check(raftLog(t, e, 7))
	groups, err := e.Groups()
	if err != nil || len(groups) != 1 || groups[0] != 7 {
		t.Fatalf("Groups = %v %v", groups, err)
	}
}

// TestStorageContract checks the raft.Storage rules raft relies on, against
// raft's own MemoryStorage driven through the same random operations.
func TestStorageContract(t *testing.T) {
	for _, cache := range []int{-1, 300, 1 << 20} {
		e := openEngine(t, t.TempDir(), Options{TailCacheBytes: cache, DiskCheckInterval: -1, MemTableSize: 1 << 20})
		l := raftLog(t, e, 1)
		ms := raft.NewMemoryStorage()
		rng := rand.New(rand.NewPCG(uint64(cache+2), 9))
		term := uint64(1)
		for step := 0; step < 400; step++ {
			last, _ := ms.LastIndex()
			first, _ := ms.FirstIndex()
			switch op := rng.IntN(10); {
			case op < 6: // append, sometimes overwriting a suffix with a newer term
				// Raft never overwrites what a snapshot covers (it is committed).
				from := last + 1
				snap, _ := ms.Snapshot()
				low := max(first, snap.GetMetadata().GetIndex()+1)
				if rng.IntN(4) == 0 && last >= low {
					from = low + uint64(rng.IntN(int(last-low+1)))
					term++
				}
				ents := entries(1, from, from+1+uint64(rng.IntN(5)), term, rng.IntN(150))
				if err := ms.Append(ents); err != nil {
					t.Fatal(err)
				}
				appendEntries(t, e, l, ents)
			case op < 8 && last >= first: // snapshot and compact
				snap, _ := ms.Snapshot()
				idx := first + uint64(rng.IntN(int(last-first+1)))
				if idx > snap.GetMetadata().GetIndex() {
					if _, err := ms.CreateSnapshot(idx, &raftpb.ConfState{Voters: []uint64{1}}, []byte("x")); err != nil {
						t.Fatal(err)
					}
					write(t, e, func(b *Batch) error {
						return l.CreateSnapshot(b, idx, &raftpb.ConfState{Voters: []uint64{1}}, []byte("x"))
					})
				}
				snap, _ = ms.Snapshot()
				if c := snap.GetMetadata().GetIndex(); c >= first && rng.IntN(2) == 0 {
					c = first + uint64(rng.IntN(int(c-first+1)))
					if err := ms.Compact(c); err != nil {
						t.Fatal(err)
					}
					write(t, e, func(b *Batch) error { return l.Compact(b, c) })
				}
			}
			compareStorage(t, ms, l, rng)
		}
		// Compacting what is gone is ErrCompacted; beyond the snapshot is refused.
		first, _ := l.FirstIndex()
		b := e.NewBatch()
		mustErr(t, l.Compact(b, first-1), raft.ErrCompacted)
		last, _ := l.LastIndex()
		if snap, _ := l.Snapshot(); snap.GetMetadata().GetIndex() < last {
			mustErr(t, l.Compact(b, last), ErrOutOfRange)
		}
		b.Close() // nothing written: the log stays usable
		if _, err := l.LastIndex(); err != nil {
			t.Fatal(err)
		}
		e.Close()
	}
}

func compareStorage(t *testing.T, ms *raft.MemoryStorage, l *RaftLog, rng *rand.Rand) {
	t.Helper()
	mf, _ := ms.FirstIndex()
	ml, _ := ms.LastIndex()
	lf, _ := l.FirstIndex()
	ll, _ := l.LastIndex()
	if mf != lf || ml != ll {
		t.Fatalf("first/last = %d/%d, MemoryStorage %d/%d", lf, ll, mf, ml)
	}
	for i := mf - 1; i <= ml+1; i++ {
		if mf >= 2 && i == mf-2 {
			continue
		}
		mt, merr := ms.Term(i)
		lt, lerr := l.Term(i)
		if mt != lt || merr != lerr {
			t.Fatalf("Term(%d) = %d %v, MemoryStorage %d %v", i, lt, lerr, mt, merr)
		}
	}
	if mf > 1 {
		if _, err := l.Term(mf - 2); err != raft.ErrCompacted {
			t.Fatalf("Term below first-1 = %v, want ErrCompacted", err)
		}
		if _, err := l.Entries(mf-1, ml+1, ^uint64(0)); err != raft.ErrCompacted {
			t.Fatalf("Entries below first = %v, want ErrCompacted", err)
		}
	}
	if _, err := l.Entries(mf, ml+2, ^uint64(0)); err != raft.ErrUnavailable {
		t.Fatalf("Entries beyond last = %v, want ErrUnavailable", err)
	}
	if ml < mf {
		return
	}
	for k := 0; k < 5; k++ {
		lo := mf + uint64(rng.IntN(int(ml-mf+1)))
		hi := lo + 1 + uint64(rng.IntN(int(ml-lo+1)))
		maxSize := uint64(rng.IntN(600))
		if k == 0 {
			maxSize = ^uint64(0)
		}
		me, merr := ms.Entries(lo, hi, maxSize)
		le, lerr := l.Entries(lo, hi, maxSize)
		if merr != lerr || len(me) != len(le) {
			t.Fatalf("Entries(%d,%d,%d) = %d entries %v, MemoryStorage %d %v", lo, hi, maxSize, len(le), lerr, len(me), merr)
		}
		for i := range me {
			if !proto.Equal(me[i], le[i]) {
				t.Fatalf("Entries(%d,%d)[%d] = %v, MemoryStorage %v", lo, hi, i, le[i], me[i])
			}
		}
		// The caller owns the slice: appending must not corrupt the log.
		_ = append(le, &raftpb.Entry{})
	}
}

func TestAppendTruncatesConflictingSuffix(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, testOptions(nil))
	l := raftLog(t, e, 2)
	appendEntries(t, e, l, entries(2, 1, 21, 1, 64))
	appendEntries(t, e, l, entries(2, 11, 14, 2, 64)) // new leader overwrites 11.. and drops 14..20
	if li, _ := l.LastIndex(); li != 13 {
		t.Fatalf("LastIndex = %d, want 13", li)
	}
	checkEntries(t, l, 1, 11, 1, 64)
	checkEntries(t, l, 11, 14, 2, 64)
	mustErr(t, l.Append(e.NewBatch(), entries(2, 15, 16, 2, 1)), ErrLogGap)
	e.Close()

	e = openEngine(t, dir, testOptions(nil))
	defer e.Close()
	l = raftLog(t, e, 2)
	if li, _ := l.LastIndex(); li != 13 {
		t.Fatalf("after restart LastIndex = %d, want 13 (the dropped suffix came back)", li)
	}
	checkEntries(t, l, 11, 14, 2, 64)
}

func TestTailCacheServesUncommittedAndEvictsCommitted(t *testing.T) {
	e := openEngine(t, t.TempDir(), Options{TailCacheBytes: 1000, DiskCheckInterval: -1})
	defer e.Close()
	l := raftLog(t, e, 3)
	b := e.NewBatch()
	// 50 KB in one batch: far over the cache budget, but none of it is in
	// Pebble yet, so all of it must stay readable.
	if err := l.Append(b, entries(3, 1, 51, 1, 1000)); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, l, 1, 51, 1, 1000)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	b.Close()
	l.mu.Lock()
	cached := len(l.tail)
	l.mu.Unlock()
	if cached > 1 {
		t.Fatalf("%d entries cached after commit, budget allows 1", cached)
	}
	checkEntries(t, l, 1, 51, 1, 1000) // now from Pebble
	if n, err := l.Term(10); err != nil || n != 1 {
		t.Fatalf("Term(10) = %d %v", n, err)
	}
}

func TestAbandonedBatchFailsTheLog(t *testing.T) {
	e := openEngine(t, t.TempDir(), testOptions(nil))
	defer e.Close()
	l := raftLog(t, e, 4)
	other := raftLog(t, e, 5)
	b := e.NewBatch()
	if err := l.Append(b, entries(4, 1, 3, 1, 10)); err != nil {
		t.Fatal(err)
	}
	b.Close()
	_, err := l.LastIndex()
	mustErr(t, err, ErrLogFailed)
	if _, err := other.LastIndex(); err != nil {
		t.Fatalf("untouched log: %v", err)
	}
}

func TestApplySnapshotReplacesLog(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, testOptions(nil))
	l := raftLog(t, e, 9)
	appendEntries(t, e, l, entries(9, 1, 6, 1, 10))
	snap := &raftpb.Snapshot{
		Data:     []byte("leader state"),
		Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(100)), Term: new(uint64(4)), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2}}},
	}
	write(t, e, func(b *Batch) error { return l.ApplySnapshot(b, snap) })
	check := func(l *RaftLog, last uint64) {
		t.Helper()
		if fi, _ := l.FirstIndex(); fi != 101 {
			t.Fatalf("FirstIndex = %d", fi)
		}
		if li, _ := l.LastIndex(); li != last {
			t.Fatalf("LastIndex = %d", li)
		}
		if tm, err := l.Term(100); err != nil || tm != 4 {
			t.Fatalf("Term(snapshot index) = %d %v", tm, err)
		}
		if _, err := l.Term(99); err != raft.ErrCompacted {
			t.Fatalf("Term(99) = %v", err)
		}
		got, err := l.Snapshot()
		if err != nil || !proto.Equal(got, snap) {
			t.Fatalf("Snapshot = %v %v", got, err)
		}
		if l.Applied() != 100 {
			t.Fatalf("Applied = %d", l.Applied())
		}
	}
	check(l, 100)
	b := e.NewBatch()
	err := l.ApplySnapshot(b, snap)
	if !errors.Is(err, raft.ErrSnapOutOfDate) {
		t.Fatalf("re-applying: %v", err)
	}
	b.Close()
	appendEntries(t, e, l, entries(9, 101, 104, 4, 10))
	e.Close()
	e = openEngine(t, dir, testOptions(nil))
	defer e.Close()
	l = raftLog(t, e, 9)
	check(l, 103)
	checkEntries(t, l, 101, 104, 4, 10)
}

func TestDestroyRemovesEverything(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, testOptions(nil))
	for g := uint64(1); g <= 3; g++ {
		l := raftLog(t, e, g)
		write(t, e, func(b *Batch) error {
			if err := l.Append(b, entries(g, 1, 101, 1, 100)); err != nil {
				return err
			}
			if err := l.SetHardState(b, &raftpb.HardState{Term: new(uint64(1)), Commit: new(uint64(100))}); err != nil {
				return err
			}
			if err := l.SetApplied(b, 100); err != nil {
				return err
			}
			return l.CreateSnapshot(b, 50, nil, []byte("s"))
		})
	}
	l2 := raftLog(t, e, 2)
	write(t, e, func(b *Batch) error { return l2.Destroy(b) })
	_, err := l2.LastIndex()
	mustErr(t, err, ErrDestroyed)
	groups, err := e.Groups()
	if err != nil || len(groups) != 2 || groups[0] != 1 || groups[1] != 3 {
		t.Fatalf("Groups = %v %v", groups, err)
	}
	fresh := raftLog(t, e, 2)
	if fresh == l2 {
		t.Fatal("destroyed RaftLog handed out again")
	}
	if li, _ := fresh.LastIndex(); li != 0 {
		t.Fatalf("destroyed group's LastIndex = %d", li)
	}
	e.Close()
	e = openEngine(t, dir, testOptions(nil))
	defer e.Close()
	checkEntries(t, raftLog(t, e, 3), 1, 101, 1, 100)
	if hs, _, _ := raftLog(t, e, 2).InitialState(); hs != nil {
		t.Fatalf("destroyed group's hard state survived: %v", hs)
	}
}
