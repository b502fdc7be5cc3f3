package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/parleymq/parley/storage"
)

// StateMachine is what a group replicates; the broker/meta and broker/queue
// drivers implement it. The host calls its methods from its loop goroutine
// only, one at a time (Restore also from AddGroup's caller, before the group
// runs), so an implementation needs no lock against the host, only against
// its own readers.
type StateMachine interface {
	// Apply applies the committed entry at index and returns the result
	// handed to the proposer's future. It must be deterministic: every
	// replica, and every replay after a restart, applies the same entries
	// in the same order and must reach the same state. data is the log's
	// own copy, never reused: it may be kept (a message body is stored once
	// and shared), but never modified.
	Apply(index uint64, data []byte) any
	// Snapshot returns the state at the last applied index.
	Snapshot() ([]byte, error)
	// Restore replaces the state with a snapshot's (at recovery, or a
	// snapshot sent by the leader).
	Restore(data []byte) error
}

// Group is one raft group run by a Host: the handle proposers use. Fields
// below the line are owned by the host's loop goroutine.
type Group struct {
	id   uint64
	host *Host

	queue proposalQueue
	// queued is true while the group is on the host's list of groups with
	// proposals waiting, so a burst of proposals costs one list entry and
	// one wake-up.
	queued atomic.Bool

	leader    atomic.Uint64
	appliedAt atomic.Uint64
	// serving is true while this node leads the group and has applied an entry of its own
	// term, hence every entry committed before it (see replica.go).
	serving atomic.Bool
	// leadSince is the lease clock when this node last became the group's leader, 0 when it
	// does not lead; voters is the configuration the lease counts (lease.go).
	leadSince atomic.Int64
	voters    atomic.Pointer[leaseVoters]
	// confirmed is, while this node leads, the connection epoch in which each peer last
	// answered it in its term (lease.go); replaced, never changed in place.
	confirmed  atomic.Pointer[map[uint64]uint64]
	recovered  chan struct{}
	recoverErr error // set before recovered is closed, if recovery failed

	// ---- loop-owned ----
	rn        *raft.RawNode
	log       *storage.RaftLog
	sm        StateMachine
	keeper    LogKeeper            // sm, when it keeps entries in the log; set by setSM
	inflight  map[uint64]*proposal // proposed to raft, by sequence number
	lead      uint64
	applied   uint64
	snapIndex uint64
	// logBytes is the bytes of entries applied since the last snapshot, snapBytes the size of
	// that snapshot (Config.SnapshotLogBytes).
	logBytes, snapBytes uint64
	// stable is the last index of the log known durable here.
	stable    uint64
	confState *raftpb.ConfState
	// campaignAt is the commit index at start: once it is applied (no conf
	// change left to apply), a single-voter group campaigns.
	campaignAt      uint64
	campaignPending bool
	// recoverAt is the index AddGroup waits to see applied.
	recoverAt   uint64
	singleVoter bool
	dirty       bool
	removed     bool
	// parked: the group replicates its log, but its state machine is a stand-in (possibly
	// nil) to be replaced by AddGroup; a nil stand-in takes no snapshot (see replica.go).
	parked bool
	// takingLead is the tick until which this node holds the group's proposals while it takes
	// the lead (takelead.go); 0 when it does not.
	takingLead uint64
	// leaderTerm is the term in which this node became leader (0 when it does not lead).
	leaderTerm uint64
	// quiesced: the group does not tick until something wakes it (quiesce.go).
	quiesced bool
	// dropHeartbeatResp: the next Ready's heartbeat responses answer a quiesce message and
	// are not sent.
	dropHeartbeatResp bool
	// listed marks the group while takeProposals looks at it (to merge the held list).
	listed bool
	// confSnap asks for a snapshot after a conf change (membership.go): a node added to a
	// compacted group catches up from the stored snapshot, which must name it.
	confSnap bool
}

// setSM installs the group's state machine (loop only, or before the group runs).
func (g *Group) setSM(sm StateMachine) {
	g.sm = sm
	g.keeper, _ = sm.(LogKeeper)
}

// ID is the group's id.
func (g *Group) ID() uint64 { return g.id }

// Leader is the node id of the group's leader as this node last saw it, or
// 0 when it knows none.
func (g *Group) Leader() uint64 { return g.leader.Load() }

// NodeID is this host's node id.
func (h *Host) NodeID() uint64 { return h.cfg.NodeID }

// IsLeader reports whether this node leads the group.
func (g *Group) IsLeader() bool { return g.leader.Load() == g.host.cfg.NodeID }

