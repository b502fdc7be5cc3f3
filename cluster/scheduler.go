package cluster

// The scheduler: one goroutine drives every raft group of the node.
//
// etcd raft's RawNode does no I/O: time comes in as ticks, messages and
// proposals come in as Steps, and everything to be done goes out as a
// Ready — entries and a hard state to persist, messages to send, committed
// entries to apply — which the application handles and then Advances. Most
// applications run one goroutine per group for this. A broker has a group
// per durable queue, thousands of them, mostly idle, and every one of them
// would fsync on its own. So the host runs a single loop (run) over all
// groups, and each turn of it is one cycle:
//
//  1. take what other goroutines queued: control ops (add, remove a group),
//     messages from peers, and proposals — every proposal waiting for a
//     group goes to raft in one Step, so a burst costs one wake-up; lazy
//     proposals (acks) wait for an eager one or their delay (lazy.go);
//  2. collect the Ready of every group that may have one (the dirty list:
//     groups ticked, stepped, proposed to or advanced since the last cycle;
//     an untouched group is not even looked at);
//  3. write all their snapshots, entries and hard states into ONE batch and
//     commit it with one fsync (only if some Ready needs it: a Ready that
//     only moves the commit index may be lost in a crash, raft recommits);
//     this is the group commit of DESIGN.md §4, across groups and across
//     proposers, and it is why entries per fsync grows with load;
//  4. send messages (after the fsync: an acknowledgement must not outrun
//     the disk);
//  5. apply committed entries to the state machines and complete their
//     proposals' futures. Only this path tells anyone anything: Pebble
//     shows a write to readers before its fsync, so nothing may be
//     delivered because it is merely in the log. (Committed entries that an
//     earlier cycle made durable apply before this cycle's write, which
//     takes one fsync off a lone voter's commit latency);
//  6. Advance, and mark the group dirty again, since Advance can make more
//     ready (a lone voter's append acknowledgement commits its entries);
//  7. snapshot groups that applied SnapshotEntries since their last one.
//
// While any group is dirty the loop cycles without sleeping; otherwise it
// blocks until a tick, a wake-up or an op. Proposals arriving during an
// fsync pile up and all go into the next one.
//
// Ticks go only to groups that need time: a group whose only voter is this
// node and that leads has nobody to heartbeat and no quorum to lose, so it
// is left out of the ticking set, and an idle queue costs nothing at all.
// A group with peers leaves it too when its leader quiesces it (quiesce.go).
//
// Futures are matched by a header in the entry data (see encodeEntry), and
// stripped before the state machine sees the data. When the leader a group
// knows changes, its in-flight proposals fail with ErrDropped: the new
// leader may have overwritten them, and a future must not wait forever.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

type groupReady struct {
	g  *Group
	rd raft.Ready
	// early is how many of rd.CommittedEntries were applied before the
	// cycle's write.
	early int
}

func (h *Host) run(ctx context.Context) {
	defer h.exit()
	ticker := time.NewTicker(h.cfg.TickInterval)
	defer ticker.Stop()
	for {
		if len(h.dirty) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				h.tick()
			case <-h.wake:
			case <-h.lazyTimer.C:
				h.lazyFired()
			case o := <-h.ops:
				o.done <- o.fn()
			}
		} else {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				h.tick()
			case <-h.lazyTimer.C:
				h.lazyFired()
			default:
			}
		}
		h.runOps()
		h.takeIncoming()
		h.takeProposals()
		if err := h.cycle(); err != nil {
			h.loopErr = err
			h.log.Error("cluster host failed", zap.Error(err))
			return
		}
		if h.beatTr != nil {
			// Lease probes and echoes (lease.go) go out even in a cycle with no Ready.
			h.flushBeats()
		}
	}
}

// exit fails everything still waiting once the loop is gone.
func (h *Host) exit() {
	err := error(ErrStopped)
	if h.loopErr != nil {
		err = fmt.Errorf("%w: %w", ErrStopped, h.loopErr)
	}
	for _, g := range h.running {
		h.unregister(g, err)
	}
	h.mu.Lock()
	h.state = stateStopped
	h.mu.Unlock()
	close(h.donec)
	h.log.Info("cluster host stopped")
}

