package cluster

// Quiescence: an idle group costs nothing (DESIGN.md §5).
//
// A raft leader heartbeats every follower every HeartbeatTicks and each follower counts ticks
// towards an election; with a thousand durable queues on three nodes that is tens of thousands
// of messages a second for groups that have nothing to say. So a group whose leader knows that
// nothing is in flight stops ticking altogether, on every node, until something happens to it.
// (The idea is CockroachDB's replica quiescence; this is our own, smaller version of it.)
//
// The leader quiesces a group, at a tick, when (maybeQuiesce):
//   - it leads, at a term whose entries are committed, with no leadership transfer under way;
//   - nothing is pending: no Ready, no proposal queued or in flight, every committed entry
//     applied, and the last index is committed (so no conf change is pending either);
//   - every live follower (its node connected, see below) has the whole log (Match == last
//     index) and is in StateReplicate, has answered this leader over its current connection
//     (lease.go's confirmations), and the live voters are a quorum.
//
// It then sends each live follower a quiesce message (a MsgHeartbeat carrying the commit index,
// the leader's last index and quiesceCtx) and leaves the ticking set. A follower steps it as the
// heartbeat it is (learning the commit index) and quiesces too if its own log agrees: same term
// and leader, nothing pending, its last index the leader's. If it does not agree it stays awake
// and wakes the leader (wakeCtx), which resumes heartbeats until the follower catches up. A
// follower never quiesces on its own.
//
// A quiesced group wakes (unquiesce) on:
//   - a proposal on any node (a follower forwards it, which wakes the leader, and wakes the
//     leader explicitly too, in case the forwarded proposal is lost);
//   - any raft message for it, but a plain heartbeat response (a late answer to a heartbeat sent
//     before quiescing must not wake it again); a follower woken by a message not from its
//     leader wakes the leader too, so the leader resumes heartbeats before the follower's
//     election timer runs out (a restarted peer campaigning is the usual case);
//   - a report that a message to a peer was not delivered;
//   - a change of leader, an adoption, a leadership transfer;
//   - liveness: a peer node coming back (the leader resumes to catch it up), and a peer node
//     lost for ElectionTicks ticks.
//
// Liveness is per node, not per group: the transport tells the host when the connection to a
// peer is up and when it is lost (TCPTransport pings every peer and gives a connection up when
// the peer goes silent). A quiesced follower hears nothing from its leader by design, so it
// cannot notice a dead leader by itself; instead, once the leader's node has been lost for an
// election timeout, every quiesced group it led is woken and its election clock advanced by a
// full election timeout (TickQuiesced): nobody has heard from that leader for that long, which
// is what an election timeout means, and the followers elect a new leader within one more
// randomized timeout. A leader that loses a follower node wakes its quiesced groups too, so it
// re-evaluates them (and keeps the dead follower out of the next quiescence).
//
// Safety does not rest on any of this: quiescence only stops ticking, never changes a log or
// a vote. A quiesced leader cut off from its followers still believes it leads, but a proposal
// wakes it, the entry cannot commit without a quorum's acknowledgement, and CheckQuorum (which
// runs again once it ticks) makes it step down within two election timeouts, failing the
// proposal with ErrDropped; until then it must not serve reads, which is what its lease is for
// (lease.go: the probes that confirm it flow whether or not any group is awake). PreVote and
// CheckQuorum stay on. A quiesced follower's election
// clock stands still, so it keeps the leader's lease: it refuses (pre-)votes from a candidate
// while its leader's node is live, exactly as it would right after a heartbeat.
//
// A woken leader's CheckQuorum bookkeeping is as old as its quiescence: markLiveActive counts
// the followers whose nodes are live as heard from, so the first check after waking does not
// make it step down for nothing (see there).
//
// The heartbeats of the groups that are awake are coalesced into one message per node pair and
// tick (heartbeat.go); the quiesce and wake messages are not (they carry contexts).

import (
	"bytes"
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"go.uber.org/zap"
)

// Contexts that mark the host's own messages. They never reach raft: the receiving host
// recognises and strips them first (raft reads a heartbeat response's context as a read-index
// counter).
var (
	// quiesceCtx marks a leader's MsgHeartbeat asking the follower to quiesce.
	quiesceCtx = []byte("parley/quiesce")
	// wakeCtx marks a follower's MsgHeartbeatResp asking a quiesced leader to wake.
	wakeCtx = []byte("parley/wake")
)

// peerLiveness is what the host knows of a peer node's connection; loop-owned.
type peerLiveness struct {
	live bool
	// lostAt is the tick at which the peer was lost; handled once the loss woke the groups.
	lostAt  uint64
	handled bool
}

// isLive reports whether the transport has the peer's node connected.
func (h *Host) isLive(id uint64) bool {
	p := h.liveness[id]
	return p != nil && p.live
}

