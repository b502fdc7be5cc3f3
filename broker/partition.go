package broker

// Partition groups (DESIGN.md §5, issue 7 item 2): swarms of small durable queues share a fixed
// number of raft groups instead of having one each.
//
// A queue declared with meta.QueueDef.Packed (the MQTT adapter's session and shared
// subscription queues, the STOMP adapter's durable topic subscriptions) is placed, when
// Config.PartitionGroups > 0, in partition group meta.PartitionGroupBase + hash(vhost, name) mod
// PartitionGroups; the choice is recorded in group 0 with the queue (meta.QueueDef.Partition),
// so every node and every restart agrees, and a later change of PartitionGroups moves no queue.
// A queue whose record has no partition (every queue of a data directory written before
// partitions, every AMQP durable queue) keeps a group of its own.
//
// One partition group's log carries the entries of all its queues. Each queue's entry is the
// entry it would write to a group of its own (queueentry.go), behind a tag: partQueueEntry and
// the queue's meta.QueueDef.Group, which is unique to the queue's incarnation (a queue deleted
// and declared again never meets its predecessor's entries). partitionLog, the group's state
// machine, keeps one queueLog per queue and hands each entry to its queue's; the queueLog reads
// its bodies back through a reader that shows it only its own entries (taggedReader). A queue
// joins the partition with a partOpen entry, proposed when it is declared (before its record
// goes to group 0), and leaves it with a partDrop entry when it is deleted (session expiry, a
// clean session, an unsubscribe): its records and state go at once, entries that still come
// for it are ignored, and its messages no longer hold the partition's log back. A snapshot is
// every queue's snapshot; KeepFrom, what the log must keep, is the lowest of the queues', so
// compaction (DESIGN.md §4: DeleteRange below the oldest live message, stuck messages copied
// into the snapshot) works per partition as it does per queue.
//
// In a cluster a partition group is created (bootstrapped) on the serving node by the first
// declaration placed in it, under cluster.Host.LockMembership as any queue group, and standbys
// start their replica when they apply that declaration (cmd/parley/cluster.go). A partition
// group is never removed once created, on any node: a replica that removed it when its last
// queue went would have to be bootstrapped again when the next queue comes, against a leader
// whose log is far ahead. Standbys keep one parked replica per partition group, whose stand-in
// is this same state machine (StandIn), and a failover adopts it and rebuilds every queue of
// the partition from it.
//
// Recovery: after group 0's records are read, the queues of each partition take their
// queueLog from it; queues the partition holds that no record names (the declaration was never
// stored, or the node stopped before the drop entry committed) are dropped then.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/cluster"
	"go.uber.org/zap"
)

// Entry kinds of a partition group's log: the first byte, then the queue's tag (its
// meta.QueueDef.Group, 8 bytes big-endian). Distinct from a queue's own entry kinds (1-5).
const (
	partQueueEntry byte = 0x50 // tag, then the queue's entry (queueentry.go)
	partOpen       byte = 0x51 // tag: the queue joins the partition
	partDrop       byte = 0x52 // tag: the queue leaves it, with everything it held
)

// partTagLen is the length of a partition entry's header: kind and tag.
const partTagLen = 9

// DefaultPartitionGroups is Config.PartitionGroups's default.
const DefaultPartitionGroups = 16

// errNotInPartition: an entry of a queue the partition does not hold (it left, or never
// joined): ignored alike by every replica.
var errNotInPartition = errors.New("entry of a queue not in the partition")

// partitionLogMagic starts a partition group's snapshot; the last byte is its version.
var partitionLogMagic = []byte("PPG\x01")

// partitionOf picks the partition group of a new packed queue.
func partitionOf(vhost, name string, n int) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(vhost))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(name))
	return meta.PartitionGroupBase + h.Sum64()%uint64(n)
}

func partEntry(kind byte, tag uint64) []byte {
	b := make([]byte, partTagLen)
	b[0] = kind
	binary.BigEndian.PutUint64(b[1:], tag)
	return b
}

// partitionLog is a partition group's state machine: the queueLog of each queue in it, by tag.
// Apply, Snapshot, Restore and the LogKeeper calls run on the host's loop; mu guards subs,
// which the broker reads (sub) when it starts a queue.
type partitionLog struct {
	mu   sync.Mutex
	subs map[uint64]*queueLog
	// pending are the queueLogs of queues this node started whose open entry has not been
	// applied yet (expect): the entry installs them rather than a new one.
	pending map[uint64]*queueLog

	reader   cluster.LogReader
	attached bool
	applied  uint64
	interval uint64 // SnapshotInterval, as of the last snapshot or restore
}

