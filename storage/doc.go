// Package storage owns Parley's one Pebble database per node (DESIGN.md §4):
// opening it (data-directory format, exclusive lock, Pebble options), batches
// committed with one fsync for many raft groups (group commit), the raft log
// and raft state of every group (RaftLog, an implementation of
// go.etcd.io/raft/v3's Storage), engine metrics, and the resource alarms
// (write stalls, low disk) that let the broker block publishers instead of
// failing them.
//
// Key layout lives in storage/keys; nothing here builds a key by hand.
//
// # The raft log is the message store
//
// A message body is written once, inside the raft entry that carries it. So
// the log is written on the hot path (every Ready cycle appends all groups'
// entries into one Batch, committed with one fsync) and read back rarely: a
// leader sending to a lagging follower, a restart. RaftLog therefore keeps the
// recent tail of each log in memory (Options.TailCacheBytes) and goes to
// Pebble only for older entries. Old entries leave the log only by whole runs
// — Compact writes one DeleteRange — never by per-message deletes, which would
// leave a tombstone per message for compactions to chew through.
//
// # Visibility before durability
//
// RaftLog's in-memory view (last index, hard state, tail cache) changes as
// soon as a call writes into a Batch, before the Batch commits. That is what
// raft expects: the entries it hands out in Ready stay in its own unstable log
// until the application reports them persisted, and it only reads from
// Storage what it has been told is stable. The engine never evicts an entry
// from the tail cache before the batch holding it has committed, so a read
// never misses an entry that is neither in Pebble nor in memory. A batch that
// fails to commit, or is closed without committing, leaves the in-memory view
// ahead of the disk; every RaftLog it touched then fails all further calls
// with ErrLogFailed, and the group must be reopened from disk (a new Engine).
//
// # Using it from a Ready loop
//
// go.etcd.io/raft/v3 v3.7.0's raftpb types are protobuf-go messages (pointer
// fields, not copyable), so the API takes and returns pointers: Append takes
// Ready.Entries as they are, SetHardState takes Ready.HardState. One cycle:
//
//	b := engine.NewBatch()
//	for each group with a Ready rd:
//		if !raft.IsEmptySnap(rd.Snapshot) { log.ApplySnapshot(b, rd.Snapshot) }
//		log.Append(b, rd.Entries)
//		if !raft.IsEmptyHardState(rd.HardState) { log.SetHardState(b, rd.HardState) }
//	b.Commit(anyMustSync) // one fsync for every group
//	b.Close()
//	then send messages, apply rd.CommittedEntries (SetApplied in a later batch), Advance.
//
// A new group is bootstrapped as raft recommends: ApplySnapshot of a snapshot
// at index 1, term 1, carrying the initial ConfState. On restart,
// raft.Config.Applied can be RaftLog.Applied(). Snapshots: CreateSnapshot at
// an applied index, then Compact at or below it (Compact refuses to remove
// entries no snapshot covers). For one group, commit batches in the order
// they were written (one batch per Ready cycle does that by itself).
//
// # Concurrency
//
// Engine and RaftLog are safe for concurrent use; a Batch is not (build and
// commit it on one goroutine). Lock order: Engine.mu before RaftLog.mu; a
// Batch commit takes each RaftLog.mu it touched, one at a time, after Pebble's
// commit returns.
package storage
