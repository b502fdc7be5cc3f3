package cluster

// Membership: which nodes form the cluster, and changing it (DESIGN.md §5: "new nodes join as
// learners, are promoted when caught up; parleyctl drives it").
//
// Every group of a node has its own raft configuration (voters, learners), changed by
// ConfChangeV2 entries in its own log and carried by its snapshots' ConfState, so it survives
// restarts and reaches a node that catches up by snapshot. On top of that each host keeps the
// membership record: node id -> cluster address of every member. It is what the transport dials
// and what a new group is bootstrapped with, and it is stored (storage's node record
// keys.NodeMembers), so a restarted node knows the current members and not just the peers of its
// configuration. The record is written only from the log: a conf change this package proposes
// may carry in its context (confContext) the whole record as it is to be from then on, and each
// host stores it when it applies the entry. Only the first group's changes (the lowest id: the
// broker's metadata group 0) carry it: Join on adding the learner and again on promoting it (a
// new node that caught up by snapshot skipped the first entry but receives the second by
// append), Leave on its last removal. So the record follows ONE log on every node, in that log's
// order.
//
// That order matters for new groups. A group is bootstrapped (its first configuration written
// by the node itself) on every node that runs it, with the record's members as voters; all the
// copies must be identical, or their logs differ at the same index and term. A standby creates
// its replica of a new queue's group when it applies the metadata entry naming the queue, after
// every conf change of group 0 before it, so its record is the one in force at that entry. The
// standby takes it then (BootstrapVoters, on the loop, in the entry's Apply) and bootstraps with
// it later (AddReplicaWith), whatever the record has become meanwhile. The serving node creates
// the group just before it proposes that metadata entry, with the record as it is then; so that
// this is also the record in force where the entry lands, group creation and record changes
// exclude each other on the serving node (where both Join/Leave and the broker run): the broker
// holds LockMembership from AddGroup until its metadata entry has applied, and a conf change
// that sets the record (proposeConf) takes the same lock until it has applied here. Either the
// record change is in group 0's log (and applied, so read by AddGroup) before the group is
// created, or the metadata entry is in the log before the record change: every copy of the
// group starts with the same voters. Join and Leave then bring every group, old or new, to the
// new membership (their passes over the groups).
//
// A node not in its own record (one started to join, listing some members as peers) bootstraps
// nothing: every group's configuration reaches it from the group's leader, by log or snapshot.
//
// Join(id, addr), run on the node that leads every group (the serving node), for each group in
// turn: add id as a learner (it receives the log but does not count for commits or votes), wait
// until its log is within promoteLag entries of the leader's, promote it to voter; if that fails
// for any group, the node is removed again from every group and from the record (a failed join
// leaves no ghost member). Leave(id):
// remove it from every group, refusing to remove the last voter or a change that leaves fewer
// live voters than a majority of what remains; the node leading the groups cannot remove
// itself (ErrLeaderLeaving): its caller moves the leadership first. A node that sees itself
// removed (it applies its own removal, or a peer's transport tells it) calls Config.OnRemoved.

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/parleymq/parley/storage/keys"
)

var (
	// ErrNotLeader is returned by a membership change on a node that does not lead (and serve)
	// a group it must change.
	ErrNotLeader = errors.New("cluster: this node does not lead the group")
	// ErrLeaderLeaving is returned by Leave for the node running it: move the leadership of its
	// groups to another node first.
	ErrLeaderLeaving = errors.New("cluster: a node cannot remove itself while it leads; move the leadership first")
	// ErrMembership is returned for a membership change that is refused (unknown node, last
	// voter, no majority left).
	ErrMembership = errors.New("cluster: membership change refused")
	// ErrNotMember (wrapping ErrMembership) is returned by Leave for a node that is no member.
	ErrNotMember = fmt.Errorf("%w: not a member", ErrMembership)
)

// promoteLag is how many entries a learner's log may be behind the leader's when it is
// promoted: close enough that it acknowledges new entries at once, not so strict that a busy
// group never lets it in.
const promoteLag = 64

