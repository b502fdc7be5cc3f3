package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/parleymq/parley/storage"
)

// Host runs every raft group of one node on one scheduler goroutine (see
// scheduler.go). Create it with NewHost, Start it, add groups, Stop it; the
// caller owns the storage engine and closes it after Stop.
//
// Lock order: Host.mu, then Host.inMu, then a group's proposalQueue.mu. No
// lock is held while calling a state machine or a callback.
type Host struct {
	cfg  Config
	eng  *storage.Engine
	log  *zap.Logger
	rlog raftLogger

	// nextSeq numbers proposals; see encodeEntry.
	nextSeq   atomic.Uint64
	proposals atomic.Uint64

	mu      sync.Mutex
	groups  map[uint64]*Group // running or being added
	state   hostState
	cancel  context.CancelFunc
	donec   chan struct{} // closed when the loop has exited
	loopErr error         // why the loop exited, if it failed

	// The loop's inbox: anything another goroutine hands the loop goes
	// through here, and a send on wake (buffer 1, never blocks) makes sure
	// the loop looks.
	inMu      sync.Mutex
	proposers []*Group
	incoming  []incomingMsg
	wake      chan struct{}
	ops       chan *op

	// ---- loop-owned ----
	running    map[uint64]*Group
	ticking    map[*Group]struct{}
	liveness   map[uint64]*peerLiveness
	dirty      []*Group
	dirtySpare []*Group
	spare      []*Group
	propBuf    []*proposal
	readies    []groupReady
	takers     []*Group // groups whose lead this node asked for (takelead.go)
	// held are groups whose lazy proposals wait (lazy.go); lazyTimer wakes the loop at
	// lazyAt, when the first of them is due.
	held      []*Group
	lazyTimer *time.Timer
	lazyAt    time.Time
	// beatTr is the transport when it carries coalesced heartbeats (heartbeat.go); beats
	// collects a cycle's heartbeats by peer.
	beatTr HeartbeatTransport
	beats  map[uint64][]Heartbeat

	m counters

	// Leases (lease.go): the clock's start and base, the period, and each peer's newest echo.
	epoch       time.Time
	leaseBase   int64
	leasePeriod time.Duration
	acks        leaseAcks
	epochs      leaseAcks // each peer's connection epoch (lease.go's epochOf)

	// Membership (membership.go). memberMu guards members alone (taken with no other lock);
	// changeMu runs one Join or Leave at a time.
	memberMu sync.Mutex
	members  map[uint64]string
	memberAt storedMembers // what set members, as stored
	// memberRPC: the RPC channel Join asks other groups' leaders over (ServeMembership; nil:
	// Join leads every group itself).
	memberRPC atomic.Pointer[RPC]
	changeMu  sync.Mutex
	// recordLock (one slot) is LockMembership's lock: group creation against record changes.
	recordLock  chan struct{}
	removedOnce atomic.Bool
}

type hostState int

const (
	stateNew hostState = iota
	stateRunning
	stateStopped
)

// incomingMsg is a message from a peer, or (msg nil) a transport's report
// about peer `to`.
type incomingMsg struct {
	group  uint64
	msg    *raftpb.Message
	to     uint64
	report report
	stamp  uint64 // a lease probe's or echo's
}

type report int

const (
	reportNone report = iota
	reportUnreachable
	reportSnapshotFinished
	reportSnapshotFailed
	// reportPeerUp and reportPeerDown are about node to, not a group.
	reportPeerUp
	reportPeerDown
	// reportLeaseProbe and reportLeaseEcho are node to's lease probe and echo (lease.go).
	reportLeaseProbe
	reportLeaseEcho
)

// op is a function the loop runs between two Ready cycles, for callers that
// need the loop's state (registering or removing a group).
type op struct {
	fn   func() error
	done chan error
}

// NewHost returns a host for cfg over eng. It does not start it.
func NewHost(cfg Config, eng *storage.Engine, log *zap.Logger) (*Host, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if eng == nil {
		return nil, fmt.Errorf("%w: nil storage engine", ErrInvalidConfig)
	}
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.Uint64("node", cfg.NodeID))
	h := &Host{
		cfg:      cfg,
		eng:      eng,
		log:      log,
		rlog:     newRaftLogger(log.Named("raft")),
		groups:   make(map[uint64]*Group),
		donec:    make(chan struct{}),
		wake:     make(chan struct{}, 1),
		ops:      make(chan *op),
		running:  make(map[uint64]*Group),
		ticking:  make(map[*Group]struct{}),
		liveness: make(map[uint64]*peerLiveness),

		lazyTimer: stoppedTimer(),

		recordLock: make(chan struct{}, 1),

		epoch:       time.Now(),
		leaseBase:   leaseBase(),
		leasePeriod: leasePeriodOf(cfg),
	}
	h.nextSeq.Store(uint64(time.Now().UnixNano()))
	if bt, ok := cfg.Transport.(HeartbeatTransport); ok && !cfg.noCoalesce {
		h.beatTr = bt
	}
	if err := h.loadMembers(); err != nil {
		return nil, err
	}
	return h, nil
}

