package cluster

// Replicas: groups a node keeps for the cluster before it serves them itself.
//
// The broker drives a group's state machine on the node that serves the group's clients. Every
// other voter must still keep the group's log (and vote), or there is no majority to commit to
// and nothing to fail over to. AddReplica runs such a group "parked": its log is replicated,
// fsynced and acknowledged like any other, and its committed entries are handed to a stand-in
// state machine. A stand-in that is the real state machine minus its side effects (the broker
// gives a queue's log state machine, which applies but delivers nothing) is snapshotted and its
// log compacted exactly as on the serving node, so a standby reclaims the space of consumed
// messages too: without that, a standby's log would keep every message ever published. A nil
// stand-in sees nothing and no snapshot is taken, so the stored log plus the last snapshot
// received keep everything a real state machine needs.
//
// When the node takes the group over, the broker calls AddGroup as it always does; for a
// parked group that adopts it in place: the real state machine is restored from the stored
// snapshot (the stand-in's own, or one received from the leader: either is a snapshot of the
// same state machine) and every entry after it up to the applied index is replayed into it, on
// the loop
// (nothing else of the group moves meanwhile). The raft node keeps running, so nothing is
// re-elected. AddGroup then asks for the group's leadership and returns once this node leads
// it and has applied an entry of its own term: only then is every entry committed by earlier
// leaders in the state machine, which the broker reads once, right after AddGroup, to rebuild
// the queue (a confirmed message must not be missing from it).
//
// A LogKeeper (a deep queue, whose snapshot omits the bodies it reads back from the log) is
// adopted the same way: AttachLog before Restore. A LogKeeper stand-in keeps what its own
// snapshots leave in the log (KeepFrom), and a snapshot a replica installs from the leader
// carries the kept bodies (TransferSnapshot, logkeeper.go).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// AddReplica starts group id parked, with sm (which may be nil) as a stand-in state machine
// that sees the committed entries until AddGroup adopts the group. The group is recovered or
// bootstrapped as AddGroup does.
func (h *Host) AddReplica(ctx context.Context, id uint64, sm StateMachine) (*Group, error) {
	return h.addGroup(ctx, id, sm, true, h.bootstrapVoters)
}

// AddReplicaWith is AddReplica for a group whose first configuration must be voters (when the
// group is new here; nil: none, as AddFollower), not the record as it is now: the record as it
// was at the membership group's entry that created the group, taken with BootstrapVoters when
// that entry applied. The node that created the group bootstrapped it with the record in force
// where that entry is in the log (LockMembership), so every copy starts alike even when a Join
// or Leave has changed the record since.
func (h *Host) AddReplicaWith(ctx context.Context, id uint64, sm StateMachine, voters []uint64) (*Group, error) {
	voters = slices.Clone(voters)
	return h.addGroup(ctx, id, sm, true, func() []uint64 { return voters })
}

// AddFollower is AddReplica for a group this node did not see created: it never writes the
// group's first configuration itself, it waits for the group's leader to send it (by log or
// snapshot). A node must bootstrap a group only with the members in force when the group was
// created (membership.go); a node that learns of an older group (it joined later, or replays
// its metadata after a restart) does not know them.
func (h *Host) AddFollower(ctx context.Context, id uint64, sm StateMachine) (*Group, error) {
	return h.addGroup(ctx, id, sm, true, nil)
}

// Park turns a running group back into a replica: its state machine is dropped (replaced by
// sm, which may be nil; a stand-in is restored from the group's stored snapshot and the entries
// after it, as an adopted state machine is), its pending proposals fail with ErrDropped.
func (h *Host) Park(ctx context.Context, id uint64, sm StateMachine) error {
	return h.do(ctx, func() error {
		g := h.running[id]
		if g == nil {
			return fmt.Errorf("park group %d: %w", id, ErrUnknownGroup)
		}
		if sm != nil {
			if err := h.replay(g, sm); err != nil {
				return fmt.Errorf("park group %d: %w", id, err)
			}
		}
		h.unquiesce(g)
		g.parked = true
		g.setSM(sm)
		g.failInflight(fmt.Errorf("%w: group parked", ErrDropped))
		return nil
	})
}