func newPartitionLog() *partitionLog { return &partitionLog{subs: map[uint64]*queueLog{}} }

// newSub returns an empty queueLog for the queue tagged tag. mu held, or p not shared yet.
func (p *partitionLog) newSub(tag uint64) *queueLog {
	l := newQueueLog()
	l.prefix = partEntry(partQueueEntry, tag)
	if p.attached {
		l.AttachLog(p.reader)
	}
	return l
}

// sub returns the queueLog of the queue tagged tag, nil if the partition does not hold it.
func (p *partitionLog) sub(tag uint64) *queueLog {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.subs[tag]
}

// expect returns the queueLog the open entry of the queue tagged tag will install here.
func (p *partitionLog) expect(tag uint64) *queueLog {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.subs[tag]; l != nil {
		return l
	}
	if p.pending == nil {
		p.pending = map[uint64]*queueLog{}
	}
	l := p.pending[tag]
	if l == nil {
		l = p.newSub(tag)
		p.pending[tag] = l
	}
	return l
}

// opened returns the queueLog an open entry of tag installs: the one this node's queue waits
// with, or a new one. mu held.
func (p *partitionLog) openedLocked(tag uint64) *queueLog {
	if l := p.pending[tag]; l != nil {
		delete(p.pending, tag)
		return l
	}
	return p.newSub(tag)
}

// tags lists the queues the partition holds.
func (p *partitionLog) tags() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]uint64, 0, len(p.subs))
	for t := range p.subs {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Len is the number of queues in the partition.
func (p *partitionLog) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.subs)
}

// Apply dispatches a queue's entry to its queueLog (with the queueLog's result), or opens or
// drops a queue.
func (p *partitionLog) Apply(index uint64, data []byte) any {
	p.applied = index
	if len(data) < partTagLen {
		return errCorruptEntry
	}
	tag := binary.BigEndian.Uint64(data[1:partTagLen])
	p.mu.Lock()
	l := p.subs[tag]
	switch data[0] {
	case partQueueEntry:
		p.mu.Unlock()
		if l == nil {
			return errNotInPartition
		}
		return l.Apply(index, data[partTagLen:])
	case partOpen:
		if l == nil {
			p.subs[tag] = p.openedLocked(tag)
		}
		p.mu.Unlock()
		return nil
	case partDrop:
		delete(p.subs, tag)
		delete(p.pending, tag)
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	return errCorruptEntry
}

// AttachLog implements cluster.LogKeeper.
func (p *partitionLog) AttachLog(r cluster.LogReader) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reader, p.attached = r, true
	for _, l := range p.subs {
		l.AttachLog(r)
	}
	for _, l := range p.pending {
		l.AttachLog(r)
	}
}

// KeepFrom implements cluster.LogKeeper: the lowest index a queue of the partition still reads
// back, as of the snapshot just taken (every queue's was taken with it).
func (p *partitionLog) KeepFrom() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var keep uint64
	for _, l := range p.subs {
		if k := l.KeepFrom(); k != 0 && (keep == 0 || k < keep) {
			keep = k
		}
	}
	return keep
}

// SnapshotInterval implements cluster.LogKeeper: the sum of the queues' (each asks for entries
// of its own, and the partition's log carries them all). It is counted at each snapshot, not at
// each entry: the host asks after every entry it applies.
func (p *partitionLog) SnapshotInterval() uint64 { return p.interval }

func (p *partitionLog) countInterval() {
	var n uint64
	for _, l := range p.subs {
		n += l.SnapshotInterval()
	}
	p.interval = n
}

// Snapshot is every queue's snapshot, by tag. Each queue's log state counts as applied up to
// the partition's last entry, so an idle queue's floor moves past the other queues' entries.
func (p *partitionLog) Snapshot() ([]byte, error) {
	p.mu.Lock()
	subs := make([]uint64, 0, len(p.subs))
	for t := range p.subs {
		subs = append(subs, t)
	}
	p.mu.Unlock()
	slices.Sort(subs)
	snaps := make([][]byte, len(subs))
	for i, t := range subs {
		l := p.sub(t)
		l.applied = max(l.applied, p.applied)
		data, err := l.Snapshot()
		if err != nil {
			return nil, fmt.Errorf("partition snapshot, queue %d: %w", t, err)
		}
		snaps[i] = data
	}
	p.mu.Lock()
	p.countInterval()
	p.mu.Unlock()
	return encodePartitionSnapshot(subs, snaps), nil
}