// maybeQuiesce quiesces g, a group this node leads, if nothing is in flight (see the file
// comment), and tells its live followers. It returns whether it did; loop only.
func (h *Host) maybeQuiesce(g *Group) bool {
	if g.singleVoter || g.lead != h.cfg.NodeID || g.quiesced || g.removed || h.cfg.noQuiesce {
		return false
	}
	if g.rn.HasReady() || g.queued.Load() || len(g.inflight) > 0 {
		return false
	}
	st := g.rn.BasicStatus()
	if st.RaftState != raft.StateLeader || st.LeadTransferee != raft.None {
		return false
	}
	commit := st.GetCommit()
	if g.applied != commit || g.stable != commit || g.leaderTerm != st.GetTerm() || !g.serving.Load() {
		return false
	}
	self := h.cfg.NodeID
	ok, live, voters := true, 0, 0
	var followers []uint64
	conf := g.confirmed.Load()
	g.rn.WithProgress(func(id uint64, typ raft.ProgressType, pr tracker.Progress) {
		if typ == raft.ProgressTypePeer {
			voters++
		}
		if id == self {
			if pr.Match != commit {
				ok = false
			}
			if typ == raft.ProgressTypePeer {
				live++
			}
			return
		}
		if !h.isLive(id) {
			return // a dead follower is left out; it wakes the group when it comes back
		}
		if pr.Match != commit || pr.State != tracker.StateReplicate {
			ok = false
		}
		if !confirmedBy(conf, id, h.epochOf(id)) {
			// The follower has not answered this leader since its connection came up: it may
			// have restarted (its Progress is from before), and may not even run the group
			// yet. Its answer to a quiesce message is dropped, so without this the leader
			// would never hear from it and never count it for its lease (lease.go).
			ok = false
		}
		if typ == raft.ProgressTypePeer {
			live++
		}
		followers = append(followers, id)
	})
	if !ok || live <= voters/2 {
		return false
	}
	msgs := make([]*raftpb.Message, len(followers))
	for i, to := range followers {
		msgs[i] = &raftpb.Message{
			Type:    raftpb.MsgHeartbeat.Enum(),
			To:      new(to),
			From:    new(self),
			Term:    new(st.GetTerm()),
			Commit:  new(commit),
			Index:   new(commit), // the leader's last index
			Context: quiesceCtx,
		}
	}
	h.setQuiesced(g)
	if len(msgs) > 0 {
		h.cfg.Transport.Send(g.id, msgs)
	}
	return true
}

// stepQuiesce handles a leader's quiesce message on a follower: step it as a heartbeat, then
// quiesce if this node's log agrees with the leader's, or else wake the leader; loop only.
func (h *Host) stepQuiesce(g *Group, m *raftpb.Message) {
	pending := g.rn.HasReady() // unstable entries or unapplied state: do not trust g.stable
	m.Context = nil
	if err := g.rn.Step(m); err != nil {
		h.unquiesce(g)
		return
	}
	h.markDirty(g)
	st := g.rn.BasicStatus()
	agree := !pending && st.RaftState == raft.StateFollower &&
		st.Lead == m.GetFrom() && st.GetTerm() == m.GetTerm() &&
		st.GetCommit() == m.GetCommit() && g.stable == m.GetIndex() &&
		len(g.inflight) == 0 && !g.queued.Load()
	if !agree {
		h.unquiesce(g)
		h.wakeLeader(g, m.GetFrom(), st.GetTerm())
		return
	}
	// The heartbeat's response goes nowhere: the leader is already quiet.
	g.dropHeartbeatResp = true
	h.setQuiesced(g)
}

// wakeLeader asks the leader of g (lead) to wake the group; loop only.
func (h *Host) wakeLeader(g *Group, lead, term uint64) {
	if lead == raft.None || lead == h.cfg.NodeID {
		return
	}
	h.cfg.Transport.Send(g.id, []*raftpb.Message{{
		Type:    raftpb.MsgHeartbeatResp.Enum(),
		To:      new(lead),
		From:    new(h.cfg.NodeID),
		Term:    new(term),
		Context: wakeCtx,
	}})
}

// stepIncoming steps a peer's message into g, waking g as the file comment says; loop only.
func (h *Host) stepIncoming(g *Group, m *raftpb.Message) {
	switch {
	case m.GetType() == raftpb.MsgHeartbeat && bytes.Equal(m.GetContext(), quiesceCtx):
		h.stepQuiesce(g, m)
		return
	case m.GetType() == raftpb.MsgHeartbeatResp && bytes.Equal(m.GetContext(), wakeCtx):
		m.Context = nil
		h.unquiesce(g)
	case g.quiesced && m.GetType() == raftpb.MsgHeartbeatResp && len(m.GetContext()) == 0:
		// A late answer to a heartbeat sent before quiescing: no reason to wake, unless it
		// changes something (a higher term).
	case g.quiesced:
		h.unquiesce(g)
		if g.lead != h.cfg.NodeID && m.GetFrom() != g.lead {
			h.wakeLeader(g, g.lead, g.rn.BasicStatus().GetTerm())
		}
	}
	if err := g.rn.Step(m); err != nil {
		h.log.Debug("raft message refused", zap.Uint64("group", g.id), zap.Error(err))
	} else if t := m.GetType(); t == raftpb.MsgAppResp || t == raftpb.MsgHeartbeatResp {
		h.confirm(g, m.GetFrom(), m.GetTerm())
	}
	if g.quiesced && g.rn.HasReady() {
		h.unquiesce(g)
	}
	h.markDirty(g)
}

