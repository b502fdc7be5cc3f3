package cluster

// Leader lease: a leader that is cut off stops serving before anyone else can lead.
//
// Raft keeps the log safe on its own: a leader cut off from its followers cannot commit. What
// it does not prevent is a cut-off leader *serving reads* (here: a serving node delivering the
// messages of its queues, accepting transient publishes) after the majority elected another
// leader that serves the same messages. A cut-off leader learns of its loss late: when its raft
// hears of the newer term, or when CheckQuorum steps it down (two election timeouts, and not at
// all while the group is quiesced: a quiesced leader does not tick). Group.HasLease closes that
// window: the leader may serve only while it holds a lease confirmed by a quorum of its group's
// voters.
//
// How the lease is confirmed. Every probeTicks ticks the host puts a lease probe, stamped with the time
// it is sent (this process's monotonic clock, never the wall clock), in the coalesced heartbeat
// list of each peer (heartbeat.go), whether or not any group is awake: a quiesced group 0 still
// gets its lease confirmed. The peer's host echoes the stamp back in its next list, once its loop
// has stepped everything that came before the probe (the groups' heartbeats of the same list
// included). Per peer, the host keeps the newest stamp echoed. A group's lease starts at the
// stamp that a quorum of its voters has echoed (this node counting as now), and lasts
// LeasePeriod from there: counted from when the probe was *sent*, so the time the probe and its
// echo spent on the way only shortens it.
//
// Why that is safe. A peer that echoed a probe sent at time s heard from this node at a time
// after s, and it will not help another node lead before s plus (ElectionTicks-1) ticks:
//   - a group awake on both sides: the probe's list carried this node's heartbeat for every
//     group it leads and that is awake, stepped before the echo was sent; a follower's election
//     clock restarts at a heartbeat and it refuses any (pre-)vote for ElectionTicks ticks
//     (CheckQuorum's vote lease in etcd raft), and the first of those ticks may come at once;
//   - a quiesced group: a quiesced follower's election clock stands still, it refuses votes
//     while its leader's node is live (quiesce.go), and it lets its clock run out only an
//     election timeout after the transport lost the leader's node (checkLiveness), which is
//     after the last thing it read from this node, the probe included.
// Any new leader needs the vote of a quorum, which shares a voter with the quorum that echoed,
// so nobody else leads before s + (ElectionTicks-1) ticks. LeasePeriod is two ticks less than an
// election timeout: one for that first early tick, one as the margin for the drift between two
// machines' clocks (quartz drift is parts per million: microseconds over a lease) and for timer
// jitter. With the defaults (100 ms ticks, 10 ticks) the lease is 800 ms.
//
// An echo is node-wide, but a peer's replica of one group may not know this node as its leader:
// the peer restarted (its replica knows no leader, and would vote for anyone), or is still
// recovering that group. So a peer's echo counts for a group only once the peer has answered
// this node, for that group and in this node's term, over its current connection (a response
// to an append or a heartbeat: confirmed, below). A peer that restarts breaks its connection,
// and with it every confirmation it gave (connEpoch). After a peer comes back, the groups this
// node leads wake and heartbeat it (quiesce.go), so its confirmations come back a round trip
// later.
//
// A group led since a time after the quorum's stamp has no lease yet (leadSince): the echoes
// that count must answer probes sent while this node led, so a node that just won an election
// serves after one round trip. A lease is only as good as its peers' echoes: a transport that
// does not carry heartbeat lists (no HeartbeatTransport, or a test's noCoalesce) cannot confirm
// one, and then HasLease is IsLeader, the behaviour before leases. A peer whose hello does not
// offer leases (a node of an older version) never echoes: run every node of a cluster on a
// version with leases, or the serving node's deliveries pause until a quorum does.
//
// A group whose only voter is this node always has its lease (nobody else can lead it).

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// leaseClock is the host's monotonic clock in nanoseconds: time since the host was made, plus a
// random base (leaseBase) so that the stamps of two processes of one node never pass for each
// other (an echo of a probe the previous process sent, arriving after a restart).
func (h *Host) leaseClock() int64 { return h.leaseBase + int64(time.Since(h.epoch)) }

// leaseBase is a random start for a host's lease clock, between 2^50 and 2^51 ns (13 days apart
// at least, far more than a lease).
func leaseBase() int64 { return 1<<50 + rand.Int64N(1<<50) }

// LeasePeriod is how long a lease lasts from the probe a quorum echoed (see the file comment).
func (h *Host) LeasePeriod() time.Duration { return h.leasePeriod }