// runOps runs the ops already waiting, without blocking.
func (h *Host) runOps() {
	for {
		select {
		case o := <-h.ops:
			o.done <- o.fn()
		default:
			return
		}
	}
}

func (h *Host) markDirty(g *Group) {
	if !g.dirty && !g.removed {
		g.dirty = true
		h.dirty = append(h.dirty, g)
	}
}

// register puts a prepared group into the loop.
func (h *Host) register(g *Group) {
	h.running[g.id] = g
	h.m.groups.Add(1)
	h.ticking[g] = struct{}{}
	h.markDirty(g)
	h.maybeCampaign(g)
	h.maybeRecovered(g)
}

// unregister takes a group out of the loop and fails its proposals with err.
func (h *Host) unregister(g *Group, err error) {
	if g.removed {
		return
	}
	g.removed = true
	if g.quiesced {
		g.quiesced = false
		h.m.quiesced.Add(-1)
	}
	delete(h.running, g.id)
	delete(h.ticking, g)
	h.m.groups.Add(-1)
	g.close(err)
	g.leader.Store(0)
	if !g.isRecovered() {
		g.recoverErr = err
		close(g.recovered)
	}
}

func (g *Group) isRecovered() bool {
	select {
	case <-g.recovered:
		return true
	default:
		return false
	}
}

func (h *Host) tick() {
	now := h.m.ticks.Add(1)
	h.checkLiveness(now)
	h.sendProbes(now)
	if len(h.takers) > 0 {
		h.expireTakeLead(now)
	}
	for g := range h.ticking {
		if h.maybeQuiesce(g) {
			continue
		}
		h.m.groupTicks.Add(1)
		g.rn.Tick()
		h.markDirty(g)
	}
	if now%uint64(h.cfg.ElectionTicks) == 0 {
		h.expireForwarded(now)
	}
}

// expireForwarded fails the proposals a follower forwarded to its leader that were not applied
// within three election timeouts. Raft does not answer a forwarded proposal: if the message is
// lost (the transport dropped it, the leader was transferring its leadership) nothing would ever
// complete its future while the leader stays the same. ErrDropped says it may or may not be
// committed, which is the truth: the proposer retries or gives up (at least once).
func (h *Host) expireForwarded(now uint64) {
	limit := 3 * uint64(h.cfg.ElectionTicks)
	for g := range h.ticking {
		if g.lead == h.cfg.NodeID || len(g.inflight) == 0 {
			continue
		}
		for seq, p := range g.inflight {
			if p.tick+limit < now {
				delete(g.inflight, seq)
				h.m.dropped.Add(1)
				p.fail(fmt.Errorf("%w: forwarded to leader %d and not applied within %d ticks", ErrDropped, g.lead, limit))
			}
		}
	}
}

func (h *Host) takeIncoming() {
	h.inMu.Lock()
	in := h.incoming
	h.incoming = nil
	h.inMu.Unlock()
	for _, im := range in {
		switch im.report {
		case reportPeerUp, reportPeerDown:
			h.peerReport(im.to, im.report == reportPeerUp)
			continue
		case reportLeaseProbe:
			h.leaseProbe(im.to, im.stamp)
			continue
		case reportLeaseEcho:
			h.leaseEcho(im.to, im.stamp)
			continue
		}
		g := h.running[im.group]
		if g == nil {
			continue
		}
		switch im.report {
		case reportUnreachable:
			// A message did not reach the peer: if it was a quiesce message, that follower
			// may be awake and campaign; keep the group awake until it is sure.
			h.unquiesce(g)
			g.rn.ReportUnreachable(im.to)
		case reportSnapshotFinished:
			g.rn.ReportSnapshot(im.to, raft.SnapshotFinish)
		case reportSnapshotFailed:
			g.rn.ReportSnapshot(im.to, raft.SnapshotFailure)
		}
		if im.msg == nil {
			h.markDirty(g)
			continue
		}
		h.stepIncoming(g, im.msg)
	}
}