// setQuiesced stops ticking g; loop only.
func (h *Host) setQuiesced(g *Group) {
	if !g.quiesced {
		g.quiesced = true
		h.m.quiesced.Add(1)
	}
	delete(h.ticking, g)
}

// unquiesce makes g tick again (unless it is a lone voter that leads: that one never ticks);
// loop only.
func (h *Host) unquiesce(g *Group) {
	if g.quiesced {
		g.quiesced = false
		h.m.quiesced.Add(-1)
		h.m.wakes.Add(1)
		if g.lead == h.cfg.NodeID {
			h.markLiveActive(g)
		}
	}
	if g.removed || (g.singleVoter && g.lead == h.cfg.NodeID) {
		return
	}
	h.ticking[g] = struct{}{}
	h.markDirty(g)
}

// markLiveActive tells the raft of g, a group this node leads and that just woke, that every
// follower whose node is live was heard from, as a heartbeat response would; loop only.
//
// CheckQuorum counts the followers heard from since its last check (Progress.RecentActive) and
// clears the flags at each check. Quiescence freezes the leader's clock and those flags with
// it, and a quiesced follower says nothing by design, so the flags a woken leader holds are
// those of the moment it quiesced: all clear if a check ran just before (the followers'
// answers to that check's heartbeats can arrive late, or not at all: a follower drops the
// heartbeat responses of the Ready that answers a quiesce message). Its clock may also be
// close to the next check, which then found no quorum active and made the leader step down,
// failing the proposal that woke it with ErrDropped, for no reason: its followers were there
// all along. The transport's liveness is what stands for heartbeats while the group is quiet
// (the file comment), so a follower whose node is live counts as heard from.
func (h *Host) markLiveActive(g *Group) {
	st := g.rn.BasicStatus()
	if st.RaftState != raft.StateLeader {
		return
	}
	self := h.cfg.NodeID
	var live []uint64
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, _ tracker.Progress) {
		if id != self && h.isLive(id) {
			live = append(live, id)
		}
	})
	for _, id := range live {
		// A leader steps a heartbeat response by marking the follower active (and sending it
		// what it lacks, if anything): nothing else.
		_ = g.rn.Step(&raftpb.Message{
			Type: raftpb.MsgHeartbeatResp.Enum(),
			From: new(id),
			To:   new(self),
			Term: new(st.GetTerm()),
		})
	}
}

// peerReport records a change of a peer node's connection; loop only.
func (h *Host) peerReport(id uint64, up bool) {
	h.bumpEpoch(id) // a new connection: earlier lease confirmations no longer count (lease.go)
	p := h.liveness[id]
	if p == nil {
		p = &peerLiveness{}
		h.liveness[id] = p
	}
	if up {
		wasLive := p.live
		p.live, p.handled = true, false
		if !wasLive {
			// A follower back: the groups this node leads catch it up (and quiesce again with it).
			for _, g := range h.running {
				if g.quiesced && g.lead == h.cfg.NodeID {
					h.unquiesce(g)
				}
			}
		}
		return
	}
	if p.live {
		p.live = false
		p.lostAt = h.m.ticks.Load()
		p.handled = false
	}
}

// checkLiveness wakes the groups of a peer node lost for an election timeout (see the file
// comment); loop only, at each tick.
func (h *Host) checkLiveness(now uint64) {
	for id, p := range h.liveness {
		if p.live || p.handled || now-p.lostAt < uint64(h.cfg.ElectionTicks) {
			continue
		}
		p.handled = true
		for _, g := range h.running {
			if !g.quiesced {
				continue
			}
			switch g.lead {
			case id:
				// Nobody has heard from this leader for an election timeout: let the followers'
				// clocks say so, and they elect at their next randomized timeout.
				h.unquiesce(g)
				for range h.cfg.ElectionTicks {
					g.rn.TickQuiesced()
				}
			case h.cfg.NodeID:
				h.unquiesce(g)
			}
		}
	}
}

// soleMember reports whether cs makes this node a group's only member: its lone voter, with no
// learner and no joint configuration. Such a group has nobody to heartbeat and no quorum to
// lose, so its leader is not ticked.
func (h *Host) soleMember(cs *raftpb.ConfState) bool {
	return slices.Equal(cs.GetVoters(), []uint64{h.cfg.NodeID}) && len(cs.GetLearners()) == 0 &&
		len(cs.GetVotersOutgoing()) == 0 && len(cs.GetLearnersNext()) == 0
}

// noteConfState follows a change of g's configuration (a conf change applied, a snapshot
// installed): a group that gains a member must tick again if this node leads it, one left with
// this node alone stops; loop only.
func (h *Host) noteConfState(g *Group) {
	single := h.soleMember(g.confState)
	if single == g.singleVoter {
		return
	}
	g.singleVoter = single
	if g.lead != h.cfg.NodeID {
		return
	}
	if single {
		delete(h.ticking, g)
	} else {
		h.unquiesce(g)
	}
}