// leasePeriodOf is cfg's lease period: ElectionTicks-2 ticks, at least one.
func leasePeriodOf(cfg Config) time.Duration {
	return cfg.TickInterval * time.Duration(max(cfg.ElectionTicks-2, 1))
}

// leaseAcks is the newest probe stamp each peer echoed, by node id.
type leaseAcks struct {
	mu sync.Mutex
	// m is replaced, never changed in place, so readers load it without the lock.
	m atomic.Pointer[map[uint64]*atomic.Int64]
}

// slot returns peer id's stamp, made on first use.
func (a *leaseAcks) slot(id uint64) *atomic.Int64 {
	if m := a.m.Load(); m != nil {
		if s := (*m)[id]; s != nil {
			return s
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.m.Load()
	if old != nil {
		if s := (*old)[id]; s != nil {
			return s
		}
	}
	next := make(map[uint64]*atomic.Int64, 4)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	s := new(atomic.Int64)
	next[id] = s
	a.m.Store(&next)
	return s
}

// get is peer id's newest echoed stamp, 0 if none.
func (a *leaseAcks) get(id uint64) int64 {
	m := a.m.Load()
	if m == nil {
		return 0
	}
	if s := (*m)[id]; s != nil {
		return s.Load()
	}
	return 0
}

// epochOf is peer id's connection epoch: it changes each time the transport reports the peer's
// connection up or down (peerReport), so a confirmation given over one connection is not taken
// for one given over the next.
func (h *Host) epochOf(id uint64) uint64 {
	m := h.epochs.m.Load()
	if m == nil {
		return 0
	}
	if s := (*m)[id]; s != nil {
		return uint64(s.Load())
	}
	return 0
}

// bumpEpoch starts a new connection epoch for peer id; loop only.
func (h *Host) bumpEpoch(id uint64) { h.epochs.slot(id).Add(1) }

// confirm records that peer from answered g, a group this node leads, in term (a response to an
// append or heartbeat, stepped); loop only. The map is replaced only when something changes.
func (h *Host) confirm(g *Group, from, term uint64) {
	if g.lead != h.cfg.NodeID || term != g.leaderTerm || term == 0 {
		return
	}
	e := h.epochOf(from)
	old := g.confirmed.Load()
	if old != nil {
		if c, ok := (*old)[from]; ok && c == e {
			return
		}
	}
	next := make(map[uint64]uint64, 4)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	next[from] = e
	g.confirmed.Store(&next)
}

// leaseVoters is a group's voters as the lease counts them: the incoming configuration and,
// during a joint change, the outgoing one (a quorum of each is needed).
type leaseVoters struct {
	in, out []uint64
}

// setConfState records g's configuration, also for HasLease; loop only (or before it runs).
func (g *Group) setConfState(cs *raftpb.ConfState) {
	g.confState = cs
	g.voters.Store(&leaseVoters{in: slices.Clone(cs.GetVoters()), out: slices.Clone(cs.GetVotersOutgoing())})
}

// Voters is the group's voters as this node's replica knows them (during a joint change, the
// incoming configuration's). The broker's rebalancer moves a queue only to a node that is
// one. Safe for any goroutine.
func (g *Group) Voters() []uint64 {
	vs := g.voters.Load()
	if vs == nil {
		return nil
	}
	return slices.Clone(vs.in)
}

// HasLease reports whether this node leads the group and holds its lease: a quorum of the
// group's voters echoed, within LeasePeriod, a lease probe sent while this node led it (see the
// file comment). A node that leads without the lease may be cut off, with another node leading
// already or soon: it must not serve (deliver) until the lease is back. Safe for any goroutine.
func (g *Group) HasLease() bool {
	if !g.IsLeader() {
		return false
	}
	h := g.host
	if h.beatTr == nil {
		return true // no probes can be carried (see the file comment)
	}
	vs := g.voters.Load()
	if vs == nil {
		return false
	}
	since := g.leadSince.Load()
	if since == 0 {
		return false
	}
	now := h.leaseClock()
	period := int64(h.leasePeriod)
	conf := g.confirmed.Load()
	return h.quorumSince(vs.in, conf, since, now, period) && (len(vs.out) == 0 || h.quorumSince(vs.out, conf, since, now, period))
}

// quorumSince reports whether a quorum of voters (this node counting) confirmed this node's
// leadership over their current connection (conf) and echoed a probe sent at or after since
// and less than period before now.
func (h *Host) quorumSince(voters []uint64, conf *map[uint64]uint64, since, now, period int64) bool {
	if len(voters) == 0 {
		return false
	}
	need := len(voters)/2 + 1
	self := h.cfg.NodeID
	for _, id := range voters {
		if id == self {
			need--
			continue
		}
		if !confirmedBy(conf, id, h.epochOf(id)) {
			continue
		}
		s := h.acks.get(id)
		if s >= since && now-s < period {
			need--
		}
	}
	return need <= 0
}

// confirmedBy reports whether conf has peer id's confirmation in connection epoch e.
func confirmedBy(conf *map[uint64]uint64, id, e uint64) bool {
	if conf == nil {
		return false
	}
	c, ok := (*conf)[id]
	return ok && c == e
}

// LeaseExpiresIn is, for a group this node leads with its lease, how long the lease lasts
// without a newer echo; 0 otherwise. For status and tests.
func (g *Group) LeaseExpiresIn() time.Duration {
	if !g.HasLease() {
		return 0
	}
	h := g.host
	if h.beatTr == nil {
		return h.leasePeriod
	}
	vs := g.voters.Load()
	now := h.leaseClock()
	conf := g.confirmed.Load()
	left := h.leaseLeft(vs.in, conf, now)
	if len(vs.out) > 0 {
		left = min(left, h.leaseLeft(vs.out, conf, now))
	}
	return max(left, 0)
}

// leaseLeft is how long the quorum of voters that echoed last keeps the lease after now.
func (h *Host) leaseLeft(voters []uint64, conf *map[uint64]uint64, now int64) time.Duration {
	need := len(voters)/2 + 1
	var stamps []int64
	for _, id := range voters {
		if id == h.cfg.NodeID {
			need--
			continue
		}
		if confirmedBy(conf, id, h.epochOf(id)) {
			stamps = append(stamps, h.acks.get(id))
		}
	}
	if need <= 0 {
		return h.leasePeriod
	}
	if need > len(stamps) {
		return 0
	}
	slices.Sort(stamps)
	slices.Reverse(stamps)
	return time.Duration(stamps[need-1] + int64(h.leasePeriod) - now)
}

// probeTicks is how many ticks apart a host sends its lease probes: a quarter of the lease
// period (2 ticks, 200 ms, with the defaults), so a lease is renewed about four times before it
// would run out, and an idle cluster costs what its pings cost before leases (a frame per peer
// every 200 ms).
func probeTicks(cfg Config) uint64 { return uint64(max((cfg.ElectionTicks-2)/4, 1)) }

// sendProbes puts a lease probe for each peer node into the cycle's heartbeat lists, every
// probeTicks ticks; loop only, at each tick.
func (h *Host) sendProbes(now uint64) {
	if h.beatTr == nil || now%probeTicks(h.cfg) != 0 {
		return
	}
	stamp := uint64(h.leaseClock())
	self := h.cfg.NodeID
	for _, id := range h.probeTargets() {
		if id == self {
			continue
		}
		if h.beats == nil {
			h.beats = make(map[uint64][]Heartbeat)
		}
		h.beats[id] = append(h.beats[id], Heartbeat{Lease: true, Term: stamp})
	}
}

// probeTargets is every node that is a voter of a running group led here, and every member:
// the nodes whose echoes a lease may need; loop only.
func (h *Host) probeTargets() []uint64 {
	h.memberMu.Lock()
	ids := make([]uint64, 0, len(h.members)+1)
	for id := range h.members {
		ids = append(ids, id)
	}
	h.memberMu.Unlock()
	if h.cfg.Peers != nil {
		for id := range h.cfg.Peers {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// leaseProbe answers a peer's probe: the echo goes in this cycle's list to it, after everything
// stepped before; loop only.
func (h *Host) leaseProbe(from, stamp uint64) {
	if h.beatTr == nil {
		return // no lists to echo in (noCoalesce)
	}
	if h.beats == nil {
		h.beats = make(map[uint64][]Heartbeat)
	}
	h.beats[from] = append(h.beats[from], Heartbeat{Lease: true, Resp: true, Term: stamp})
}

// leaseEcho records a peer's echo of one of this host's probes; loop only.
func (h *Host) leaseEcho(from, stamp uint64) {
	s := int64(stamp)
	if s < h.leaseBase || s > h.leaseClock() {
		return // not a stamp of this process
	}
	h.m.leaseEchoes.Add(1)
	slot := h.acks.slot(from)
	if slot.Load() < s {
		slot.Store(s)
	}
}