func (h *Host) takeProposals() {
	h.inMu.Lock()
	gs := h.proposers
	h.proposers = h.spare[:0]
	h.inMu.Unlock()
	gs = h.withHeld(gs)
	if h.holdLazy(gs) {
		clear(gs)
		h.spare = gs[:0]
		return
	}
	for _, g := range gs {
		if g.removed || g.lead == raft.None || h.holding(g) {
			// No leader to take them (or this node is taking the lead: takelead.go): they
			// stay queued until one is known, see noteSoftState, which lists the group again
			// if queued is set (holdLazy may have cleared it), or the hold ends.
			if !g.removed {
				g.queued.Store(true)
			}
			continue
		}
		props := g.takeProposals(h.propBuf[:0])
		if len(props) == 0 {
			continue
		}
		if g.quiesced {
			h.unquiesce(g)
			// A follower forwards the proposal, which wakes the leader; but a forwarded
			// proposal may be lost, and then the follower, ticking again, would campaign
			// against a leader that says nothing. So it asks the leader to wake as well.
			h.wakeLeader(g, g.lead, g.rn.BasicStatus().GetTerm())
		}
		ents := make([]*raftpb.Entry, len(props))
		for i, p := range props {
			ents[i] = &raftpb.Entry{Data: p.data}
		}
		// A leader's raft copies every entry before Step returns (entrybuf.go); a follower's
		// forwards these very entries to the leader.
		leader := g.rn.BasicStatus().RaftState == raft.StateLeader
		err := g.rn.Step(&raftpb.Message{
			Type:    raftpb.MsgProp.Enum(),
			From:    new(h.cfg.NodeID),
			Entries: ents,
		})
		if leader {
			for _, p := range props {
				if p.inPlace {
					recycleEntry(p.data)
				}
				p.data = nil
			}
		}
		if err != nil {
			h.m.dropped.Add(uint64(len(props)))
			err = fmt.Errorf("%w: %w", ErrDropped, err)
			for _, p := range props {
				p.fail(err)
			}
		} else {
			now := h.m.ticks.Load()
			for _, p := range props {
				p.tick = now
				g.inflight[p.seq] = p
			}
		}
		clear(props)
		h.propBuf = props[:0]
		h.markDirty(g)
	}
	clear(gs)
	h.spare = gs[:0]
}

