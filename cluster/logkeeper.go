package cluster

import (
	"errors"
	"fmt"

	"github.com/parleymq/parley/storage"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// ErrCompacted is returned by LogReader.Read for an index the log no longer
// holds: a snapshot covered it and the log was compacted past it.
var ErrCompacted = errors.New("cluster: log entry compacted")

// LogKeeper is a StateMachine whose snapshot does not hold all of its state:
// part of it stays in the log and is read back from there. A durable queue's
// message bodies are the example: the log is the message store (DESIGN.md §4),
// so a snapshot lists the live messages and the log keeps their bodies, and a
// queue a million messages deep neither holds them in memory nor copies them
// into every snapshot.
//
// The host asks KeepFrom right after each Snapshot and compacts the log no
// further than the entry before it, so every entry the state machine may still
// read survives. The state machine chooses what to keep: copying a few old
// entries into the snapshot (and keeping them elsewhere) lets the log shrink
// past them, so they do not pin it.
//
// A snapshot sent to another node must stand on its own: the node installing
// it has no log below it. So before the host sends one, TransferSnapshot turns
// the stored snapshot into one that includes what it left in the log.
type LogKeeper interface {
	StateMachine
	// AttachLog hands over a reader of the group's log, once, before Restore
	// or the first Apply.
	AttachLog(r LogReader)
	// KeepFrom is the lowest index the state machine will still read back,
	// as of the Snapshot just taken; 0 when it needs no entry.
	KeepFrom() uint64
	// SnapshotInterval is how many entries the state machine would like
	// applied between two snapshots, when its snapshots are large; the host
	// takes the larger of it and Config.SnapshotEntries. A longer interval
	// makes a restart replay more entries.
	SnapshotInterval() uint64
	// TransferSnapshot returns the snapshot data taken at index, as stored,
	// completed with whatever of the log below index it relies on, for a
	// node that installs it with no log of its own. It runs on the host's
	// loop and may read the log.
	TransferSnapshot(data []byte, index uint64) ([]byte, error)
}

// transferSnapshots completes the snapshots of a LogKeeper's outgoing MsgSnap
// messages (see LogKeeper.TransferSnapshot) and returns the messages to send.
// A snapshot that cannot be completed is not sent, and raft hears that the
// send failed, so it tries again later.
func (h *Host) transferSnapshots(g *Group, msgs []*raftpb.Message) []*raftpb.Message {
	k := g.keeper
	if k == nil {
		return msgs
	}
	out := msgs[:0]
	for _, m := range msgs {
		snap := m.GetSnapshot()
		if m.GetType() != raftpb.MsgSnap || snap == nil {
			out = append(out, m)
			continue
		}
		data, err := k.TransferSnapshot(snap.GetData(), snap.GetMetadata().GetIndex())
		if err != nil {
			h.log.Error("snapshot for a follower cannot be completed; not sent",
				zap.Uint64("group", g.id), zap.Uint64("to", m.GetTo()), zap.Error(err))
			g.rn.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
			continue
		}
		// A new Snapshot, not a change to the one raft read from storage; the
		// message itself is ours once raft has handed it out.
		m.Snapshot = &raftpb.Snapshot{Data: data, Metadata: snap.GetMetadata()}
		out = append(out, m)
	}
	return out
}

// LogReader reads back entries of a group's log, from any goroutine.
type LogReader struct {
	log *storage.RaftLog
}

// Read calls fn with the index and payload of each proposal in [lo, hi) that
// the log holds, in order, reading about maxBytes at most but at least one
// entry, and returns the index after the last entry read. Entries that carry
// no proposal (a leader's empty entry, configuration changes) are skipped. fn
// may keep data. Indexes above the last one in the log are not read; only
// entries the group has applied are meaningful to its state machine.
func (r LogReader) Read(lo, hi, maxBytes uint64, fn func(index uint64, data []byte)) (next uint64, err error) {
	if r.log == nil {
		return lo, fmt.Errorf("read log [%d,%d): %w", lo, hi, ErrUnknownGroup)
	}
	last, err := r.log.LastIndex()
	if err != nil {
		return lo, fmt.Errorf("read log: %w", err)
	}
	hi = min(hi, last+1)
	if lo >= hi {
		return lo, nil
	}
	ents, err := r.log.Entries(lo, hi, maxBytes)
	if errors.Is(err, raft.ErrCompacted) {
		return lo, fmt.Errorf("read log at %d: %w", lo, ErrCompacted)
	}
	if err != nil {
		return lo, fmt.Errorf("read log [%d,%d): %w", lo, hi, err)
	}
	next = lo
	for _, e := range ents {
		next = e.GetIndex() + 1
		if e.GetType() != raftpb.EntryNormal {
			continue
		}
		if _, _, data, ok := decodeEntry(e.GetData()); ok {
			fn(e.GetIndex(), data)
		}
	}
	return next, nil
}
