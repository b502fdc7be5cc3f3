package cluster

// Lazy proposals: entries that need not cost an fsync of their own.
//
// Every Ready cycle that appends entries ends in one fsync (scheduler.go), whatever the entries
// are. A durable queue proposes two kinds: enqueues, whose publishers wait for the fsync (a
// confirm only after it, DESIGN.md §4), and removals (acks), whose loss in a crash only
// redelivers the messages, which at-least-once allows, and which nobody waits for. Under a
// publish-and-ack load the acks of one batch of deliveries arrive while the enqueue cycle runs
// and, proposed eagerly, got a cycle and an fsync of their own between two enqueue cycles: in
// the 1p/1c persistent benchmark a quarter of all fsyncs wrote nothing but removals, and every
// publish arriving meanwhile waited for that fsync too (docs/performance.md, run 9).
//
// A lazy proposal (Group.ProposeLazy) is therefore held in its group's queue while the loop
// has nothing else to propose: it goes to raft with the next eager proposal of any group (the
// same cycle, the same fsync), or once Config.LazyProposalDelay has passed since it was
// queued. It is still written and fsynced before raft counts it, like every entry: nothing
// about raft's durability changes (a leader never acknowledges an entry it has not synced),
// only when the entry is proposed. Entries of one group keep their order, since a group's
// queue goes to raft whole.

import "time"

// holdLazy decides, for the groups with proposals queued this turn, whether to leave them
// queued because every one of them is lazy and none is due. Held groups go on h.held and
// are looked at again every turn (takeProposals merges them), and when the earliest of them
// is due, h.lazyTimer wakes the loop.
func (h *Host) holdLazy(gs []*Group) bool {
	if h.cfg.LazyProposalDelay < 0 || len(gs) == 0 {
		return false
	}
	now := time.Now()
	var due time.Time
	for _, g := range gs {
		if g.removed || g.lead == 0 {
			continue // left to takeProposals (queued until a leader is known)
		}
		q := &g.queue
		q.mu.Lock()
		eager, since := q.eager, q.lazySince
		q.mu.Unlock()
		if eager > 0 {
			return false
		}
		if since.IsZero() {
			continue
		}
		at := since.Add(h.cfg.LazyProposalDelay)
		if !now.Before(at) {
			return false
		}
		if due.IsZero() || at.Before(due) {
			due = at
		}
	}
	if due.IsZero() {
		return false // nothing lazy waiting (empty queues): nothing to hold
	}
	held := h.held[:0]
	for _, g := range gs {
		if g.removed || g.lead == 0 {
			continue
		}
		q := &g.queue
		q.mu.Lock()
		if q.eager > 0 {
			// Queued since the look above: propose everything now. The groups already
			// cleared are still in gs, so takeProposals takes them.
			q.mu.Unlock()
			h.held = held[:0]
			return false
		}
		// Under q.mu, as enqueue sets it: a proposal queued from now on lists the group again.
		g.queued.Store(false)
		q.mu.Unlock()
		held = append(held, g)
	}
	h.held = held
	h.m.lazyHeld.Add(1)
	if h.lazyAt.IsZero() || due.Before(h.lazyAt) {
		h.lazyAt = due
		h.lazyTimer.Reset(due.Sub(now))
	}
	return true
}

// lazyFired is the loop's side of h.lazyTimer.
func (h *Host) lazyFired() { h.lazyAt = time.Time{} }

// withHeld returns gs with the groups held by the last turn added once each.
func (h *Host) withHeld(gs []*Group) []*Group {
	if len(h.held) == 0 {
		return gs
	}
	for _, g := range gs {
		g.listed = true
	}
	for _, g := range h.held {
		if !g.listed {
			g.listed = true
			gs = append(gs, g)
		}
	}
	for _, g := range gs {
		g.listed = false
	}
	clear(h.held)
	h.held = h.held[:0]
	return gs
}