// encodePartitionSnapshot writes a partition snapshot: "PPG" 1, the number of queues, then per
// queue its tag (8 bytes) and its queueLog snapshot (uvarint length, bytes).
func encodePartitionSnapshot(tags []uint64, snaps [][]byte) []byte {
	size := len(partitionLogMagic) + binary.MaxVarintLen64
	for _, s := range snaps {
		size += 8 + binary.MaxVarintLen64 + len(s)
	}
	buf := append(make([]byte, 0, size), partitionLogMagic...)
	buf = binary.AppendUvarint(buf, uint64(len(tags)))
	for i, t := range tags {
		buf = binary.BigEndian.AppendUint64(buf, t)
		buf = binary.AppendUvarint(buf, uint64(len(snaps[i])))
		buf = append(buf, snaps[i]...)
	}
	return buf
}

// decodePartitionSnapshot splits a partition snapshot into its queues' snapshots.
func decodePartitionSnapshot(data []byte) (tags []uint64, snaps [][]byte, err error) {
	if !bytes.HasPrefix(data, partitionLogMagic) {
		return nil, nil, fmt.Errorf("%w: not a partition snapshot", errCorruptEntry)
	}
	data = data[len(partitionLogMagic):]
	n, used := binary.Uvarint(data)
	if used <= 0 || n > uint64(len(data)) {
		return nil, nil, errCorruptEntry
	}
	data = data[used:]
	for range n {
		if len(data) < 8 {
			return nil, nil, errCorruptEntry
		}
		t := binary.BigEndian.Uint64(data)
		if len(tags) > 0 && t <= tags[len(tags)-1] {
			return nil, nil, fmt.Errorf("%w: partition snapshot tags out of order", errCorruptEntry)
		}
		data = data[8:]
		size, used := binary.Uvarint(data)
		if used <= 0 || size > uint64(len(data)-used) {
			return nil, nil, errCorruptEntry
		}
		data = data[used:]
		tags, snaps = append(tags, t), append(snaps, data[:size])
		data = data[size:]
	}
	if len(data) != 0 {
		return nil, nil, errCorruptEntry
	}
	return tags, snaps, nil
}

// Restore replaces every queue's state with the snapshot's: a queue running here gets the
// difference handed over as with a group of its own (queueLog.Restore); a queue the snapshot
// does not hold left the partition.
func (p *partitionLog) Restore(data []byte) error {
	tags, snaps, err := decodePartitionSnapshot(data)
	if err != nil {
		return fmt.Errorf("partition snapshot: %w", err)
	}
	p.mu.Lock()
	old := p.subs
	p.mu.Unlock()
	next := make(map[uint64]*queueLog, len(tags))
	for i, t := range tags {
		l := old[t]
		if l == nil {
			p.mu.Lock()
			l = p.openedLocked(t)
			p.mu.Unlock()
		}
		l.applied = max(l.applied, p.applied)
		if err := l.Restore(snaps[i]); err != nil {
			return fmt.Errorf("partition snapshot, queue %d: %w", t, err)
		}
		if f := refIndex(l.floor); f > 0 {
			p.applied = max(p.applied, f-1)
		}
		next[t] = l
	}
	p.mu.Lock()
	p.subs = next
	p.countInterval()
	p.mu.Unlock()
	return nil
}

// TransferSnapshot implements cluster.LogKeeper: each queue's snapshot completed with the
// bodies it left in the log.
func (p *partitionLog) TransferSnapshot(data []byte, index uint64) ([]byte, error) {
	tags, snaps, err := decodePartitionSnapshot(data)
	if err != nil {
		return nil, fmt.Errorf("partition snapshot: %w", err)
	}
	out := make([][]byte, len(tags))
	for i, t := range tags {
		l := newQueueLog()
		l.prefix = partEntry(partQueueEntry, t)
		l.AttachLog(p.reader)
		if out[i], err = l.TransferSnapshot(snaps[i], index); err != nil {
			return nil, fmt.Errorf("partition snapshot, queue %d: %w", t, err)
		}
	}
	return encodePartitionSnapshot(tags, out), nil
}

// partition is a partition group this broker runs.
type partition struct {
	group *cluster.Group
	log   *partitionLog
}

