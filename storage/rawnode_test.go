package storage

import (
	"fmt"
	"slices"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// TestRaftNodeOverRaftLog drives a real single-voter raft.RawNode with a
// RaftLog as its Storage through the Ready loop the cluster host runs,
// restarts it from disk, and checks that what was proposed before and after
// the restart is in the log, in order. It also shows the bootstrap raft
// recommends: a snapshot at index 1 carrying the initial ConfState.
func TestRaftNodeOverRaftLog(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, testOptions(nil))
	l := raftLog(t, e, 1)
	write(t, e, func(b *Batch) error {
		return l.ApplySnapshot(b, &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
			Index: new(uint64(1)), Term: new(uint64(1)), ConfState: &raftpb.ConfState{Voters: []uint64{1}},
		}})
	})

	var applied []string
	propose := func(e *Engine, l *RaftLog, from, to int) {
		t.Helper()
		rn, err := raft.NewRawNode(&raft.Config{
			ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: l,
			MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256, Applied: l.Applied(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := rn.Campaign(); err != nil {
			t.Fatal(err)
		}
		next := from
		for steps := 0; len(applied) < to; steps++ {
			if steps > 10000 {
				t.Fatalf("no progress: applied %d of %d", len(applied), to)
			}
			if rn.BasicStatus().RaftState == raft.StateLeader && next < to {
				// Several proposals per Ready: one batch, one fsync.
				for k := 0; k < 3 && next < to; k++ {
					if err := rn.Propose([]byte(fmt.Sprintf("msg-%d", next))); err != nil {
						t.Fatal(err)
					}
					next++
				}
			}
			if !rn.HasReady() {
				continue
			}
			rd := rn.Ready()
			b := e.NewBatch()
			if !raft.IsEmptySnap(rd.Snapshot) {
				if err := l.ApplySnapshot(b, rd.Snapshot); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Append(b, rd.Entries); err != nil {
				t.Fatal(err)
			}
			if !raft.IsEmptyHardState(rd.HardState) {
				if err := l.SetHardState(b, rd.HardState); err != nil {
					t.Fatal(err)
				}
			}
			for _, ent := range rd.CommittedEntries {
				if ent.GetType() == raftpb.EntryNormal && len(ent.GetData()) > 0 {
					applied = append(applied, string(ent.GetData()))
				}
			}
			if n := len(rd.CommittedEntries); n > 0 {
				if err := l.SetApplied(b, rd.CommittedEntries[n-1].GetIndex()); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.Commit(rd.MustSync); err != nil {
				t.Fatal(err)
			}
			b.Close()
			rn.Advance(rd)
		}
	}
	propose(e, l, 0, 50)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e = openEngine(t, dir, testOptions(nil))
	defer e.Close()
	l = raftLog(t, e, 1)
	propose(e, l, 50, 100)

	var want []string
	for i := range 100 {
		want = append(want, fmt.Sprintf("msg-%d", i))
	}
	if !slices.Equal(applied, want) {
		t.Fatalf("applied %v", applied)
	}
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	ents, err := l.Entries(first, last+1, ^uint64(0))
	if err != nil {
		t.Fatal(err)
	}
	var logged []string
	for _, ent := range ents {
		if len(ent.GetData()) > 0 {
			logged = append(logged, string(ent.GetData()))
		}
	}
	if !slices.Equal(logged, want) {
		t.Fatalf("log holds %v", logged)
	}
}