// Member is one node of the cluster as the membership record has it.
type Member struct {
	ID   uint64 `json:"id"`
	Addr string `json:"addr"`
}

// confContext is the Context of every ConfChangeV2 this host proposes:
//
//	version byte (1)
//	node    uvarint: the proposing node, with seq to complete its future
//	seq     uvarint
//	set     byte: 1 when the membership record follows, 0 otherwise
//	count   uvarint, then count times (id uvarint, addr uvarint length + bytes)
type confContext struct {
	node, seq uint64
	// members is the record from this entry on, when set.
	members []Member
	set     bool
}

func (c confContext) encode() []byte {
	b := []byte{1}
	b = binary.AppendUvarint(b, c.node)
	b = binary.AppendUvarint(b, c.seq)
	if !c.set {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(c.members)))
	for _, m := range c.members {
		b = binary.AppendUvarint(b, m.ID)
		b = binary.AppendUvarint(b, uint64(len(m.Addr)))
		b = append(b, m.Addr...)
	}
	return b
}

func decodeConfContext(b []byte) (confContext, bool) {
	var c confContext
	if len(b) < 1 || b[0] != 1 {
		return c, false
	}
	b = b[1:]
	uvarint := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	var ok bool
	if c.node, ok = uvarint(); !ok {
		return c, false
	}
	if c.seq, ok = uvarint(); !ok {
		return c, false
	}
	if len(b) < 1 || b[0] > 1 {
		return c, false
	}
	c.set, b = b[0] == 1, b[1:]
	if !c.set {
		return c, len(b) == 0
	}
	count, ok := uvarint()
	if !ok || count > uint64(len(b))/2 {
		return c, false
	}
	c.members = make([]Member, 0, count)
	for range count {
		id, ok1 := uvarint()
		l, ok2 := uvarint()
		if !ok1 || !ok2 || l > uint64(len(b)) {
			return c, false
		}
		c.members = append(c.members, Member{ID: id, Addr: string(b[:l])})
		b = b[l:]
	}
	return c, len(b) == 0
}

// membersWith is the record with node id at addr (with addr "": without node id).
func (h *Host) membersWith(id uint64, addr string) []Member {
	var out []Member
	for _, m := range h.Members() {
		if m.ID != id {
			out = append(out, m)
		}
	}
	if addr != "" {
		out = append(out, Member{ID: id, Addr: addr})
		slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	}
	return out
}

// PeerDirectory is implemented by a Transport whose peers change at run time (TCPTransport):
// the host tells it about members recorded and forgotten.
type PeerDirectory interface {
	AddPeer(id uint64, addr string)
	RemovePeer(id uint64)
}

// storedMembers is the stored record: the members, and the log position (group, index) of
// the entry (or snapshot) that set them. A restarted node replays its logs: entries at or below
// that position are older than the record and must not set it back.
type storedMembers struct {
	Group   uint64   `json:"group"`
	Index   uint64   `json:"index"`
	Members []Member `json:"members"`
}

// loadMembers reads the stored membership record; without one it is the configuration's peers.
func (h *Host) loadMembers() error {
	v, err := h.eng.NodeRecord(keys.NodeMembers)
	if err != nil {
		return fmt.Errorf("read membership: %w", err)
	}
	h.members = maps.Clone(h.cfg.Peers)
	if v == nil {
		return nil
	}
	var sm storedMembers
	if err := json.Unmarshal(v, &sm); err != nil {
		return fmt.Errorf("read membership: %w", err)
	}
	h.memberAt = sm
	h.members = make(map[uint64]string, len(sm.Members))
	for _, m := range sm.Members {
		h.members[m.ID] = m.Addr
	}
	return nil
}