// Start starts the scheduler. It runs until Stop is called or ctx ends.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != stateNew {
		return fmt.Errorf("start: %w", ErrStopped)
	}
	ctx, h.cancel = context.WithCancel(ctx)
	h.state = stateRunning
	go h.run(ctx)
	h.announceMembers()
	h.log.Info("cluster host started", zap.Int("members", len(h.members)))
	return nil
}

// Stop stops the scheduler and waits for it to exit. Proposals not yet
// applied complete with ErrStopped; their entries may still be in the log
// and be applied after a restart.
func (h *Host) Stop() {
	h.mu.Lock()
	prev := h.state
	h.state = stateStopped
	cancel := h.cancel
	h.mu.Unlock()
	switch {
	case prev == stateNew:
		close(h.donec)
	case cancel != nil:
		cancel()
		<-h.donec
	}
}

// Err is why the scheduler stopped on its own (a storage failure), or nil.
func (h *Host) Err() error {
	select {
	case <-h.donec:
		return h.loopErr
	default:
		return nil
	}
}

// do runs fn on the loop goroutine and returns its error.
func (h *Host) do(ctx context.Context, fn func() error) error {
	o := &op{fn: fn, done: make(chan error, 1)}
	select {
	case h.ops <- o:
	case <-h.donec:
		return h.stoppedErr()
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-o.done:
		return err
	case <-h.donec:
		return h.stoppedErr()
	}
}

func (h *Host) stoppedErr() error {
	if err := h.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrStopped, err)
	}
	return ErrStopped
}

// AddGroup starts group id with sm as its state machine and every peer of
// the Config as its voters. A group with data in storage is recovered: sm is
// restored from the group's last snapshot and the log after it is replayed
// into sm.Apply before AddGroup returns, so the caller sees the recovered
// state (for a group whose only voter is this node that is every entry in
// its log; otherwise every entry known committed). A new group is
// bootstrapped. A single-voter group campaigns as soon as it may, so it
// leads without waiting for an election timeout.
func (h *Host) AddGroup(ctx context.Context, id uint64, sm StateMachine) (*Group, error) {
	if sm == nil {
		return nil, fmt.Errorf("add group %d: nil state machine", id)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("add group %d: %w", id, err)
	}
	return h.addGroup(ctx, id, sm, false, h.bootstrapVoters)
}

// addGroup adds a group, parked (a replica, see replica.go) or not. A parked group already
// running is adopted instead. A new group is bootstrapped with the voters voters returns (when
// voters is not nil and returns some: see prepare).
func (h *Host) addGroup(ctx context.Context, id uint64, sm StateMachine, parked bool, voters func() []uint64) (*Group, error) {
	g := &Group{
		id:        id,
		host:      h,
		recovered: make(chan struct{}),
		inflight:  make(map[uint64]*proposal),
		parked:    parked,
	}
	g.setSM(sm)
	h.mu.Lock()
	if h.state != stateRunning {
		h.mu.Unlock()
		return nil, fmt.Errorf("add group %d: %w", id, ErrStopped)
	}
	if old, ok := h.groups[id]; ok {
		h.mu.Unlock()
		if !parked {
			return h.adopt(ctx, old, sm)
		}
		return nil, fmt.Errorf("add group %d: %w", id, ErrGroupExists)
	}
	h.groups[id] = g // reserved: a concurrent AddGroup of id fails
	h.mu.Unlock()

	unreserve := func() {
		h.mu.Lock()
		if h.groups[id] == g {
			delete(h.groups, id)
		}
		h.mu.Unlock()
	}
	if err := h.prepare(g, voters); err != nil {
		unreserve()
		return nil, fmt.Errorf("add group %d: %w", id, err)
	}
	if err := h.do(ctx, func() error { h.register(g); return nil }); err != nil {
		unreserve()
		return nil, fmt.Errorf("add group %d: %w", id, err)
	}
	select {
	case <-g.recovered:
		if g.recoverErr != nil {
			return nil, fmt.Errorf("add group %d: %w", id, g.recoverErr)
		}
	case <-ctx.Done():
		// Give up: take the group out of the loop but keep its data.
		_ = h.do(context.WithoutCancel(ctx), func() error {
			h.unregister(g, ErrGroupRemoved)
			return nil
		})
		unreserve()
		return nil, fmt.Errorf("add group %d: %w", id, ctx.Err())
	case <-h.donec:
		unreserve()
		return nil, fmt.Errorf("add group %d: %w", id, h.stoppedErr())
	}
	h.log.Debug("group running", zap.Uint64("group", id), zap.Uint64("applied", g.Applied()))
	return g, nil
}