// cycle handles the Ready of every dirty group: one batch, one fsync.
func (h *Host) cycle() error {
	dirty := h.dirty
	h.dirty = h.dirtySpare[:0]
	readies := h.readies[:0]
	for _, g := range dirty {
		g.dirty = false
		if g.removed || !g.rn.HasReady() {
			continue
		}
		readies = append(readies, groupReady{g: g, rd: g.rn.Ready()})
	}
	clear(dirty)
	h.dirtySpare = dirty[:0]
	defer func() {
		clear(readies)
		h.readies = readies[:0]
	}()
	if len(readies) == 0 {
		return nil
	}
	h.m.cycles.Add(1)

	// Committed entries already durable here apply before this cycle's
	// fsync rather than after it: a lone voter's entries commit one cycle
	// after they were written, so this takes a whole fsync off every
	// proposal's latency. Entries this Ready (re)writes are not durable yet,
	// whatever an earlier cycle wrote at their index.
	for i := range readies {
		r := &readies[i]
		if !raft.IsEmptySnap(r.rd.Snapshot) {
			continue
		}
		limit := r.g.stable
		if len(r.rd.Entries) > 0 {
			limit = min(limit, r.rd.Entries[0].GetIndex()-1)
		}
		ce := r.rd.CommittedEntries
		for r.early < len(ce) && ce[r.early].GetIndex() <= limit {
			r.early++
		}
		if err := h.applyEntries(r.g, ce[:r.early]); err != nil {
			return err
		}
	}

	b := h.eng.NewBatch()
	defer b.Close()
	sync, entries := false, 0
	for _, r := range readies {
		rd, rl := &r.rd, r.g.log
		if !raft.IsEmptySnap(rd.Snapshot) {
			if err := rl.ApplySnapshot(b, rd.Snapshot); err != nil {
				return fmt.Errorf("group %d: write snapshot: %w", r.g.id, err)
			}
		}
		if len(rd.Entries) > 0 {
			if err := rl.Append(b, rd.Entries); err != nil {
				return fmt.Errorf("group %d: append: %w", r.g.id, err)
			}
			entries += len(rd.Entries)
		}
		if !raft.IsEmptyHardState(rd.HardState) {
			if err := rl.SetHardState(b, rd.HardState); err != nil {
				return fmt.Errorf("group %d: write hard state: %w", r.g.id, err)
			}
		}
		sync = sync || rd.MustSync
	}
	if b.Len() > 0 {
		if err := b.Commit(sync); err != nil {
			return fmt.Errorf("commit ready batch: %w", err)
		}
		h.m.entriesWritten.Add(uint64(entries))
		if sync {
			h.m.fsyncs.Add(1)
			h.m.syncedEntries.Add(uint64(entries))
		}
	}
	for _, r := range readies {
		rd := &r.rd
		if !raft.IsEmptySnap(rd.Snapshot) {
			r.g.stable = rd.Snapshot.GetMetadata().GetIndex()
		}
		if n := len(rd.Entries); n > 0 {
			// Append replaced any suffix after the first new entry.
			r.g.stable = rd.Entries[n-1].GetIndex()
		}
	}

	for _, r := range readies {
		msgs := r.rd.Messages
		if r.g.dropHeartbeatResp {
			// The answer to a quiesce message (quiesce.go): the leader does not wait for it.
			r.g.dropHeartbeatResp = false
			msgs = dropHeartbeatResps(msgs)
		}
		if len(msgs) > 0 {
			msgs = h.coalesce(r.g.id, msgs)
		}
		if len(msgs) > 0 {
			h.cfg.Transport.Send(r.g.id, h.transferSnapshots(r.g, msgs))
		}
	}
	h.flushBeats()

	var snaps []*Group
	for _, r := range readies {
		g := r.g
		if err := h.restore(g, r.rd.Snapshot); err != nil {
			return err
		}
		if err := h.applyEntries(g, r.rd.CommittedEntries[r.early:]); err != nil {
			return err
		}
		// After applying: entries committed under the old leader completed
		// their futures above instead of being reported dropped.
		if r.rd.SoftState != nil {
			h.noteSoftState(g, r.rd.SoftState)
		}
		g.rn.Advance(r.rd)
		h.markDirty(g)
		h.maybeCampaign(g)
		h.maybeRecovered(g)
		if g.sm != nil && (h.snapshotDue(g) || g.confSnap || h.logFull(g)) {
			g.confSnap = false
			snaps = append(snaps, g)
		}
	}
	if len(snaps) > 0 {
		if err := h.snapshot(snaps); err != nil {
			return err
		}
	}
	return nil
}

// noteSoftState follows leadership: in-flight proposals fail when the
// leader changes, queued ones go to raft once a leader is known, and a lone
// voter stops ticking while it leads.
func (h *Host) noteSoftState(g *Group, ss *raft.SoftState) {
	if ss.Lead == g.lead {
		return
	}
	prev := g.lead
	g.lead = ss.Lead
	g.leader.Store(ss.Lead)
	if ss.Lead != raft.None {
		g.takingLead = 0 // a leader known: held proposals go to it (listed again below)
	}
	if prev != raft.None && len(g.inflight) > 0 {
		h.m.dropped.Add(uint64(len(g.inflight)))
		g.failInflight(fmt.Errorf("%w: leader changed from %d to %d", ErrDropped, prev, ss.Lead))
	}
	if ss.Lead != raft.None && g.queued.Load() {
		h.inMu.Lock()
		h.proposers = append(h.proposers, g)
		h.inMu.Unlock()
		h.poke()
	}
	h.unquiesce(g)
	if g.singleVoter && ss.Lead == h.cfg.NodeID {
		delete(h.ticking, g)
	}
	g.serving.Store(false)
	g.leaderTerm = 0
	g.leadSince.Store(0)
	g.confirmed.Store(nil)
	if ss.Lead == h.cfg.NodeID {
		g.leadSince.Store(h.leaseClock())
		g.leaderTerm = g.rn.BasicStatus().GetTerm()
		h.log.Debug("group leader", zap.Uint64("group", g.id))
	}
}