// Members is the membership record: every member's id and cluster address.
func (h *Host) Members() []Member {
	h.memberMu.Lock()
	defer h.memberMu.Unlock()
	out := make([]Member, 0, len(h.members))
	for _, id := range slices.Sorted(maps.Keys(h.members)) {
		out = append(out, Member{ID: id, Addr: h.members[id]})
	}
	return out
}

// bootstrapVoters is the voter set a new group starts with, or nil when this node is not a
// member (it joins: the group's configuration comes from its leader).
func (h *Host) bootstrapVoters() []uint64 {
	h.memberMu.Lock()
	defer h.memberMu.Unlock()
	if _, ok := h.members[h.cfg.NodeID]; !ok {
		return nil
	}
	return slices.Sorted(maps.Keys(h.members))
}

// announceMembers tells the transport every recorded member (at start).
func (h *Host) announceMembers() {
	pd, ok := h.cfg.Transport.(PeerDirectory)
	if !ok {
		return
	}
	for _, m := range h.Members() {
		if m.ID != h.cfg.NodeID && m.Addr != "" {
			pd.AddPeer(m.ID, m.Addr)
		}
	}
	// A stale configuration may still list a node the record forgot.
	for id := range h.cfg.Peers {
		if !h.isMemberID(id) {
			pd.RemovePeer(id)
		}
	}
}

// noteConfChange runs on the loop when g applies a ConfChangeV2: it completes the proposer's
// future and stores the record the context carries.
func (h *Host) noteConfChange(g *Group, index uint64, cc *raftpb.ConfChangeV2) error {
	if g.snapIndex > 0 {
		// The log below the last snapshot is gone: a node added now must be sent a snapshot
		// whose configuration has it (raft refuses one that does not).
		g.confSnap = true
	}
	c, ok := decodeConfContext(cc.GetContext())
	if !ok {
		return nil // a conf change not proposed by a host (none today)
	}
	if c.node == h.cfg.NodeID {
		if p := g.inflight[c.seq]; p != nil {
			delete(g.inflight, c.seq)
			if p.cb != nil {
				p.cb(nil, nil)
			}
		}
	}
	if !c.set {
		return nil
	}
	return h.setMembers(g.id, index, c.members)
}

// setMembers makes members the record as of entry index of group, unless the stored record is
// newer; it stores it and tells the transport.
func (h *Host) setMembers(group, index uint64, members []Member) error {
	next := make(map[uint64]string, len(members))
	for _, m := range members {
		next[m.ID] = m.Addr
	}
	h.memberMu.Lock()
	prev := h.members
	if at := h.memberAt; at.Group == group && index <= at.Index || maps.Equal(prev, next) {
		h.memberMu.Unlock()
		return nil
	}
	h.members = next
	h.memberAt = storedMembers{Group: group, Index: index, Members: members}
	data, err := json.Marshal(h.memberAt)
	h.memberMu.Unlock()
	if err != nil {
		return fmt.Errorf("encode membership: %w", err)
	}
	if err := h.eng.SetNodeRecord(keys.NodeMembers, data); err != nil {
		return fmt.Errorf("store membership: %w", err)
	}
	h.log.Info("cluster membership changed", zap.Uint64("group", group), zap.Uint64("index", index),
		zap.Any("members", members))
	self := h.cfg.NodeID
	if _, was := prev[self]; was {
		if _, is := next[self]; !is {
			h.removed()
			return nil
		}
	}
	if pd, ok := h.cfg.Transport.(PeerDirectory); ok {
		for id, addr := range next {
			if id != self && addr != "" && prev[id] != addr {
				pd.AddPeer(id, addr)
			}
		}
		for id := range prev {
			if _, ok := next[id]; !ok {
				pd.RemovePeer(id)
			}
		}
	}
	return nil
}

