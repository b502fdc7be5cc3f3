package cluster

import (
	"fmt"
	"time"
)

// Config configures a Host. The zero value of every field but NodeID means
// its default.
type Config struct {
	// NodeID is this node's raft id; it must not be zero (raft's None).
	NodeID uint64

	// Peers maps every node id of the cluster, this one included, to its
	// cluster address: the membership until the node has stored one of its
	// own (membership.go), which then wins. A new group has the members as
	// voters. A single node lists just itself. Default: {NodeID: ""}.
	Peers map[uint64]string

	// Join says this node joins a running cluster: Peers lists some of its
	// members but not this node, and the node bootstraps no group until a
	// member's Join records it (every configuration comes from the groups'
	// leaders). Default: false.
	Join bool

	// MembershipGroup is the group whose configuration is the cluster's
	// membership (the broker's metadata group): a snapshot it installs from
	// its leader refreshes the membership record (membership.go). Default: 0.
	MembershipGroup uint64

	// OnRemoved is called (once, on its own goroutine) when this node learns
	// that it was removed from the cluster. Default: nil.
	OnRemoved func()

	// Transport carries raft messages to the other nodes. Default: a
	// transport that drops everything, which is right for a single node
	// (its groups never address another node).
	Transport Transport

	// TickInterval is the length of one raft tick. Default: 100ms.
	TickInterval time.Duration

	// ElectionTicks is how many ticks a follower waits without hearing from
	// a leader before it campaigns (raft randomizes it up to twice that).
	// Default: 10.
	ElectionTicks int

	// HeartbeatTicks is how many ticks pass between a leader's heartbeats.
	// Default: 1.
	HeartbeatTicks int

	// SnapshotEntries is how many entries a group applies between two
	// state-machine snapshots; each snapshot also compacts the log up to it
	// (less SnapshotCatchUpEntries). Default: 10000.
	SnapshotEntries uint64

	// SnapshotLogBytes makes a group whose only member is this node snapshot, and compact its
	// log, as soon as it has applied this many bytes of entries since its last snapshot (and
	// at least snapshotLogRatio times the size of that snapshot), whatever SnapshotEntries
	// says. A durable queue's log is its message store: with consumers keeping up, the
	// compaction then deletes the consumed messages while they are still in Pebble's memtable,
	// and they are never flushed to an sstable (see "Compacting while the memtable holds it"
	// in scheduler.go). A group with other members keeps to SnapshotEntries (and
	// SnapshotMaxLogBytes), so a follower a little behind still catches up from the log.
	// Negative disables it. Default: 4 MiB.
	SnapshotLogBytes int64

	// SnapshotMaxLogBytes is how many bytes of entries any group (one with
	// other members too) may apply before it snapshots, even if it applied
	// fewer than SnapshotEntries entries (a LogKeeper's SnapshotInterval still
	// comes first). Entries that batch many messages are large: 10,000 of a
	// spread queue's (its forwarded publishes come in bursts) held 320 MB of log
	// that was never compacted after the messages were consumed. Default: 16 MiB.
	SnapshotMaxLogBytes uint64

	// SnapshotCatchUpEntries is how many entries before a snapshot the log
	// keeps after compacting, so a follower slightly behind can catch up from
	// the log instead of receiving a whole snapshot. The log is the message
	// store, so these entries cost disk. Default: 0 (compact up to the
	// snapshot).
	SnapshotCatchUpEntries uint64

	// MaxSizePerMsg bounds the bytes of entries in one append message to a
	// follower, and of committed entries handed to the state machine in one
	// Ready cycle. Default: 1 MiB.
	MaxSizePerMsg uint64

	// MaxInflightMsgs bounds the append messages in flight to one follower
	// (raft's pipelining window). Default: 256.
	MaxInflightMsgs int

	// MaxUncommittedEntriesSize bounds the bytes of a leader's uncommitted
	// entries; proposals beyond it fail with ErrDropped. The broker bounds
	// its inboxes, so this is a backstop. Default: 0 (no bound).
	MaxUncommittedEntriesSize uint64

	// LazyProposalDelay is how long a lazy proposal (Group.ProposeLazy: a queue's acks) may
	// wait for another proposal to share its cycle's fsync before it gets one of its own
	// (lazy.go). Negative: lazy proposals are proposed at once, like any other. Default: 10ms.
	LazyProposalDelay time.Duration

	// Switches for benchmarks and tests that compare with and without a mechanism: noCoalesce
	// sends every heartbeat on its own (heartbeat.go), noQuiesce never quiesces a group
	// (quiesce.go).
	noCoalesce, noQuiesce bool
}

// Defaults, named for the documentation above and for tests.
const (
	DefaultTickInterval        = 100 * time.Millisecond
	DefaultElectionTicks       = 10
	DefaultHeartbeatTicks      = 1
	DefaultSnapshotEntries     = 10000
	DefaultSnapshotLogBytes    = 4 << 20
	DefaultSnapshotMaxLogBytes = 16 << 20
	DefaultMaxSizePerMsg       = 1 << 20
	DefaultMaxInflightMsgs     = 256
	DefaultLazyProposalDelay   = 10 * time.Millisecond
)

// withDefaults returns a copy of c with defaults filled in, or an error
// wrapping ErrInvalidConfig.
func (c Config) withDefaults() (Config, error) {
	if c.NodeID == 0 {
		return c, fmt.Errorf("%w: NodeID must not be 0", ErrInvalidConfig)
	}
	peers := make(map[uint64]string, len(c.Peers)+1)
	for id, addr := range c.Peers {
		if id == 0 {
			return c, fmt.Errorf("%w: peer id 0", ErrInvalidConfig)
		}
		peers[id] = addr
	}
	if _, ok := peers[c.NodeID]; !ok && c.Join {
		if len(peers) == 0 {
			return c, fmt.Errorf("%w: a joining node needs Peers naming a member", ErrInvalidConfig)
		}
	} else if !ok {
		if len(peers) > 0 {
			return c, fmt.Errorf("%w: Peers does not list NodeID %d", ErrInvalidConfig, c.NodeID)
		}
		peers[c.NodeID] = ""
	}
	c.Peers = peers
	if c.Transport == nil {
		c.Transport = NopTransport{}
	}
	if c.TickInterval == 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.TickInterval < 0 {
		return c, fmt.Errorf("%w: negative TickInterval", ErrInvalidConfig)
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = DefaultElectionTicks
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = DefaultHeartbeatTicks
	}
	if c.HeartbeatTicks < 0 || c.ElectionTicks <= c.HeartbeatTicks {
		return c, fmt.Errorf("%w: ElectionTicks (%d) must exceed HeartbeatTicks (%d)",
			ErrInvalidConfig, c.ElectionTicks, c.HeartbeatTicks)
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = DefaultSnapshotEntries
	}
	if c.SnapshotLogBytes == 0 {
		c.SnapshotLogBytes = DefaultSnapshotLogBytes
	}
	if c.SnapshotMaxLogBytes == 0 {
		c.SnapshotMaxLogBytes = DefaultSnapshotMaxLogBytes
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = DefaultMaxSizePerMsg
	}
	if c.LazyProposalDelay == 0 {
		c.LazyProposalDelay = DefaultLazyProposalDelay
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = DefaultMaxInflightMsgs
	}
	if c.MaxInflightMsgs < 0 {
		return c, fmt.Errorf("%w: negative MaxInflightMsgs", ErrInvalidConfig)
	}
	return c, nil
}