// restore installs a snapshot sent by the leader into the state machine.
func (h *Host) restore(g *Group, snap *raftpb.Snapshot) error {
	if raft.IsEmptySnap(snap) {
		return nil
	}
	meta := snap.GetMetadata()
	if g.sm != nil {
		if err := g.sm.Restore(snap.GetData()); err != nil {
			return fmt.Errorf("group %d: restore snapshot at %d: %w", g.id, meta.GetIndex(), err)
		}
	}
	g.applied = meta.GetIndex()
	g.snapIndex = g.applied
	g.logBytes, g.snapBytes = 0, uint64(len(snap.GetData()))
	g.setConfState(meta.GetConfState())
	h.noteConfState(g)
	g.appliedAt.Store(g.applied)
	h.m.received.Add(1)
	return h.noteSnapshotConf(g, meta)
}

// applyEntries applies committed entries to the state machine and completes
// their proposals.
func (h *Host) applyEntries(g *Group, ents []*raftpb.Entry) error {
	self := h.cfg.NodeID
	for _, e := range ents {
		idx := e.GetIndex()
		if idx <= g.applied {
			continue
		}
		if g.leaderTerm != 0 && e.GetTerm() == g.leaderTerm && !g.serving.Load() {
			// An entry of this leader's own term: everything committed before is applied.
			g.serving.Store(true)
		}
		switch e.GetType() {
		case raftpb.EntryNormal:
			if len(e.GetData()) == 0 || g.sm == nil {
				break // a new leader's empty entry, or a parked group's stand-in
			}
			node, seq, data, ok := decodeEntry(e.GetData())
			if !ok {
				h.log.Error("entry not written by a cluster host; skipped",
					zap.Uint64("group", g.id), zap.Uint64("index", idx))
				break
			}
			g.logBytes += uint64(len(data))
			result := g.sm.Apply(idx, data)
			if node == self {
				if p := g.inflight[seq]; p != nil {
					delete(g.inflight, seq)
					if p.cb != nil {
						p.cb(result, nil)
					}
				}
			}
		case raftpb.EntryConfChange:
			var cc raftpb.ConfChange
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				return fmt.Errorf("group %d: conf change at %d: %w", g.id, idx, err)
			}
			g.setConfState(g.rn.ApplyConfChange(&cc))
			h.noteConfState(g)
		case raftpb.EntryConfChangeV2:
			var cc raftpb.ConfChangeV2
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				return fmt.Errorf("group %d: conf change at %d: %w", g.id, idx, err)
			}
			g.setConfState(g.rn.ApplyConfChange(&cc))
			h.noteConfState(g)
			if err := h.noteConfChange(g, idx, &cc); err != nil {
				return fmt.Errorf("group %d: conf change at %d: %w", g.id, idx, err)
			}
		}
		g.applied = idx
		h.m.applied.Add(1)
	}
	g.appliedAt.Store(g.applied)
	return nil
}

// maybeCampaign makes a lone voter campaign as soon as raft lets it: once
// the entries committed at start (conf changes among them) are applied.
func (h *Host) maybeCampaign(g *Group) {
	if !g.campaignPending || g.applied < g.campaignAt {
		return
	}
	g.campaignPending = false
	if err := g.rn.Campaign(); err != nil {
		h.log.Warn("campaign", zap.Uint64("group", g.id), zap.Error(err))
	}
	h.markDirty(g)
}

func (h *Host) maybeRecovered(g *Group) {
	if g.applied >= g.recoverAt && !g.isRecovered() {
		close(g.recovered)
	}
}

// snapshotDue reports whether g has applied enough since its last snapshot to take another:
// SnapshotEntries entries or SnapshotMaxLogBytes bytes of them (a log of large batch entries must not
// wait for 10,000 of them), but never fewer entries than a LogKeeper whose snapshot is large
// asks for, so that snapshots cost a bounded share of the log.
func (h *Host) snapshotDue(g *Group) bool {
	n := g.applied - g.snapIndex
	if n == 0 || (g.keeper != nil && n < g.keeper.SnapshotInterval()) {
		return false
	}
	return n >= h.cfg.SnapshotEntries || g.logBytes >= h.cfg.SnapshotMaxLogBytes
}