// noteSnapshotConf runs on the loop when the membership group installs a snapshot from its
// leader: the entries it skips may have changed the record, and its configuration says who the
// members are now. Addresses come from the record, or the transport (a peer's hello).
func (h *Host) noteSnapshotConf(g *Group, meta *raftpb.SnapshotMetadata) error {
	if g.id != h.cfg.MembershipGroup {
		return nil
	}
	cs := meta.GetConfState()
	ids := append(slices.Clone(cs.GetVoters()), cs.GetLearners()...)
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	cur := h.Members()
	known := map[uint64]string{}
	for _, m := range cur {
		known[m.ID] = m.Addr
	}
	pd, _ := h.cfg.Transport.(interface{ PeerAddr(uint64) string })
	members := make([]Member, 0, len(ids))
	for _, id := range slices.Compact(ids) {
		addr, ok := known[id]
		if !ok && pd != nil {
			addr = pd.PeerAddr(id)
		}
		members = append(members, Member{ID: id, Addr: addr})
	}
	return h.setMembers(g.id, meta.GetIndex(), members)
}

// removed calls Config.OnRemoved once.
func (h *Host) removed() {
	if h.removedOnce.Swap(true) {
		return
	}
	h.log.Warn("this node was removed from the cluster")
	if h.cfg.OnRemoved != nil {
		go h.cfg.OnRemoved()
	}
}

// NotifyRemoved is how a transport reports that a peer told this node it is no longer a
// member; it calls Config.OnRemoved once.
func (h *Host) NotifyRemoved() { h.removed() }

// groupConf is a snapshot of one group's configuration and its leader's view of a node.
type groupConf struct {
	voters, learners []uint64
	leading, serving bool
	// match and last: the node's match index and the leader's last index (when leading).
	match, last uint64
	// active: the nodes the leader heard from recently (itself included).
	active map[uint64]bool
	// commit is the leader's commit index, matches every node's match index (when leading).
	commit  uint64
	matches map[uint64]uint64
}

func (h *Host) confOf(ctx context.Context, id, node uint64) (groupConf, error) {
	var gc groupConf
	err := h.do(ctx, func() error {
		g := h.running[id]
		if g == nil {
			return ErrUnknownGroup
		}
		gc.voters = slices.Clone(g.confState.GetVoters())
		gc.learners = slices.Clone(g.confState.GetLearners())
		gc.leading = g.lead == h.cfg.NodeID
		gc.serving = g.serving.Load()
		if gc.leading {
			st := g.rn.Status()
			gc.match = st.Progress[node].Match
			gc.last, _ = g.log.LastIndex()
			gc.active = map[uint64]bool{}
			gc.commit = st.GetCommit()
			gc.matches = map[uint64]uint64{}
			for pid, pr := range st.Progress {
				if pid == h.cfg.NodeID || pr.RecentActive {
					gc.active[pid] = true
				}
				gc.matches[pid] = pr.Match
			}
		}
		return nil
	})
	return gc, err
}

// LockMembership keeps conf changes that set the membership record from being proposed until
// unlock is called (see the file comment): the caller creates a group (AddGroup, which
// bootstraps it with the record's members) and then names it in the membership group's log,
// where the other nodes create their copies with the record in force at that entry, and holds
// the lock across both. It waits, until ctx ends, for a record change under way to apply.
func (h *Host) LockMembership(ctx context.Context) (unlock func(), err error) {
	select {
	case h.recordLock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a membership change to apply: %w", ctx.Err())
	}
	var once sync.Once
	return func() { once.Do(func() { <-h.recordLock }) }, nil
}

// BootstrapVoters is the voter set a group created on this node now would start with: the
// members of the record (nil when this node is not one of them yet). A standby takes it when it
// applies the metadata entry that creates a group, and creates its copy with AddReplicaWith.
func (h *Host) BootstrapVoters() []uint64 { return h.bootstrapVoters() }