// prepare opens the group's log, restores its snapshot into the state
// machine and builds its RawNode, on the caller's goroutine: nothing of it is
// shared with the loop yet.
func (h *Host) prepare(g *Group, bootVoters func() []uint64) error {
	rl, err := h.eng.RaftLog(g.id)
	if err != nil {
		return fmt.Errorf("open raft log: %w", err)
	}
	hs, cs, err := rl.InitialState()
	if err != nil {
		return fmt.Errorf("read raft state: %w", err)
	}
	if g.keeper != nil {
		g.keeper.AttachLog(LogReader{log: rl})
	}
	snap, err := rl.Snapshot()
	if err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	last, err := rl.LastIndex()
	if err != nil {
		return fmt.Errorf("read last index: %w", err)
	}
	if !raft.IsEmptySnap(snap) && g.sm != nil {
		if err := g.sm.Restore(snap.GetData()); err != nil {
			return fmt.Errorf("restore snapshot at %d: %w", snap.GetMetadata().GetIndex(), err)
		}
	}
	if !raft.IsEmptySnap(snap) {
		g.applied = snap.GetMetadata().GetIndex()
		g.snapIndex = g.applied
	}
	g.setConfState(cs)
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        h.cfg.NodeID,
		ElectionTick:              h.cfg.ElectionTicks,
		HeartbeatTick:             h.cfg.HeartbeatTicks,
		Storage:                   rl,
		Applied:                   g.applied,
		MaxSizePerMsg:             h.cfg.MaxSizePerMsg,
		MaxCommittedSizePerReady:  h.cfg.MaxSizePerMsg,
		MaxUncommittedEntriesSize: h.cfg.MaxUncommittedEntriesSize,
		MaxInflightMsgs:           h.cfg.MaxInflightMsgs,
		CheckQuorum:               true,
		PreVote:                   true,
		Logger:                    h.rlog,
	})
	if err != nil {
		return fmt.Errorf("new raft node: %w", err)
	}
	// A new group: this node writes its first configuration, the members it records
	// (membership.go), unless it is not a member yet (it joins: the leader sends it).
	var voters []uint64
	if bootVoters != nil {
		voters = bootVoters()
	}
	boot := len(voters) > 0 && raft.IsEmptyHardState(hs) && last == 0 && raft.IsEmptySnap(snap)
	if boot {
		peers := make([]raft.Peer, len(voters))
		for i, v := range voters {
			peers[i] = raft.Peer{ID: v}
		}
		if err := rn.Bootstrap(peers); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	g.rn = rn
	g.log = rl
	g.stable = last // what the engine recovered is on disk
	// A lone voter is one by its configuration, not by the node's: a node that joins lists a
	// single peer (the member it knows) and is no lone voter of anything, and a group of a
	// cluster of one stops being one when a node joins it (noteConfState).
	g.singleVoter = h.soleMember(cs)
	if boot || (len(cs.GetVoters()) == 0 && last > 0) {
		// A new group has the members as voters; so has a stored one with no snapshot yet:
		// storage knows a configuration only from a snapshot, and the bootstrap's conf
		// changes in the log are applied again only after recovery. Judged by its empty
		// configuration, a lone voter's group restarted before its first snapshot would
		// recover only up to its stored commit index, which lags the log it fsynced, and
		// apply the rest after AddGroup returned (a confirmed message missing from the queue
		// the broker rebuilt; TestLoneVoterRecoversEveryEntryWithoutSnapshot). A node that
		// is no member yet has no voters here, so it is no lone voter.
		g.singleVoter = slices.Equal(voters, []uint64{h.cfg.NodeID})
	}
	g.campaignAt = rn.BasicStatus().HardState.GetCommit()
	g.campaignPending = g.singleVoter
	g.recoverAt = g.campaignAt
	if g.singleVoter && last > g.recoverAt {
		// Every entry in a lone voter's log was fsynced by it, so its next
		// term commits them all: the caller should see them applied.
		g.recoverAt = last
	}
	g.appliedAt.Store(g.applied)
	return nil
}