// Compacting while the memtable holds it. A durable queue's log is its message store, and
// with consumers keeping up nearly every entry is consumed within milliseconds of its write.
// Pebble puts every write into its memtable (and its WAL); a full memtable is flushed to an
// sstable (the bodies to blob files), unless what it holds was deleted meanwhile: a flush drops
// the keys a range deletion in the same flush covers. With a snapshot every SnapshotEntries
// (10,000 entries, about 600 MiB of 1 KiB messages in batch entries) the log is compacted long
// after its memtable was flushed, so every consumed body was written twice, once to the WAL
// and once to an sstable, and the flush, the compactions of those sstables and the deletion of
// their files cost about 5 % of the broker's CPU in the 1p/1c persistent benchmark
// (docs/performance.md, "Where a persistent message's CPU goes"). logFull snapshots a group
// whose only member is this node once SnapshotLogBytes of entries were applied since its last
// snapshot, so the log is compacted while its entries are still in the memtable. A snapshot
// costs about its size (the live records of a queue, written unsynced), so it waits for at
// least snapshotLogRatio times its last size: snapshots stay a small share of the bytes the
// log writes, as SnapshotInterval keeps them in entries. A group with other members keeps to
// SnapshotEntries: compacting it often would make a follower a little behind (restarted, or
// slow) catch up from a snapshot rather than from the log.
const snapshotLogRatio = 16

// logFull reports whether g should snapshot for the bytes of log it applied (see above).
func (h *Host) logFull(g *Group) bool {
	return h.cfg.SnapshotLogBytes > 0 && g.singleVoter && g.logBytes >= uint64(h.cfg.SnapshotLogBytes) &&
		g.logBytes >= snapshotLogRatio*g.snapBytes
}

// snapshot takes a state-machine snapshot of each group and compacts its
// log, all in one batch. The batch needs no fsync: if a crash loses it, the
// log it would have compacted is still there.
func (h *Host) snapshot(gs []*Group) error {
	b := h.eng.NewBatch()
	defer b.Close()
	for _, g := range gs {
		data, err := g.sm.Snapshot()
		if err != nil {
			// The log still holds everything: try again after more entries.
			h.log.Error("state machine snapshot failed", zap.Uint64("group", g.id), zap.Error(err))
			g.snapIndex, g.logBytes = g.applied, 0
			continue
		}
		if err := g.log.CreateSnapshot(b, g.applied, g.confState, data); err != nil {
			return fmt.Errorf("group %d: create snapshot at %d: %w", g.id, g.applied, err)
		}
		compactTo := g.applied
		if h.cfg.SnapshotCatchUpEntries < compactTo {
			compactTo -= h.cfg.SnapshotCatchUpEntries
		} else {
			compactTo = 0
		}
		if g.keeper != nil {
			if keep := g.keeper.KeepFrom(); keep > 0 && compactTo >= keep {
				compactTo = keep - 1
			}
		}
		if compactTo > 0 {
			if err := g.log.Compact(b, compactTo); err != nil && !errors.Is(err, raft.ErrCompacted) {
				return fmt.Errorf("group %d: compact to %d: %w", g.id, compactTo, err)
			}
		}
		if err := g.log.SetApplied(b, g.applied); err != nil {
			return fmt.Errorf("group %d: record applied %d: %w", g.id, g.applied, err)
		}
		g.snapIndex = g.applied
		g.logBytes, g.snapBytes = 0, uint64(len(data))
		h.m.snapshots.Add(1)
	}
	if err := b.Commit(false); err != nil {
		return fmt.Errorf("commit snapshot batch: %w", err)
	}
	return nil
}

// dropHeartbeatResps returns msgs without its heartbeat responses, in a new slice (raft owns
// the one it handed out).
func dropHeartbeatResps(msgs []*raftpb.Message) []*raftpb.Message {
	out := make([]*raftpb.Message, 0, len(msgs))
	for _, m := range msgs {
		if m.GetType() != raftpb.MsgHeartbeatResp {
			out = append(out, m)
		}
	}
	return out
}