// proposeConf proposes one conf change to group id and waits until it is applied here. A
// change that sets the record holds LockMembership's lock until then (and, if ctx ends first,
// a little longer, for the outcome: the change may still apply).
func (h *Host) proposeConf(ctx context.Context, id uint64, t raftpb.ConfChangeType, node uint64, c confContext) error {
	if c.set {
		unlock, err := h.LockMembership(ctx)
		if err != nil {
			return err
		}
		defer unlock()
	}
	f := newFuture()
	err := h.do(ctx, func() error {
		g := h.running[id]
		if g == nil {
			return ErrUnknownGroup
		}
		if g.lead != h.cfg.NodeID || !g.serving.Load() {
			return ErrNotLeader
		}
		h.unquiesce(g) // a quiet group must tick again to replicate the change
		c.node, c.seq = h.cfg.NodeID, h.nextSeq.Add(1)
		cc := &raftpb.ConfChangeV2{
			Changes: []*raftpb.ConfChangeSingle{{Type: t.Enum(), NodeId: new(node)}},
			Context: c.encode(),
		}
		if err := g.rn.ProposeConfChange(cc); err != nil {
			return fmt.Errorf("%w: %w", ErrDropped, err)
		}
		g.inflight[c.seq] = &proposal{seq: c.seq, cb: f.complete, tick: h.m.ticks.Load()}
		h.markDirty(g)
		return nil
	})
	if err != nil {
		return err
	}
	_, err = f.Wait(ctx)
	if err != nil && c.set && ctx.Err() != nil {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*h.electionTimeout())
		_, _ = f.Wait(wctx)
		cancel()
	}
	return err
}