// Applied is the index of the last entry applied to the state machine.
func (g *Group) Applied() uint64 { return g.appliedAt.Load() }

// Propose appends data to the group's log. The returned future completes
// with the state machine's result once the entry is committed (fsynced on a
// majority of the group's voters) and applied. Propose itself does not wait
// for the log: proposals from many goroutines are queued for the host's loop,
// which hands everything queued to raft at each wake-up.
func (g *Group) Propose(ctx context.Context, data []byte) (*Future, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f := newFuture()
	if err := g.ProposeAsync(data, f.complete); err != nil {
		return nil, err
	}
	return f, nil
}

// ProposeAsync is Propose for hot paths: cb is called once with the result
// or the error, with no goroutine or channel per proposal. cb runs on the
// host's loop goroutine, which drives every group of the node: it must not
// block or call back into the host. A nil cb proposes without caring about
// the outcome. The error is ErrStopped or ErrGroupRemoved if the proposal was
// not queued (then cb is not called).
func (g *Group) ProposeAsync(data []byte, cb func(result any, err error)) error {
	p := &proposal{seq: g.host.nextSeq.Add(1), cb: cb}
	p.data = encodeEntry(g.host.cfg.NodeID, p.seq, data)
	return g.enqueue(p)
}

// ProposeAsyncInPlace is ProposeAsync for an entry whose first EntryHeaderRoom bytes are
// left free for the proposal header: the header is written there, so the data is not copied
// again behind a header (a persistent message's body is in it). The group owns entry from
// then on; the caller must not touch it again (the host may reuse it: see EntryBuffer).
func (g *Group) ProposeAsyncInPlace(entry []byte, cb func(result any, err error)) error {
	if len(entry) < EntryHeaderRoom {
		return fmt.Errorf("group %d: entry of %d bytes has no room for the %d-byte header", g.id, len(entry), EntryHeaderRoom)
	}
	p := &proposal{seq: g.host.nextSeq.Add(1), cb: cb, inPlace: true}
	p.data = putEntryHeader(entry, g.host.cfg.NodeID, p.seq)
	return g.enqueue(p)
}

// ProposeLazy is ProposeAsync for an entry that may wait before it is made durable: the host
// writes it with the next cycle that writes other proposals (so it costs no fsync of its own),
// or after Config.LazyProposalDelay at the latest. For entries whose loss in a crash is allowed
// and whose proposer does not wait: a queue's removals (acks), whose loss only redelivers.
// Entries of one group still commit in the order they were proposed, lazy or not.
func (g *Group) ProposeLazy(data []byte, cb func(result any, err error)) error {
	p := &proposal{seq: g.host.nextSeq.Add(1), cb: cb, lazy: true}
	p.data = encodeEntry(g.host.cfg.NodeID, p.seq, data)
	return g.enqueue(p)
}

// LazyEntry is a lazy proposal that more data may be appended to while it waits in its
// group's queue (Group.ProposeLazyOpen, Group.AppendLazy). The zero value is no proposal.
type LazyEntry struct{ p *proposal }

// ProposeLazyOpen is ProposeLazy without a callback, for an entry the proposer may extend
// with AppendLazy until the host takes it: a queue's removals (acks) of several delivery rounds
// then share one entry instead of one each (lazy.go).
func (g *Group) ProposeLazyOpen(data []byte) (LazyEntry, error) {
	p := &proposal{seq: g.host.nextSeq.Add(1), lazy: true}
	p.data = encodeEntry(g.host.cfg.NodeID, p.seq, data)
	if err := g.enqueue(p); err != nil {
		return LazyEntry{}, err
	}
	return LazyEntry{p}, nil
}

// AppendLazy appends more to e's data if e is still waiting in g's queue (the host has not
// taken it) and its data stays within maxBytes. False means nothing was appended: the caller
// proposes more as an entry of its own.
//
// Proposals queued after e stay after it in the log, so what is appended lands before them,
// although it came later: the caller may append only what commutes with everything it may
// have proposed since e. A queue's removals do (broker/queue.go, logRemoved): a message is
// removed only once its enqueue entry has committed, so before e was taken, hence in an entry
// before e; and a removal changes nothing another entry of the queue reads, other than the
// removed message's own records, which a later entry drops for a message already gone.
func (g *Group) AppendLazy(e LazyEntry, more []byte, maxBytes int) bool {
	if e.p == nil {
		return false
	}
	q := &g.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	// Not waiting: taken, or failed by close; the data is the host's from then on.
	if !e.p.waiting || len(e.p.data)+len(more) > maxBytes {
		return false
	}
	e.p.data = append(e.p.data, more...)
	return true
}

