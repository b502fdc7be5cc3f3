package broker

// Durability. With Config.Host set, the broker keeps what must survive a restart in raft groups
// run by that host (DESIGN.md §4–5):
//
//   - Group 0 holds the durable metadata as keyed records (broker/meta/records.go: a vhost, a
//     durable exchange, a durable queue with its group, a durable binding, a retained message,
//     the group counter). Each change appends one entry with just the records it touched, put or
//     deleted (meta.State.TakeChanges), so a change costs O(what it touched), not O(metadata):
//     setting n retained messages or declaring n durable queues writes O(n) bytes. metaLog
//     applies the entries to its record set; its snapshot is every record; a restart rebuilds
//     meta.State from snapshot + entries. Entries written before records (the whole metadata
//     as JSON) are still read, each replacing every record, so old data recovers as it was.
//     Deviation from DESIGN.md §2 and §5 (state machines driven by commands through the log):
//     the broker runs a metadata command on its meta.State first, under b.mu, and replicates
//     the records it changed, not the command, as it replicated the whole resulting metadata
//     before. The command's checks answer the client at once with RabbitMQ's errors, and a
//     record is idempotent, so an entry written again after a failed wait does no harm.
//   - Each durable queue has its own group (except small ones packed into a partition group,
//     partition.go, recorded as meta.QueueDef.Partition), recorded in its metadata (meta.QueueDef.Group): a
//     new group for each incarnation, so a queue deleted and declared again never meets its
//     predecessor's log on a replica that missed the delete. Its log is the message store: an enqueue entry carries
//     the whole encoded message (written once, fsynced with everything else of that Ready cycle);
//     a remove entry lists the references of messages that left the queue for good (acked,
//     discarded, expired, dropped, purged). Every persistent publish a queue takes in one inbox
//     batch goes into one enqueue entry (DESIGN.md §2: one Raft proposal per batch; and the
//     batches that come while that entry still waits for the host's loop join it), so the
//     reference of a message packs the log index of its enqueue entry and its slot in it
//     (packRef in queueentry.go). queueLog (queuelog.go) is the state machine: a record per live message,
//     which is what a snapshot holds and what a restart gives back to the queue; the bodies stay
//     in the log and are read back when delivered, so a deep queue costs little memory.
//
// Only persistent messages (delivery-mode 2) in durable queues go through the log; transient
// messages in a durable queue wait in the same FIFO behind persistent ones still being written,
// so a queue keeps the publish order, and are gone after a restart, as in RabbitMQ.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/cluster"
	"go.uber.org/zap"
)

// metaGroup is the raft group of the durable metadata.
const metaGroup = 0

// Log entry kinds of a durable queue's group.
const (
	entryEnqueue      byte = 1 // token(8) enqueuedAt(8) message; its message's ref is packRef(index, 0)
	entryRemoveLegacy byte = 2 // uvarint log indexes: the refs of entryEnqueue entries before refs were packed
	entryState        byte = 3 // uvarint key length, key, then the value (absent: delete); see Queue.SetState
	entryEnqueueBatch byte = 4 // token(8) enqueuedAt(8) uvarint n, then n messages; refs packRef(index, slot)
	entryRemove       byte = 5 // uvarint marker of the proposing queue (optional, top bit set: removeEntry), uvarint refs (packed: see packRef)
)

// errCorruptEntry reports a log entry the queue cannot parse.
var errCorruptEntry = errors.New("corrupt queue log entry")

// queueGroup is the raft group of a durable queue: the one its metadata records (a new group
// for each incarnation of the queue, see meta.QueueDef.Group), or, for a queue declared before
// groups were recorded, the one derived from its vhost and name.
func queueGroup(def meta.QueueDef) uint64 {
	if def.Partition != 0 {
		return def.Partition // packed with others: partition.go
	}
	if def.Group != 0 {
		return def.Group
	}
	return legacyQueueGroupID(def.VHost, def.Name)
}

