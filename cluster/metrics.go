package cluster

import "sync/atomic"

// Metrics are the host's counters since NewHost.
type Metrics struct {
	// Groups is the number of running groups.
	Groups int
	// Ticks counts the scheduler's ticks; GroupTicks the raft ticks it
	// handed to groups (an idle lone leader is not ticked).
	Ticks, GroupTicks uint64
	// ReadyCycles counts scheduler cycles that handled at least one Ready.
	ReadyCycles uint64
	// Fsyncs counts batches committed with sync.
	Fsyncs uint64
	// EntriesWritten counts log entries appended, over all groups.
	EntriesWritten uint64
	// EntriesPerFsync is the mean number of entries one fsync made durable:
	// above 1 means group commit is batching proposals.
	EntriesPerFsync float64
	// Proposals counts proposals queued.
	Proposals uint64
	// Applied counts entries applied to state machines (replays included).
	Applied uint64
	// Dropped counts proposals completed with ErrDropped.
	Dropped uint64
	// Snapshots counts state-machine snapshots taken (each with a log
	// compaction).
	Snapshots uint64
	// SnapshotsReceived counts snapshots installed from a leader (a
	// follower too far behind the leader's compacted log).
	SnapshotsReceived uint64
	// Quiesced is the number of groups quiesced now (quiesce.go); Wakes counts
	// how many times a quiesced group woke up.
	Quiesced int
	Wakes    uint64
	// HeartbeatsCoalesced counts heartbeats and heartbeat responses sent in coalesced lists
	// (heartbeat.go), HeartbeatLists the lists (one message to one peer each).
	HeartbeatsCoalesced, HeartbeatLists uint64
	// LazyProposals counts proposals made with ProposeLazy; LazyHolds counts loop turns that
	// left lazy proposals queued because nothing else was proposed (lazy.go).
	LazyProposals, LazyHolds uint64
	// LeaseEchoes counts the echoes of this node's lease probes it received (lease.go).
	LeaseEchoes uint64
}

type counters struct {
	groups         atomic.Int64
	cycles         atomic.Uint64
	groupTicks     atomic.Uint64
	ticks          atomic.Uint64
	fsyncs         atomic.Uint64
	syncedEntries  atomic.Uint64
	entriesWritten atomic.Uint64
	applied        atomic.Uint64
	dropped        atomic.Uint64
	snapshots      atomic.Uint64
	received       atomic.Uint64
	quiesced       atomic.Int64
	wakes          atomic.Uint64
	beatsSent      atomic.Uint64
	beatLists      atomic.Uint64
	lazy           atomic.Uint64
	lazyHeld       atomic.Uint64
	leaseEchoes    atomic.Uint64
}

// Metrics returns a snapshot of the host's counters.
func (h *Host) Metrics() Metrics {
	m := Metrics{
		Groups:              int(h.m.groups.Load()),
		Ticks:               h.m.ticks.Load(),
		GroupTicks:          h.m.groupTicks.Load(),
		ReadyCycles:         h.m.cycles.Load(),
		Fsyncs:              h.m.fsyncs.Load(),
		EntriesWritten:      h.m.entriesWritten.Load(),
		Proposals:           h.proposals.Load(),
		Applied:             h.m.applied.Load(),
		Dropped:             h.m.dropped.Load(),
		Snapshots:           h.m.snapshots.Load(),
		SnapshotsReceived:   h.m.received.Load(),
		Quiesced:            int(h.m.quiesced.Load()),
		Wakes:               h.m.wakes.Load(),
		HeartbeatsCoalesced: h.m.beatsSent.Load(),
		HeartbeatLists:      h.m.beatLists.Load(),
		LazyProposals:       h.m.lazy.Load(),
		LazyHolds:           h.m.lazyHeld.Load(),
		LeaseEchoes:         h.m.leaseEchoes.Load(),
	}
	if m.Fsyncs > 0 {
		m.EntriesPerFsync = float64(h.m.syncedEntries.Load()) / float64(m.Fsyncs)
	}
	return m
}
