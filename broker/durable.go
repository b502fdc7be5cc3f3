package broker

// Durability. With Config.Host set, the broker keeps what must survive a restart in raft groups
// run by that host (DESIGN.md §4–5):
//
//   - Group 0 holds the durable metadata. Each change that alters it appends the whole durable
//     metadata (meta.State.Snapshot) as one entry: metadata changes are rare and small, and a
//     follower or a restart needs nothing but the last entry. The cost is O(durable metadata) per
//     change, which is fine for hundreds of durable queues and is the first thing to replace
//     (with commands) when MQTT sessions bring tens of thousands.
//   - Each durable queue has its own group, recorded in its metadata (meta.QueueDef.Group): a
//     new group for each incarnation, so a queue deleted and declared again never meets its
//     predecessor's log on a replica that missed the delete. Its log is the message store: an enqueue entry carries
//     the whole encoded message (written once, fsynced with everything else of that Ready cycle);
//     a remove entry lists the references of messages that left the queue for good (acked,
//     discarded, expired, dropped, purged). The reference of a message is the log index of its
//     enqueue entry. queueLog (queuelog.go) is the state machine: a record per live message,
//     which is what a snapshot holds and what a restart gives back to the queue; the bodies stay
//     in the log and are read back when delivered, so a deep queue costs little memory.
//
// Only persistent messages (delivery-mode 2) in durable queues go through the log; transient
// messages in a durable queue wait in the same FIFO behind persistent ones still being written,
// so a queue keeps the publish order, and are gone after a restart, as in RabbitMQ.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/cluster"
)

// metaGroup is the raft group of the durable metadata.
const metaGroup = 0

// Log entry kinds of a durable queue's group.
const (
	entryEnqueue byte = 1 // token(8) enqueuedAt(8) message
	entryRemove  byte = 2 // uvarint refs
	entryState   byte = 3 // uvarint key length, key, then the value (absent: delete); see Queue.SetState
)

// errCorruptEntry reports a log entry the queue cannot parse.
var errCorruptEntry = errors.New("corrupt queue log entry")

// queueGroup is the raft group of a durable queue: the one its metadata records (a new group
// for each incarnation of the queue, see meta.QueueDef.Group), or, for a queue declared before
// groups were recorded, the one derived from its vhost and name.
func queueGroup(def meta.QueueDef) uint64 {
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

// metaLog is group 0's state machine: the last durable metadata written.
type metaLog struct {
	mu   sync.Mutex // Apply and Snapshot run on the host's loop; New reads after recovery
	data []byte
}

func (l *metaLog) Apply(_ uint64, data []byte) any {
	l.mu.Lock()
	l.data = bytes.Clone(data)
	l.mu.Unlock()
	return nil
}

func (l *metaLog) Snapshot() ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.data), nil
}

func (l *metaLog) Restore(data []byte) error {
	l.mu.Lock()
	l.data = bytes.Clone(data)
	l.mu.Unlock()
	return nil
}

// recoverDurable starts group 0, restores the durable metadata and starts a group and a queue
// for each durable queue, with the messages its log still holds.
func (b *Broker) recoverDurable(ctx context.Context) error {
	b.metaLog = &metaLog{}
	g, err := b.cfg.Host.AddGroup(ctx, metaGroup, b.metaLog)
	if err != nil {
		return fmt.Errorf("recover metadata group: %w", err)
	}
	b.metaGroup = g
	data, _ := b.metaLog.Snapshot()
	if len(data) > 0 {
		st, err := meta.Restore(data)
		if err != nil {
			return fmt.Errorf("recover metadata: %w", err)
		}
		b.meta = st
		b.lastMeta = data
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
	return nil
}

// persistMetaLocked writes the durable metadata to group 0 if it changed, and waits until it is
// committed. b.mu held. Transient changes leave the snapshot as it was and cost no write.
func (b *Broker) persistMetaLocked() error {
	if b.metaGroup == nil {
		return nil
	}
	snap, err := b.meta.Snapshot()
	if err != nil {
		return meta.Errorf(meta.InternalError, "cannot store metadata: %v", err)
	}
	if bytes.Equal(snap, b.lastMeta) {
		return nil
	}
	f, err := b.metaGroup.Propose(context.Background(), snap)
	if err == nil {
		_, err = f.Wait(context.Background())
	}
	if err != nil {
		b.log.Error("metadata not stored")
		return meta.Errorf(meta.InternalError, "cannot store metadata: %v", err)
	}
	b.lastMeta = snap
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
	l := newQueueLog()
	g, err := host.AddGroup(ctx, queueGroup(def), l)
	if err != nil {
		return nil, meta.Errorf(meta.InternalError, "cannot start queue '%s' in vhost '%s': %v", def.Name, v.name, err)
	}
	return newQueue(v, def, cfg, g, l), nil
}

// stopQueueGroup destroys a deleted durable queue's log. b.mu held.
func (v *VHost) stopQueueGroup(q *Queue) {
	if q.group == nil {
		return
	}
	if err := v.b.cfg.Host.RemoveGroup(context.Background(), q.group.ID()); err != nil && !errors.Is(err, cluster.ErrStopped) {
		v.b.log.Warn("removing a deleted queue's log failed")
	}
}
