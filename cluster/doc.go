// Package cluster owns replication (DESIGN.md §5): the multi-raft host that
// drives every replicated state machine of a node (group 0's metadata, each
// durable queue's group) through go.etcd.io/raft/v3, with the raft logs kept
// by storage. It owns the scheduler (one Ready loop for all groups, group
// commit of their log writes into one fsync), proposal futures, state-machine
// snapshots and log compaction, recovery of a group after a restart, and the
// Transport seam through which a group's messages reach its peers.
//
// A single node is a cluster of one: the same Host, the same loop, a group
// whose only voter is this node. With peers, TCPTransport (tcp.go, framing in
// wire.go) carries every group's raft messages over one connection per pair
// of nodes, and pings each peer so that liveness is known per node; the same
// connection carries the RPC channel (rpc.go: calls, replies and notifications
// between nodes, which the broker uses to forward queue operations). Membership
// (membership.go) changes at run time: Join adds a node to every group as a
// learner and promotes it once caught up, Leave removes one; each node stores
// the membership record (node id -> cluster address) from the metadata group's
// log, and new groups start with the members it names. Idle groups quiesce (quiesce.go): their leader
// stops heartbeating them and every node stops ticking them until a proposal,
// a message or the loss of the leader's node wakes them. The heartbeats of the
// groups that are awake go to each peer as one coalesced list per tick
// (heartbeat.go), and with them a lease probe per peer every few ticks, whose echoes give a
// group's leader its lease (lease.go: a leader cut off from its quorum knows it before
// anyone else may lead). Lazy proposals (lazy.go: a queue's acks) wait for the next
// proposal that costs an fsync anyway rather than cost one of their own. Nothing here assumes one node except
// the shortcuts that are explicitly conditioned on a group having a single
// voter (campaign at once, skip ticking an idle leader).
//
// The broker's state machines (broker/queue, broker/meta) reach this package
// only through StateMachine; this package never imports the broker.
package cluster