// legacyQueueGroupID is the group id of a durable queue declared before the metadata recorded
// groups: a hash of its vhost and name, with the top bit set (clear of group 0 and of
// meta.QueueGroupBase's ids). Every incarnation of a name had the same id, which let a queue
// declared again meet its predecessor's log on a replica that missed the delete.
func legacyQueueGroupID(vhost, name string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(vhost))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(name))
	return h.Sum64() | 1<<63
}

// metaLog is group 0's state machine: the durable metadata as records (meta.RecordSet). Each
// entry is one change of the metadata's records; a snapshot is every record.
//
// It is a cluster.LogKeeper only to space its snapshots: a snapshot costs O(records), so it
// asks for at least as many entries between two snapshots as it has records, which keeps the
// bytes snapshots write proportional to the bytes of the entries (10,000 retained messages set
// one by one would otherwise write 10,000-record snapshots every SnapshotEntries entries, and
// 100,000 would write ten of them per 10,000 entries). It keeps nothing in the log.
type metaLog struct {
	mu   sync.Mutex // Apply, Snapshot and Restore run on the host's loop; the broker reads after recovery
	recs *meta.RecordSet
	err  error // the first entry that did not decode (every replica skips it alike)
}

func newMetaLog() *metaLog { return &metaLog{recs: meta.NewRecordSet()} }

// apply applies one entry; queues reports whether a durable queue's record may have changed.
func (l *metaLog) apply(data []byte) (queues bool, err error) {
	queues, err = l.recs.ApplyEntry(data)
	if err != nil {
		err = fmt.Errorf("metadata entry: %w", err)
		if l.err == nil {
			l.err = err
		}
	}
	return queues, err
}

func (l *metaLog) Apply(_ uint64, data []byte) any {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.apply(data); err != nil {
		return err
	}
	return nil
}

func (l *metaLog) Snapshot() ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.recs.Encode(), nil
}

func (l *metaLog) Restore(data []byte) error {
	rs, err := meta.DecodeRecordSet(data)
	if err != nil {
		return fmt.Errorf("metadata snapshot: %w", err)
	}
	l.mu.Lock()
	l.recs = rs
	l.mu.Unlock()
	return nil
}

func (l *metaLog) AttachLog(cluster.LogReader) {}
func (l *metaLog) KeepFrom() uint64            { return 0 }

func (l *metaLog) SnapshotInterval() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return uint64(l.recs.Len())
}

func (l *metaLog) TransferSnapshot(data []byte, _ uint64) ([]byte, error) { return data, nil }

// state rebuilds the metadata from the records; nil when there are none (nothing was ever
// written: the broker starts from meta.New).
func (l *metaLog) state() (*meta.State, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, l.err
	}
	if l.recs.Len() == 0 {
		return nil, nil
	}
	return l.recs.State()
}

// recoverDurable starts group 0, restores the durable metadata and starts a group and a queue
// for each durable queue, with the messages its log still holds.
func (b *Broker) recoverDurable(ctx context.Context) error {
	b.metaLog = newMetaLog()
	g, err := b.cfg.Host.AddGroup(ctx, metaGroup, b.metaLog)
	if err != nil {
		return fmt.Errorf("recover metadata group: %w", err)
	}
	b.metaGroup = g
	if g.IsLeader() {
		b.led.Store(true) // cmd/parley starts a broker only on group 0's leader: see deposed
	}
	st, err := b.metaLog.state()
	if err != nil {
		return fmt.Errorf("recover metadata: %w", err)
	}
	if st != nil {
		b.meta = st
	}
	b.syncVHostsLocked()
	for _, v := range *b.vhosts.Load() {
		next := map[string]*Queue{}
		for _, def := range b.meta.Queues(v.name) {
			q, err := v.startQueue(ctx, def)
			if err != nil {
				return err
			}
			next[def.Name] = q
		}
		v.queues.Store(&next)
		v.publishRouterLocked()
	}
	// Partition groups no queue is in any more still run: what they hold is dropped below.
	if stored, err := b.cfg.Host.StoredGroups(); err == nil {
		for _, id := range stored {
			if IsPartitionGroup(id) {
				if _, err := b.partitionLocked(ctx, id); err != nil {
					return err
				}
			}
		}
	}
	b.dropOrphansLocked()
	return nil
}