// partitionLocked returns the running partition group id, starting it (recovered from storage,
// adopted from a parked replica, or new) on first use. b.mu held.
func (b *Broker) partitionLocked(ctx context.Context, id uint64) (*partition, error) {
	if p := b.partitions[id]; p != nil {
		return p, nil
	}
	l := newPartitionLog()
	g, err := b.cfg.Host.AddGroup(ctx, id, l)
	if err != nil {
		return nil, fmt.Errorf("start partition group %d: %w", id, err)
	}
	p := &partition{group: g, log: l}
	if b.partitions == nil {
		b.partitions = map[uint64]*partition{}
	}
	b.partitions[id] = p
	return p, nil
}

// partitionWait bounds the wait for a queue's open entry.
const partitionWait = 30 * time.Second

// joinPartitionLocked returns the queueLog of def's queue in its partition. When the partition
// does not hold the queue yet it proposes the queue's open entry and returns the queueLog that
// entry will install (pending: the queue may start with it, and propose its own entries, which
// follow the open entry in the log), with the open's future. It does not wait for it: the
// declaration of the first queue of a new partition group must reach group 0 first, since the
// standbys start their replicas of the group only when they apply it, and without them the
// group has no quorum (openedLocked waits, after). b.mu held.
func (v *VHost) joinPartitionLocked(ctx context.Context, def meta.QueueDef) (*partition, *queueLog, *cluster.Future, error) {
	p, err := v.b.partitionLocked(ctx, def.Partition)
	if err != nil {
		return nil, nil, nil, err
	}
	if l := p.log.sub(def.Group); l != nil {
		return p, l, nil, nil
	}
	l := p.log.expect(def.Group)
	f, err := p.group.Propose(ctx, partEntry(partOpen, def.Group))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open queue in partition group %d: %w", def.Partition, err)
	}
	return p, l, f, nil
}

// openedLocked waits until q's open entry (joinPartitionLocked) is applied, proposing it again
// if it was dropped (a leader change), bounded by partitionWait. b.mu held.
func (q *Queue) openedLocked() error {
	if q.opening == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), partitionWait)
	defer cancel()
	f := q.opening
	for {
		_, err := f.Wait(ctx)
		if q.part.log.sub(q.def.Group) == q.log {
			q.opening = nil
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("open queue in partition group %d: %w", q.part.group.ID(), ctx.Err())
		}
		if err == nil {
			return fmt.Errorf("open queue in partition group %d: applied, but the queue is not there", q.part.group.ID())
		}
		if f, err = q.part.group.Propose(ctx, partEntry(partOpen, q.def.Group)); err != nil {
			return fmt.Errorf("open queue in partition group %d: %w", q.part.group.ID(), err)
		}
	}
}

// leavePartition drops a deleted queue from its partition. It does not wait: if the entry is
// lost, recovery drops the queue (dropOrphans).
func (b *Broker) leavePartition(p *partition, tag uint64) {
	if err := p.group.ProposeAsync(partEntry(partDrop, tag), nil); err != nil && !errors.Is(err, cluster.ErrStopped) {
		b.log.Warn("deleted queue not dropped from its partition group", zap.Uint64("group", p.group.ID()), zap.Error(err))
	}
}

// dropOrphansLocked drops, from every running partition, the queues no metadata record names
// (see the file comment). b.mu held.
func (b *Broker) dropOrphansLocked() {
	want := map[uint64]map[uint64]bool{}
	for _, v := range *b.vhosts.Load() {
		for _, def := range b.meta.Queues(v.name) {
			if def.Partition != 0 {
				if want[def.Partition] == nil {
					want[def.Partition] = map[uint64]bool{}
				}
				want[def.Partition][def.Group] = true
			}
		}
	}
	for id, p := range b.partitions {
		for _, t := range p.log.tags() {
			if !want[id][t] {
				b.log.Info("dropping a queue no record names from its partition group", zap.Uint64("group", id), zap.Uint64("queue", t))
				b.leavePartition(p, t)
			}
		}
	}
}

// StandIn is the state machine of a standby's replica of group id, a durable queue's own group
// (QueueStandIn) or a partition group (a partitionLog, which, like a queue's log, applies every
// entry and delivers nothing).
func StandIn(id uint64) cluster.StateMachine {
	if meta.IsPartitionGroup(id) {
		return newPartitionLog()
	}
	return QueueStandIn()
}

// IsPartitionGroup reports whether id is a partition group's: one a node never removes (see the
// file comment).
func IsPartitionGroup(id uint64) bool { return meta.IsPartitionGroup(id) }