// RemoveGroup stops group id and destroys its data (its queue was deleted).
// Proposals not yet applied complete with ErrGroupRemoved. A group stored but
// not running is destroyed too.
func (h *Host) RemoveGroup(ctx context.Context, id uint64) error {
	h.mu.Lock()
	g := h.groups[id]
	running := h.state == stateRunning
	h.mu.Unlock()
	if !running {
		return fmt.Errorf("remove group %d: %w", id, ErrStopped)
	}
	err := h.do(ctx, func() error {
		var rl *storage.RaftLog
		if lg := h.running[id]; lg != nil {
			h.unregister(lg, ErrGroupRemoved)
			rl = lg.log
		} else {
			if g != nil {
				return ErrGroupExists // still being added
			}
			stored, err := h.eng.Groups()
			if err != nil {
				return err
			}
			found := false
			for _, s := range stored {
				found = found || s == id
			}
			if !found {
				return ErrUnknownGroup
			}
			if rl, err = h.eng.RaftLog(id); err != nil {
				return err
			}
		}
		b := h.eng.NewBatch()
		defer b.Close()
		if err := rl.Destroy(b); err != nil {
			return fmt.Errorf("destroy: %w", err)
		}
		return b.Commit(true)
	})
	if err != nil {
		return fmt.Errorf("remove group %d: %w", id, err)
	}
	h.mu.Lock()
	if h.groups[id] == g {
		delete(h.groups, id)
	}
	h.mu.Unlock()
	h.log.Debug("group removed", zap.Uint64("group", id))
	return nil
}

// StoredGroups lists the groups with data in storage, running or not: the
// groups to recover at start.
func (h *Host) StoredGroups() ([]uint64, error) {
	ids, err := h.eng.Groups()
	if err != nil {
		return nil, fmt.Errorf("stored groups: %w", err)
	}
	return ids, nil
}

// Group returns running group id, or nil.
func (h *Host) Group(id uint64) *Group {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.groups[id]
}

// Receive hands the host raft messages for group from another node; the
// Transport calls it. It never blocks; messages for a group this host does
// not run are dropped (raft retransmits).
func (h *Host) Receive(group uint64, msgs []*raftpb.Message) {
	select {
	case <-h.donec:
		return
	default:
	}
	h.inMu.Lock()
	for _, m := range msgs {
		h.incoming = append(h.incoming, incomingMsg{group: group, msg: m})
	}
	h.inMu.Unlock()
	h.poke()
}

// ReportUnreachable tells group's raft that the last message to node to
// could not be delivered, so the leader probes instead of streaming to it.
// The Transport calls it; it never blocks.
func (h *Host) ReportUnreachable(group, to uint64) {
	h.enqueueReport(incomingMsg{group: group, to: to, report: reportUnreachable})
}

// ReportSnapshot tells group's raft whether the snapshot it sent to node to
// was delivered. A transport must report every MsgSnap it carries, or drops:
// until it does, the leader sends that follower nothing else.
func (h *Host) ReportSnapshot(group, to uint64, failed bool) {
	r := reportSnapshotFinished
	if failed {
		r = reportSnapshotFailed
	}
	h.enqueueReport(incomingMsg{group: group, to: to, report: r})
}

// PeerUp tells the host that the transport has a working connection to node id; PeerDown
// that it lost it. Liveness is per node: it is how quiesced groups learn that their leader's
// node is gone (quiesce.go). A transport that never reports keeps every peer dead to the host,
// so groups with peers never quiesce. They never block.
func (h *Host) PeerUp(id uint64) { h.enqueueReport(incomingMsg{to: id, report: reportPeerUp}) }

// PeerDown: see PeerUp.
func (h *Host) PeerDown(id uint64) { h.enqueueReport(incomingMsg{to: id, report: reportPeerDown}) }

func (h *Host) enqueueReport(im incomingMsg) {
	select {
	case <-h.donec:
		return
	default:
	}
	h.inMu.Lock()
	h.incoming = append(h.incoming, im)
	h.inMu.Unlock()
	h.poke()
}

func (h *Host) enqueueProposer(g *Group) {
	h.inMu.Lock()
	h.proposers = append(h.proposers, g)
	h.inMu.Unlock()
	h.poke()
}

func (h *Host) poke() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// stoppedTimer returns a timer that has not started.
func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}