// adopt gives a parked group its real state machine (see the file comment).
func (h *Host) adopt(ctx context.Context, g *Group, sm StateMachine) (*Group, error) {
	if !g.isRecovered() {
		select {
		case <-g.recovered:
		case <-ctx.Done():
			return nil, fmt.Errorf("adopt group %d: %w", g.id, ctx.Err())
		}
	}
	err := h.do(ctx, func() error {
		if g.removed {
			return ErrGroupRemoved
		}
		if !g.parked {
			return ErrGroupExists
		}
		if err := h.replay(g, sm); err != nil {
			return err
		}
		g.setSM(sm)
		g.parked = false
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("adopt group %d: %w", g.id, err)
	}
	// Lead it, and have applied what earlier leaders committed. A group removed meanwhile (its
	// queue deleted) will never be led: give up at once rather than at ctx's end.
	for !g.serving.Load() {
		if g.Leader() != h.cfg.NodeID {
			err := h.do(ctx, func() error {
				if g.removed {
					return ErrGroupRemoved
				}
				if g.lead != h.cfg.NodeID {
					h.unquiesce(g)
					g.rn.TransferLeader(h.cfg.NodeID)
					h.markDirty(g)
				}
				return nil
			})
			if errors.Is(err, ErrGroupRemoved) {
				return nil, fmt.Errorf("adopt group %d: waiting to lead it: %w", g.id, err)
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("adopt group %d: waiting to lead it: %w", g.id, ctx.Err())
		case <-h.donec:
			return nil, fmt.Errorf("adopt group %d: %w", g.id, h.stoppedErr())
		case <-time.After(20 * time.Millisecond):
		}
	}
	h.log.Debug("group adopted", zap.Uint64("group", g.id), zap.Uint64("applied", g.Applied()))
	return g, nil
}

// replay restores sm from the group's stored snapshot and applies the stored entries after it
// up to what the group has applied; loop only.
func (h *Host) replay(g *Group, sm StateMachine) error {
	snap, err := g.log.Snapshot()
	if err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	if k, ok := sm.(LogKeeper); ok {
		k.AttachLog(LogReader{log: g.log})
	}
	next := uint64(1)
	if !raft.IsEmptySnap(snap) {
		if err := sm.Restore(snap.GetData()); err != nil {
			return fmt.Errorf("restore snapshot at %d: %w", snap.GetMetadata().GetIndex(), err)
		}
		next = snap.GetMetadata().GetIndex() + 1
	}
	if first, err := g.log.FirstIndex(); err == nil && first > next {
		next = first
	}
	for next <= g.applied {
		ents, err := g.log.Entries(next, g.applied+1, 4<<20)
		if err != nil {
			return fmt.Errorf("read entries from %d: %w", next, err)
		}
		if len(ents) == 0 {
			return fmt.Errorf("no entry at %d", next)
		}
		for _, e := range ents {
			if data := e.GetData(); len(data) > 0 && e.GetType() == raftpb.EntryNormal {
				if _, _, payload, ok := decodeEntry(data); ok {
					sm.Apply(e.GetIndex(), payload)
				}
			}
			next = e.GetIndex() + 1
		}
	}
	return nil
}

// Serving reports whether this node leads the group and has applied every entry committed
// before its term: what a node needs before it serves the group's clients.
func (g *Group) Serving() bool { return g.serving.Load() }

// TransferLeadership asks the group's leader to hand leadership to node to. It returns at
// once; watch Leader.
func (h *Host) TransferLeadership(ctx context.Context, id, to uint64) error {
	return h.do(ctx, func() error {
		g := h.running[id]
		if g == nil {
			return fmt.Errorf("transfer leadership of group %d: %w", id, ErrUnknownGroup)
		}
		h.unquiesce(g)
		g.rn.TransferLeader(to)
		h.markDirty(g)
		return nil
	})
}

// GroupStatus is what a node knows of one of its groups.
type GroupStatus struct {
	ID      uint64 `json:"id"`
	Leader  uint64 `json:"leader"`
	Term    uint64 `json:"term"`
	Commit  uint64 `json:"commit"`
	Applied uint64 `json:"applied"`
	Parked  bool   `json:"parked"`
	// Voters and Learners are the group's configuration as this node applied it.
	Voters   []uint64 `json:"voters"`
	Learners []uint64 `json:"learners,omitempty"`
	// Lag is, on the leader, how many entries each follower's log is behind the leader's last
	// index, by node id.
	Lag map[uint64]uint64 `json:"lag,omitempty"`
	// Quiesced: the group does not tick (quiesce.go). Lease: this node leads it and holds its
	// lease (lease.go).
	Quiesced bool `json:"quiesced,omitempty"`
	Lease    bool `json:"lease,omitempty"`
}

// Status reports every running group.
func (h *Host) Status(ctx context.Context) ([]GroupStatus, error) {
	var out []GroupStatus
	err := h.do(ctx, func() error {
		out = make([]GroupStatus, 0, len(h.running))
		for _, g := range h.running {
			st := g.rn.Status()
			gs := GroupStatus{
				ID: g.id, Leader: g.lead, Term: st.HardState.GetTerm(), Commit: st.HardState.GetCommit(),
				Applied: g.applied, Parked: g.parked, Quiesced: g.quiesced, Lease: g.HasLease(),
				Voters: slices.Clone(g.confState.GetVoters()), Learners: slices.Clone(g.confState.GetLearners()),
			}
			if g.lead == h.cfg.NodeID && len(st.Progress) > 1 {
				last := st.Progress[h.cfg.NodeID].Match
				if l, err := g.log.LastIndex(); err == nil {
					last = max(last, l)
				}
				gs.Lag = map[uint64]uint64{}
				for id, pr := range st.Progress {
					if id != h.cfg.NodeID {
						gs.Lag[id] = last - min(last, pr.Match)
					}
				}
			}
			out = append(out, gs)
		}
		return nil
	})
	return out, err
}
