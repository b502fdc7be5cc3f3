package cluster

import (
	"context"
	"fmt"

	"go.etcd.io/raft/v3"
)

// Taking a group's lead without losing a proposal.
//
// A leadership transfer drops what is in flight: the old leader refuses proposals while it
// transfers, and a follower fails the proposals it forwarded when the leader changes
// (noteSoftState), so a publisher would see a nack. TakeLead asks for the lead only while this
// node has nothing of the group in flight or queued, and then holds the group's new proposals
// here (queued, as while no leader is known) until this node leads, or for an election timeout
// (raft gives a transfer up after one), after which they go to whoever leads.

// TakeLead asks group id's leader to hand its leadership to this node, if this node does not
// lead it, a leader is known, and nothing this node proposed to the group is in flight or
// queued. It reports whether it asked; watch Leader. It returns at once.
func (h *Host) TakeLead(ctx context.Context, id uint64) (bool, error) {
	asked := false
	err := h.do(ctx, func() error {
		g := h.running[id]
		if g == nil {
			return fmt.Errorf("take the lead of group %d: %w", id, ErrUnknownGroup)
		}
		self := h.cfg.NodeID
		if g.removed || g.lead == self || g.lead == raft.None || g.takingLead != 0 ||
			len(g.inflight) > 0 || g.queued.Load() || g.queue.pending() {
			return nil
		}
		g.takingLead = h.m.ticks.Load() + uint64(h.cfg.ElectionTicks)
		h.takers = append(h.takers, g)
		h.unquiesce(g)
		g.rn.TransferLeader(self)
		h.markDirty(g)
		asked = true
		return nil
	})
	return asked, err
}

// pending reports whether proposals are queued (lazy ones included); any goroutine.
func (q *proposalQueue) pending() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.props) > 0
}

// holding reports whether g's proposals wait here for this node to take the lead; loop only.
func (h *Host) holding(g *Group) bool {
	return g.takingLead != 0 && g.lead != h.cfg.NodeID
}

// endTakeLead stops holding g's proposals and lists it again if some are queued; loop only.
func (h *Host) endTakeLead(g *Group) {
	if g.takingLead == 0 {
		return
	}
	g.takingLead = 0
	if g.queued.Load() {
		h.inMu.Lock()
		h.proposers = append(h.proposers, g)
		h.inMu.Unlock()
		h.poke()
	}
}

// expireTakeLead ends the holds that ran out (the transfer did not happen); loop only, at each
// tick.
func (h *Host) expireTakeLead(now uint64) {
	keep := h.takers[:0]
	for _, g := range h.takers {
		switch {
		case g.takingLead == 0:
		case now >= g.takingLead || g.removed:
			h.endTakeLead(g)
		default:
			keep = append(keep, g)
		}
	}
	clear(h.takers[len(keep):])
	h.takers = keep
}