// OpenEntry is an eager proposal that its proposer may extend while it waits in its group's
// queue (Group.ProposeOpenInPlace, Group.Extend). The zero value is no proposal.
type OpenEntry struct{ p *proposal }

// ProposeOpenInPlace is ProposeAsyncInPlace for an entry the proposer may extend with Extend
// until the host takes it: a durable queue's publishes of several inbox batches then share one
// enqueue entry, and one raft entry, Pebble key, apply and callback, instead of one each
// (broker/queue.go, proposeBatch). cb gets the outcome of the entry as extended.
func (g *Group) ProposeOpenInPlace(entry []byte, cb func(result any, err error)) (OpenEntry, error) {
	if len(entry) < EntryHeaderRoom {
		return OpenEntry{}, fmt.Errorf("group %d: entry of %d bytes has no room for the %d-byte header", g.id, len(entry), EntryHeaderRoom)
	}
	p := &proposal{seq: g.host.nextSeq.Add(1), cb: cb, inPlace: true}
	p.data = putEntryHeader(entry, g.host.cfg.NodeID, p.seq)
	if err := g.enqueue(p); err != nil {
		return OpenEntry{}, err
	}
	return OpenEntry{p}, nil
}

// Extend lets fn extend e's data while e still waits in g's queue and no eager proposal was
// queued after it: fn gets the data (the proposal header first) and returns it extended,
// and it may only append to it and write within what the caller wrote itself; it runs under
// the queue's lock, so the host cannot take e meanwhile, and must not block or call into g.
// False means e was taken by the host (or failed, or has an eager proposal behind it) and fn
// was not called: the caller proposes what it had as an entry of its own.
//
// What is appended lands in the log before the lazy proposals queued after e (only lazy
// ones: an eager proposal behind e closes it), although it came later; lazy proposals are a
// queue's removals, which commute with its publishes (see AppendLazy). So the eager entries of
// a group keep exactly the order they were proposed in.
func (g *Group) Extend(e OpenEntry, fn func(data []byte) []byte) bool {
	if e.p == nil {
		return false
	}
	q := &g.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	if !e.p.waiting {
		return false
	}
	for i := len(q.props) - 1; i >= 0 && q.props[i] != e.p; i-- {
		if !q.props[i].lazy {
			return false
		}
	}
	e.p.data = fn(e.p.data)
	return true
}

func (g *Group) enqueue(p *proposal) error {
	q := &g.queue
	q.mu.Lock()
	if q.closed != nil {
		err := q.closed
		q.mu.Unlock()
		return fmt.Errorf("group %d: %w", g.id, err)
	}
	q.props = append(q.props, p)
	p.waiting = true
	if !p.lazy {
		q.eager++
	} else if q.lazySince.IsZero() {
		q.lazySince = time.Now()
	}
	// Under q.mu: the loop holding lazy proposals clears queued under it too (holdLazy), so
	// an eager proposal queued after that always puts the group back on the list.
	list := !g.queued.Swap(true)
	q.mu.Unlock()
	g.host.proposals.Add(1)
	if p.lazy {
		g.host.m.lazy.Add(1)
	}
	if list {
		g.host.enqueueProposer(g)
	}
	return nil
}

// takeProposals empties the queue; loop only.
func (g *Group) takeProposals(buf []*proposal) []*proposal {
	g.queued.Store(false)
	q := &g.queue
	q.mu.Lock()
	for _, p := range q.props {
		p.waiting = false
	}
	buf = append(buf, q.props...)
	clear(q.props)
	q.props = q.props[:0]
	q.eager, q.lazySince = 0, time.Time{}
	q.mu.Unlock()
	return buf
}

// close refuses new proposals with err and fails every queued and in-flight
// one with it; loop only (or after the loop has exited).
func (g *Group) close(err error) {
	q := &g.queue
	q.mu.Lock()
	if q.closed == nil {
		q.closed = err
	}
	props := q.props
	q.props = nil
	for _, p := range props {
		p.waiting = false
	}
	q.eager, q.lazySince = 0, time.Time{}
	q.mu.Unlock()
	for _, p := range props {
		p.fail(err)
	}
	g.failInflight(err)
}

func (g *Group) failInflight(err error) {
	for seq, p := range g.inflight {
		delete(g.inflight, seq)
		p.fail(err)
	}
}

func (p *proposal) fail(err error) {
	if p.cb != nil {
		p.cb(nil, err)
	}
}