// persistMetaLocked writes the records the last changes touched to group 0, as one entry, and
// waits until it is committed. b.mu held. Transient changes touch no record and cost no write.
// If the entry is not stored, its records are touched again, so the next write carries them
// (records are idempotent: writing one again is harmless if the entry did commit after all).
func (b *Broker) persistMetaLocked() error {
	cs, cerr := b.meta.TakeChanges()
	if b.metaGroup == nil {
		return nil
	}
	if cerr != nil {
		b.log.Error("metadata records not encodable; not stored", zap.Error(cerr))
	}
	if len(cs) > 0 {
		f, err := b.metaGroup.Propose(context.Background(), meta.EncodeChanges(cs))
		var res any
		if err == nil {
			res, err = f.Wait(context.Background())
		}
		if e, ok := res.(error); ok && err == nil {
			err = e
		}
		if err != nil {
			b.meta.Untake(cs)
			b.log.Error("metadata not stored", zap.Error(err))
			return meta.Errorf(meta.InternalError, "cannot store metadata: %v", err)
		}
	}
	if cerr != nil {
		return meta.Errorf(meta.InternalError, "cannot store metadata: %v", cerr)
	}
	return nil
}

// pendingPublish is a message waiting in a durable queue's FIFO for its enqueue entry to commit
// (or, for a transient message, for the persistent ones ahead of it).
type pendingPublish struct {
	m       *message.Message
	confirm *confirmTracker
	logged  bool        // went through the log
	done    atomic.Bool // the log answered (set by the host's loop)
	ref     uint64      // valid once done
	err     error       // valid once done
}

// startQueue creates a queue; a durable one gets its raft group, recovered from storage if it
// has one, and its live messages back in log order. b.mu held.
func (v *VHost) startQueue(ctx context.Context, def meta.QueueDef) (*Queue, error) {
	cfg, err := queueConfig(def)
	if err != nil {
		return nil, err
	}
	host := v.b.cfg.Host
	if !def.Durable || host == nil {
		return newQueue(v, def, cfg, nil, nil), nil
	}
	if v.b.cfg.Spread != nil && spreadable(def) {
		if target := v.b.placement(def); target != host.NodeID() {
			return v.startRemote(ctx, def, cfg, target)
		}
	}
	if def.Partition != 0 {
		p, l, opening, err := v.joinPartitionLocked(ctx, def)
		if err != nil {
			return nil, meta.Errorf(meta.InternalError, "cannot start queue '%s' in vhost '%s': %v", def.Name, v.name, err)
		}
		q := newQueue(v, def, cfg, p.group, l)
		q.part, q.opening = p, opening
		return q, nil
	}
	l := newQueueLog()
	g, err := host.AddGroup(ctx, queueGroup(def), l)
	if err != nil {
		return nil, meta.Errorf(meta.InternalError, "cannot start queue '%s' in vhost '%s': %v", def.Name, v.name, err)
	}
	q := newQueue(v, def, cfg, g, l)
	if v.b.cfg.Spread != nil {
		// With queues spread, a queue runs where its group's leader is (placement and failover
		// go by it). A new group may elect any voter (the others start it when they apply the
		// declaration, after this): the queue takes the lead without dropping a publish
		// (leadhold.go).
		q.askLead()
	}
	return q, nil
}

// stopQueueGroup destroys a deleted durable queue's log. b.mu held.
func (v *VHost) stopQueueGroup(q *Queue) {
	if q.group == nil {
		return
	}
	if q.part != nil {
		v.b.leavePartition(q.part, q.def.Group)
		return
	}
	if err := v.b.cfg.Host.RemoveGroup(context.Background(), q.group.ID()); err != nil && !errors.Is(err, cluster.ErrStopped) {
		v.b.log.Warn("removing a deleted queue's log failed")
	}
}