// lead makes sure this node leads group id and has applied everything before its term.
func (h *Host) lead(ctx context.Context, id uint64) error {
	for {
		g := h.Group(id)
		if g == nil {
			return ErrUnknownGroup
		}
		if g.Serving() {
			return nil
		}
		if g.Leader() != h.cfg.NodeID {
			if err := h.TransferLeadership(ctx, id, h.cfg.NodeID); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting to lead group %d: %w", id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ensureConf drives group id until done(conf) holds, proposing change when it does not. A
// change dropped by an election is proposed again once this node leads again, after
// re-reading the configuration (a new leader applies every earlier entry before it serves, so
// the re-read sees a dropped change that committed after all).
func (h *Host) ensureConf(ctx context.Context, id uint64, node uint64, done func(groupConf) bool,
	t raftpb.ConfChangeType, c confContext) error {
	return h.ensureConfAs(ctx, id, node, done, t, c, true)
}

// ensureConfAs is ensureConf; without mayLead it fails with ErrNotLeader when this node does not
// lead the group instead of taking its lead (membership_remote.go).
func (h *Host) ensureConfAs(ctx context.Context, id uint64, node uint64, done func(groupConf) bool,
	t raftpb.ConfChangeType, c confContext, mayLead bool) error {
	for {
		if err := h.leadAs(ctx, id, mayLead); err != nil {
			return err
		}
		gc, err := h.confOf(ctx, id, node)
		if err != nil {
			return err
		}
		if done(gc) {
			return nil
		}
		err = h.proposeConf(ctx, id, t, node, c)
		switch {
		case err == nil && t == raftpb.ConfChangeRemoveNode:
			h.settle(ctx, id)
		case err == nil:
		case errors.Is(err, ErrDropped), errors.Is(err, ErrNotLeader):
			h.log.Info("membership change dropped; retrying", zap.Uint64("group", id), zap.Error(err))
			// Raft drops a conf change at once while an earlier one is still to be applied
			// (a new group's first election, say): a tick before asking again, not a spin.
			select {
			case <-ctx.Done():
				return fmt.Errorf("membership change of group %d: %w", id, ctx.Err())
			case <-time.After(h.cfg.TickInterval):
			}
		default:
			return err
		}
	}
}

// electionTimeout is the longest a follower waits before it campaigns.
func (h *Host) electionTimeout() time.Duration {
	return 2 * time.Duration(h.cfg.ElectionTicks) * h.cfg.TickInterval
}

// settle waits (at most two election timeouts) until every voter of group id has the log up to
// the leader's commit index, then two heartbeats more, which tell them it is committed. Raft
// applies a conf change when it is applied, not appended: if the leader died the instant it
// applied a removal, voters that never heard it was committed would still count the removed
// node, and with it gone, two of four would not elect anyone. Only removals need it: voters
// that missed an addition or a promotion still elect under the configuration they know.
func (h *Host) settle(ctx context.Context, id uint64) {
	deadline := time.Now().Add(2 * h.electionTimeout())
	for time.Now().Before(deadline) {
		gc, err := h.confOf(ctx, id, 0)
		if err != nil || !gc.leading {
			return
		}
		behind := false
		for _, v := range gc.voters {
			if gc.matches[v] < gc.commit {
				behind = true
			}
		}
		if !behind {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(h.cfg.TickInterval):
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(2 * time.Duration(h.cfg.HeartbeatTicks) * h.cfg.TickInterval):
	}
}

// liveVoters samples the leader's view of group id for up to an election timeout and returns
// its configuration with active holding every node heard from in any sample (raft clears its
// RecentActive flags at every election timeout, so one sample can miss a live node).
func (h *Host) liveVoters(ctx context.Context, id, node uint64, enough func(groupConf) bool) (groupConf, error) {
	deadline := time.Now().Add(h.electionTimeout())
	seen := map[uint64]bool{}
	for {
		gc, err := h.confOf(ctx, id, node)
		if err != nil {
			return gc, err
		}
		maps.Copy(seen, gc.active)
		gc.active = seen
		if enough(gc) || !time.Now().Before(deadline) {
			return gc, nil
		}
		select {
		case <-ctx.Done():
			return gc, ctx.Err()
		case <-time.After(h.cfg.TickInterval):
		}
	}
}

// groupIDs lists the running groups, ascending.
func (h *Host) groupIDs() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.groups))
}

// Join adds node id, reachable at cluster address addr, to every group this host runs: as a
// learner first, promoted to voter once its log is within promoteLag entries of the leader's.
// This node must be able to lead every group (it takes the leadership of any it does not
// lead). The first group (group 0) records the new member everywhere. Groups created while
// Join runs are found by a last pass.
//
// A Join that fails (the node never comes up or never catches up, ctx ends, this node cannot
// lead a group) is rolled back: the node is removed from every group it was added to and from
// the record, so no learner or voter is left behind for a node that is not there (a ghost
// voter counts in every quorum, and new groups would start with it); the error says so. A
// node that was already a voter of every group is left as it is. A run cut short by this
// node's own crash leaves what it had done: Join again finishes it (or rolls it all back),
// Leave undoes it.
func (h *Host) Join(ctx context.Context, id uint64, addr string) error {
	if id == 0 || addr == "" {
		return fmt.Errorf("%w: join needs a node id (not 0) and its cluster address", ErrMembership)
	}
	if id == h.cfg.NodeID {
		return fmt.Errorf("%w: node %d is this node", ErrMembership, id)
	}
	h.changeMu.Lock()
	defer h.changeMu.Unlock()
	member := h.fullMember(ctx, id)
	err := h.join(ctx, id, addr)
	if err == nil || member {
		// A node that was a voter everywhere before keeps its place: this run added nothing.
		return err
	}
	// Roll back: a node half added (its learner or voter slots, its record) must not stay in
	// the cluster. Its caller's context has likely ended (a node that never came up is the
	// usual failure), so the rollback has its own time.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.rollbackTimeout())
	defer cancel()
	if rerr := h.removeEverywhere(rctx, id); rerr != nil {
		h.log.Error("failed join not rolled back", zap.Uint64("node", id), zap.Error(rerr))
		return fmt.Errorf("%w; rolling it back failed too (%v): node %d may still be in some groups, run leave %d", err, rerr, id, id)
	}
	h.log.Warn("join failed; rolled back", zap.Uint64("node", id), zap.Error(err))
	return fmt.Errorf("%w (rolled back: node %d is in no group and no member)", err, id)
}

// rollbackTimeout bounds the rollback of a failed Join: enough for a few elections.
func (h *Host) rollbackTimeout() time.Duration {
	return max(10*h.electionTimeout(), 10*time.Second)
}

// fullMember reports whether node id is a recorded member and a voter of every running group.
func (h *Host) fullMember(ctx context.Context, id uint64) bool {
	if !h.isMemberID(id) {
		return false
	}
	for _, gid := range h.groupIDs() {
		gc, err := h.confOf(ctx, gid, id)
		if errors.Is(err, ErrUnknownGroup) {
			continue
		}
		if err != nil || !slices.Contains(gc.voters, id) {
			return false
		}
	}
	return true
}

// join is Join without its rollback; changeMu held.
func (h *Host) join(ctx context.Context, id uint64, addr string) error {
	has := func(gc groupConf) bool {
		return slices.Contains(gc.voters, id) || slices.Contains(gc.learners, id)
	}
	voter := func(gc groupConf) bool { return slices.Contains(gc.voters, id) }
	// Passes until no group appeared meanwhile; each pass over a group already done costs two
	// reads on the loop.
	for pass := 0; pass < 5; pass++ {
		ids := h.groupIDs()
		for i, gid := range ids {
			var err error
			if i == 0 {
				// The record rides on the first group's changes (see the file comment).
				c := confContext{set: true, members: h.membersWith(id, addr)}
				err = h.ensureConf(ctx, gid, id, has, raftpb.ConfChangeAddLearnerNode, c)
				if err == nil {
					err = h.waitCaughtUp(ctx, gid, id)
				}
				if err == nil {
					err = h.ensureConf(ctx, gid, id, voter, raftpb.ConfChangeAddNode, c)
				}
			} else {
				// Through the group's leader where it is another node (membership_remote.go).
				err = h.joinGroup(ctx, gid, id)
			}
			if errors.Is(err, ErrUnknownGroup) {
				continue // deleted meanwhile
			}
			if err != nil {
				return fmt.Errorf("join node %d: group %d: %w", id, gid, err)
			}
		}
		if slices.Equal(ids, h.groupIDs()) {
			break
		}
	}
	h.log.Info("node joined every group as a voter", zap.Uint64("node", id))
	return nil
}

// waitCaughtUp waits until node's log in group gid is within promoteLag of this leader's.
func (h *Host) waitCaughtUp(ctx context.Context, gid, node uint64) error {
	return h.waitCaughtUpAs(ctx, gid, node, true)
}

// waitCaughtUpAs is waitCaughtUp; without mayLead, see ensureConfAs.
func (h *Host) waitCaughtUpAs(ctx context.Context, gid, node uint64, mayLead bool) error {
	for {
		if err := h.leadAs(ctx, gid, mayLead); err != nil {
			return err
		}
		gc, err := h.confOf(ctx, gid, node)
		if err != nil {
			return err
		}
		if gc.leading && gc.match > 0 && gc.match+promoteLag >= gc.last {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for node %d to catch up (match %d of %d): %w", node, gc.match, gc.last, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Leave removes node id from every group this host runs (the first group, group 0, last: it
// forgets the member everywhere). Refused with ErrMembership when id is in no group, when it is
// the last voter of a group, or when the voters left would not include a live majority (the
// leader must have heard from them recently); with ErrLeaderLeaving when id is this node.
func (h *Host) Leave(ctx context.Context, id uint64) error {
	if id == h.cfg.NodeID {
		return ErrLeaderLeaving
	}
	h.changeMu.Lock()
	defer h.changeMu.Unlock()
	absent := func(gc groupConf) bool {
		return !slices.Contains(gc.voters, id) && !slices.Contains(gc.learners, id)
	}
	ids := h.groupIDs()
	// Check every group before changing any, so a refusal changes nothing.
	known := false
	for i, gid := range ids {
		if i > 0 {
			// Through the group's leader where it is another node (membership_remote.go).
			gone, err := h.groupConf(ctx, opLeaveCheck, gid, id)
			switch {
			case errors.Is(err, ErrUnknownGroup), err == nil && gone:
				continue
			case errors.Is(err, ErrMembership):
				return fmt.Errorf("leave node %d: group %d: %w", id, gid, err)
			case err != nil && ctx.Err() != nil:
				return fmt.Errorf("leave node %d: %w", id, err)
			case err != nil:
				continue // as a failed liveVoters below: the removal itself tries again
			}
			known = true
			continue
		}
		if err := h.lead(ctx, gid); err != nil {
			if errors.Is(err, ErrUnknownGroup) {
				continue
			}
			return fmt.Errorf("leave node %d: %w", id, err)
		}
		gc, err := h.liveVoters(ctx, gid, id, func(gc groupConf) bool { return checkRemoval(gc, id) == nil })
		if err != nil {
			continue
		}
		if absent(gc) {
			continue
		}
		known = true
		if err := checkRemoval(gc, id); err != nil {
			return fmt.Errorf("leave node %d: group %d: %w", id, gid, err)
		}
	}
	if !known && !h.isMemberID(id) {
		return fmt.Errorf("%w: node %d", ErrNotMember, id)
	}
	if err := h.removeEverywhere(ctx, id); err != nil {
		return fmt.Errorf("leave node %d: %w", id, err)
	}
	h.log.Info("node left every group", zap.Uint64("node", id))
	return nil
}

// removeEverywhere removes node id from every group (the first, which forgets the member in
// the record, last) and from the transport; changeMu held.
func (h *Host) removeEverywhere(ctx context.Context, id uint64) error {
	absent := func(gc groupConf) bool {
		return !slices.Contains(gc.voters, id) && !slices.Contains(gc.learners, id)
	}
	for pass := 0; pass < 3; pass++ {
		ids := h.groupIDs()
		for i := len(ids) - 1; i >= 0; i-- {
			gid := ids[i]
			c := confContext{}
			if i == 0 {
				c = confContext{set: true, members: h.membersWith(id, "")}
			}
			gone := func(gc groupConf) bool { return absent(gc) && (i != 0 || !h.isMemberID(id)) }
			var err error
			if i == 0 {
				err = h.ensureConf(ctx, gid, id, gone, raftpb.ConfChangeRemoveNode, c)
			} else {
				// Through the group's leader where it is another node (membership_remote.go).
				_, err = h.groupConf(ctx, opRemove, gid, id)
			}
			if err != nil {
				if errors.Is(err, ErrUnknownGroup) {
					continue
				}
				return fmt.Errorf("remove node %d from group %d: %w", id, gid, err)
			}
		}
		if slices.Equal(ids, h.groupIDs()) {
			break
		}
	}
	if pd, ok := h.cfg.Transport.(PeerDirectory); ok {
		pd.RemovePeer(id) // also when the record had already forgotten it
	}
	return nil
}

func (h *Host) isMemberID(id uint64) bool {
	h.memberMu.Lock()
	defer h.memberMu.Unlock()
	_, ok := h.members[id]
	return ok
}

// checkRemoval refuses to remove the last voter, or to leave voters of which fewer than a
// majority are live.
func checkRemoval(gc groupConf, id uint64) error {
	if !slices.Contains(gc.voters, id) {
		return nil // a learner: nothing counts on it
	}
	var rest []uint64
	for _, v := range gc.voters {
		if v != id {
			rest = append(rest, v)
		}
	}
	if len(rest) == 0 {
		return fmt.Errorf("%w: node %d is the last voter", ErrMembership, id)
	}
	live := 0
	for _, v := range rest {
		if gc.active[v] {
			live++
		}
	}
	if need := len(rest)/2 + 1; live < need {
		return fmt.Errorf("%w: without node %d, %d voters remain of which only %d are reachable; a majority (%d) must be: bring nodes back first",
			ErrMembership, id, len(rest), live, need)
	}
	return nil
}
