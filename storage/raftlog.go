package storage

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/parleymq/parley/storage/keys"
)

// RaftLog is one raft group's log and state. It implements raft.Storage, so
// it can be raft.Config.Storage; the Ready handler writes through Append,
// SetHardState and ApplySnapshot into a Batch, and the apply path through
// SetApplied, CreateSnapshot and Compact.
//
// The log holds entries FirstIndex()..LastIndex(). Below them is the
// truncation point: the index and term of the last entry removed (by Compact,
// or by ApplySnapshot which replaces the whole log), which raft still asks
// the term of. Compact never removes entries the latest snapshot does not
// cover, so a restart can always rebuild the state machine from the snapshot
// and the entries after it.
//
// As raft.Storage requires, Entries and Term return the bare raft.ErrCompacted
// and raft.ErrUnavailable (raft compares them with ==); every other error is
// wrapped.
type RaftLog struct {
	e     *Engine
	group uint64

	mu  sync.Mutex
	err error // sticky: ErrLogFailed or ErrDestroyed, wrapped

	hardState *raftpb.HardState        // nil until first set
	snapMeta  *raftpb.SnapshotMetadata // nil until the first snapshot
	snapData  []byte                   // set only while the batch writing it is uncommitted
	snapBatch *Batch                   // that batch
	confState *raftpb.ConfState        // from snapMeta, or empty
	applied   uint64
	destroyed bool

	truncIndex, truncTerm uint64
	lastIndex             uint64

	// tail is the newest entries, consecutive and ending at lastIndex
	// (tailFirst = lastIndex+1-len(tail)); empty when nothing is cached.
	// Entries above stableIndex are only in an uncommitted batch and are
	// never evicted; entries older than the tail are all in Pebble.
	tail        []cachedEntry
	tailBytes   int
	tailLimit   int
	stableIndex uint64
}

type cachedEntry struct {
	e    *raftpb.Entry
	size int // proto size: what raft's maxSize counts
}

var _ raft.Storage = (*RaftLog)(nil)

func loadRaftLog(e *Engine, group uint64) (*RaftLog, error) {
	l := &RaftLog{e: e, group: group, tailLimit: max(e.opts.TailCacheBytes, 0)}
	v, err := e.get(keys.HardState(group))
	if err != nil {
		return nil, err
	}
	if v != nil {
		hs := &raftpb.HardState{}
		if err := proto.Unmarshal(v, hs); err != nil {
			return nil, fmt.Errorf("%w: group %d hard state: %v", ErrCorrupt, group, err)
		}
		l.hardState = hs
	}
	if v, err = e.get(keys.SnapshotMeta(group)); err != nil {
		return nil, err
	}
	if v != nil {
		m := &raftpb.SnapshotMetadata{}
		if err := proto.Unmarshal(v, m); err != nil {
			return nil, fmt.Errorf("%w: group %d snapshot metadata: %v", ErrCorrupt, group, err)
		}
		l.snapMeta = m
	}
	if v, err = e.get(keys.Applied(group)); err != nil {
		return nil, err
	}
	if v != nil {
		if len(v) != 8 {
			return nil, fmt.Errorf("%w: group %d applied index is %d bytes", ErrCorrupt, group, len(v))
		}
		l.applied = binary.BigEndian.Uint64(v)
	}
	if v, err = e.get(keys.Truncated(group)); err != nil {
		return nil, err
	}
	if v != nil {
		if len(v) != 16 {
			return nil, fmt.Errorf("%w: group %d truncation state is %d bytes", ErrCorrupt, group, len(v))
		}
		l.truncIndex = binary.BigEndian.Uint64(v)
		l.truncTerm = binary.BigEndian.Uint64(v[8:])
	}
	l.lastIndex = l.truncIndex
	last, ok, err := l.lastStoredIndex()
	if err != nil {
		return nil, err
	}
	if ok {
		if last < l.truncIndex {
			return nil, fmt.Errorf("%w: group %d last entry %d below truncation point %d", ErrCorrupt, group, last, l.truncIndex)
		}
		l.lastIndex = last
	}
	l.stableIndex = l.lastIndex
	l.setConfState()
	return l, nil
}

// lastStoredIndex finds the group's highest log key in Pebble.
func (l *RaftLog) lastStoredIndex() (uint64, bool, error) {
	lo, hi := keys.LogPrefixRange(l.group)
	it, err := l.e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, false, fmt.Errorf("storage: group %d: %w", l.group, err)
	}
	defer it.Close()
	if !it.Last() {
		if err := it.Error(); err != nil {
			return 0, false, fmt.Errorf("storage: group %d last index: %w", l.group, err)
		}
		return 0, false, nil
	}
	_, idx, err := keys.ParseLogEntry(it.Key())
	if err != nil {
		return 0, false, fmt.Errorf("%w: group %d: %v", ErrCorrupt, l.group, err)
	}
	return idx, true, nil
}

func (l *RaftLog) setConfState() {
	if cs := l.snapMeta.GetConfState(); cs != nil {
		l.confState = proto.Clone(cs).(*raftpb.ConfState)
	} else {
		l.confState = &raftpb.ConfState{}
	}
}

// Group is the raft group this log belongs to.
func (l *RaftLog) Group() uint64 { return l.group }

func (l *RaftLog) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = fmt.Errorf("%w: group %d: %v", ErrLogFailed, l.group, err)
	}
}

// committed is called by b.Commit once b is in Pebble: entries up to last
// may now leave the tail cache, a snapshot b wrote can be read from Pebble,
// and a destroyed group can be forgotten.
func (l *RaftLog) committed(b *Batch, last uint64) {
	l.mu.Lock()
	if last > l.stableIndex {
		l.stableIndex = min(last, l.lastIndex)
	}
	if l.snapBatch == b {
		l.snapBatch, l.snapData = nil, nil
	}
	l.evict()
	destroyed := l.destroyed
	l.mu.Unlock()
	if destroyed {
		l.e.forget(l)
	}
}

func (l *RaftLog) check() error {
	if l.err != nil {
		return l.err
	}
	if l.e.isClosed.Load() {
		return ErrClosed
	}
	return nil
}

// checkBatch is check for writes: the batch must belong to this engine.
func (l *RaftLog) checkBatch(b *Batch) error {
	if err := l.check(); err != nil {
		return err
	}
	if b.e != l.e || b.done {
		return fmt.Errorf("storage: group %d: batch from another engine or already finished", l.group)
	}
	return nil
}

func (l *RaftLog) tailFirst() uint64 { return l.lastIndex + 1 - uint64(len(l.tail)) }

// evict drops the oldest cached entries while the cache is over its budget,
// keeping every entry not yet committed to Pebble.
func (l *RaftLog) evict() {
	n := 0
	for n < len(l.tail) && l.tailBytes > l.tailLimit && l.tail[n].e.GetIndex() <= l.stableIndex {
		l.tailBytes -= l.tail[n].size
		n++
	}
	if n > 0 {
		clear(l.tail[:n]) // let the entries be collected
		l.tail = l.tail[n:]
	}
}

// dropTailThrough removes cached entries with index <= i (compaction).
func (l *RaftLog) dropTailThrough(i uint64) {
	for len(l.tail) > 0 && l.tail[0].e.GetIndex() <= i {
		l.tailBytes -= l.tail[0].size
		l.tail[0] = cachedEntry{}
		l.tail = l.tail[1:]
	}
}

// Append writes entries into b, replacing any conflicting suffix of the log
// (raft semantics: an entry at an index already in the log overwrites it,
// and everything after the appended entries is removed). Entries at or below
// the truncation point are skipped. The in-memory view changes at once.
func (l *RaftLog) Append(b *Batch, entries []*raftpb.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkBatch(b); err != nil {
		return err
	}
	first := entries[0].GetIndex()
	for i, ent := range entries {
		if ent.GetIndex() != first+uint64(i) {
			return fmt.Errorf("%w: group %d: entry %d has index %d after %d", ErrLogGap, l.group, i, ent.GetIndex(), first+uint64(i)-1)
		}
	}
	if first > l.lastIndex+1 {
		return fmt.Errorf("%w: group %d: appending at %d after last index %d", ErrLogGap, l.group, first, l.lastIndex)
	}
	newLast := first + uint64(len(entries)) - 1
	if newLast <= l.truncIndex {
		return nil
	}
	if first <= l.truncIndex {
		entries = entries[l.truncIndex+1-first:]
		first = l.truncIndex + 1
	}
	sizes := make([]int, len(entries))
	for i, ent := range entries {
		size, err := b.setEntry(l.group, ent)
		if err != nil {
			return fmt.Errorf("storage: group %d: write entry %d: %w", l.group, ent.GetIndex(), err)
		}
		sizes[i] = size
	}
	if newLast < l.lastIndex {
		lo, hi := keys.LogRange(l.group, newLast+1, l.lastIndex+1)
		if err := b.b.DeleteRange(lo, hi, nil); err != nil {
			return fmt.Errorf("storage: group %d: truncate log after %d: %w", l.group, newLast, err)
		}
	}
	b.entries += len(entries)

	// The tail must stay a consecutive run ending at lastIndex: cut it at
	// first (or empty it if first is older than the tail), then extend.
	if tf := l.tailFirst(); first < tf {
		clear(l.tail)
		l.tail, l.tailBytes = l.tail[:0], 0
	} else {
		keep := int(first - tf)
		for _, c := range l.tail[keep:] {
			l.tailBytes -= c.size
		}
		clear(l.tail[keep:])
		l.tail = l.tail[:keep]
	}
	// Even with the cache disabled the new entries are cached until b
	// commits: before that they are neither in Pebble nor anywhere else.
	for i, ent := range entries {
		l.tail = append(l.tail, cachedEntry{e: ent, size: sizes[i]})
		l.tailBytes += sizes[i]
	}
	l.lastIndex = newLast
	l.stableIndex = min(l.stableIndex, first-1)
	b.touch(l, newLast)
	l.evict()
	return nil
}

// SetHardState writes raft's hard state (term, vote, commit) into b.
func (l *RaftLog) SetHardState(b *Batch, hs *raftpb.HardState) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkBatch(b); err != nil {
		return err
	}
	v, err := proto.Marshal(hs)
	if err != nil {
		return fmt.Errorf("storage: group %d: encode hard state: %w", l.group, err)
	}
	if err := b.b.Set(keys.HardState(l.group), v, nil); err != nil {
		return fmt.Errorf("storage: group %d: write hard state: %w", l.group, err)
	}
	l.hardState = proto.Clone(hs).(*raftpb.HardState)
	b.touch(l, 0)
	return nil
}

// SetApplied records the index of the last entry applied to the state machine.
func (l *RaftLog) SetApplied(b *Batch, index uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkBatch(b); err != nil {
		return err
	}
	if err := l.writeApplied(b, index); err != nil {
		return err
	}
	b.touch(l, 0)
	return nil
}

func (l *RaftLog) writeApplied(b *Batch, index uint64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], index)
	if err := b.b.Set(keys.Applied(l.group), v[:], nil); err != nil {
		return fmt.Errorf("storage: group %d: write applied index: %w", l.group, err)
	}
	l.applied = index
	return nil
}

// Applied is the last applied index recorded with SetApplied (or by
// ApplySnapshot).
func (l *RaftLog) Applied() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.applied
}

func (l *RaftLog) writeTruncated(b *Batch, index, term uint64) error {
	var v [16]byte
	binary.BigEndian.PutUint64(v[:], index)
	binary.BigEndian.PutUint64(v[8:], term)
	if err := b.b.Set(keys.Truncated(l.group), v[:], nil); err != nil {
		return fmt.Errorf("storage: group %d: write truncation state: %w", l.group, err)
	}
	l.truncIndex, l.truncTerm = index, term
	return nil
}

func (l *RaftLog) writeSnapshot(b *Batch, meta *raftpb.SnapshotMetadata, data []byte) error {
	v, err := proto.Marshal(meta)
	if err != nil {
		return fmt.Errorf("storage: group %d: encode snapshot metadata: %w", l.group, err)
	}
	if err := b.b.Set(keys.SnapshotMeta(l.group), v, nil); err != nil {
		return fmt.Errorf("storage: group %d: write snapshot metadata: %w", l.group, err)
	}
	if err := b.b.Set(keys.StateMachineSnapshot(l.group), data, nil); err != nil {
		return fmt.Errorf("storage: group %d: write state-machine snapshot: %w", l.group, err)
	}
	l.snapMeta = meta
	// Until b commits, Snapshot must not read the old data from Pebble
	// next to the new metadata.
	l.snapData, l.snapBatch = data, b
	if l.snapData == nil {
		l.snapData = []byte{}
	}
	l.setConfState()
	return nil
}

// ApplySnapshot installs a snapshot received from the leader: it replaces the
// whole log (the truncation point becomes the snapshot's index and term),
// stores the snapshot's metadata and data, and records the snapshot's index
// as applied (the stored state-machine snapshot is the state at that index).
// A snapshot not newer than the current one fails with raft.ErrSnapOutOfDate.
func (l *RaftLog) ApplySnapshot(b *Batch, snap *raftpb.Snapshot) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkBatch(b); err != nil {
		return err
	}
	meta := snap.GetMetadata()
	index, term := meta.GetIndex(), meta.GetTerm()
	if cur := l.snapMeta.GetIndex(); cur != 0 && index <= cur {
		return fmt.Errorf("storage: group %d: snapshot at %d, have %d: %w", l.group, index, cur, raft.ErrSnapOutOfDate)
	}
	lo, hi := keys.LogPrefixRange(l.group)
	if err := b.b.DeleteRange(lo, hi, nil); err != nil {
		return fmt.Errorf("storage: group %d: clear log for snapshot: %w", l.group, err)
	}
	if err := l.writeSnapshot(b, proto.Clone(meta).(*raftpb.SnapshotMetadata), snap.GetData()); err != nil {
		return err
	}
	if err := l.writeTruncated(b, index, term); err != nil {
		return err
	}
	if err := l.writeApplied(b, index); err != nil {
		return err
	}
	clear(l.tail)
	l.tail, l.tailBytes = l.tail[:0], 0
	l.lastIndex = index
	l.stableIndex = index
	b.touch(l, 0)
	return nil
}

// CreateSnapshot records a state-machine snapshot taken at index: data (the
// state machine's bytes) under keys.StateMachineSnapshot, and raft's snapshot
// metadata (index, the term of entry index, cs) under keys.SnapshotMeta.
// index must be newer than the current snapshot (else raft.ErrSnapOutOfDate)
// and in the log.
func (l *RaftLog) CreateSnapshot(b *Batch, index uint64, cs *raftpb.ConfState, data []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkBatch(b); err != nil {
		return err
	}
	if cur := l.snapMeta.GetIndex(); index <= cur {
		return fmt.Errorf("storage: group %d: snapshot at %d, have %d: %w", l.group, index, cur, raft.ErrSnapOutOfDate)
	}
	if index > l.lastIndex {
		return fmt.Errorf("%w: group %d: snapshot at %d beyond last index %d", ErrOutOfRange, l.group, index, l.lastIndex)
	}
	term, err := l.term(index)
	if err != nil {
		return fmt.Errorf("storage: group %d: term of snapshot index %d: %w", l.group, index, err)
	}
	meta := &raftpb.SnapshotMetadata{Index: proto.Uint64(index), Term: proto.Uint64(term)}
	if cs != nil {
		meta.ConfState = proto.Clone(cs).(*raftpb.ConfState)
	} else if old := l.snapMeta.GetConfState(); old != nil {
		meta.ConfState = proto.Clone(old).(*raftpb.ConfState)
	}
	if err := l.writeSnapshot(b, meta, data); err != nil {
		return err
	}
	b.touch(l, 0)
	return nil
}

// Compact removes the entries up to and including index with one
// DeleteRange. index must be covered by the latest snapshot (ErrOutOfRange
// otherwise), and above the current truncation point (raft.ErrCompacted
// otherwise).
func (l *RaftLog) Compact(b *Batch, index uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkBatch(b); err != nil {
		return err
	}
	if index <= l.truncIndex {
		return fmt.Errorf("storage: group %d: compact to %d, already at %d: %w", l.group, index, l.truncIndex, raft.ErrCompacted)
	}
	if snap := l.snapMeta.GetIndex(); index > snap {
		return fmt.Errorf("%w: group %d: compact to %d beyond snapshot index %d", ErrOutOfRange, l.group, index, snap)
	}
	if index > l.lastIndex {
		return fmt.Errorf("%w: group %d: compact to %d beyond last index %d", ErrOutOfRange, l.group, index, l.lastIndex)
	}
	term, err := l.term(index)
	if err != nil {
		return fmt.Errorf("storage: group %d: term of compaction index %d: %w", l.group, index, err)
	}
	// From the start of the group's log, not from the truncation point: one
	// tombstone either way, and it also covers anything a crash mid-way
	// through an earlier version might have left.
	lo, _ := keys.LogPrefixRange(l.group)
	if err := b.b.DeleteRange(lo, keys.LogEntry(l.group, index+1), nil); err != nil {
		return fmt.Errorf("storage: group %d: delete log through %d: %w", l.group, index, err)
	}
	if err := l.writeTruncated(b, index, term); err != nil {
		return err
	}
	l.dropTailThrough(index)
	b.touch(l, 0)
	return nil
}

// Destroy removes everything the group has on disk: its log with one
// DeleteRange and its state records. After b commits, Engine.RaftLog for the
// group starts afresh; until then, this RaftLog fails with ErrDestroyed.
func (l *RaftLog) Destroy(b *Batch) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkBatch(b); err != nil {
		return err
	}
	lo, hi := keys.LogPrefixRange(l.group)
	if err := b.b.DeleteRange(lo, hi, nil); err != nil {
		return fmt.Errorf("storage: group %d: delete log: %w", l.group, err)
	}
	for _, k := range keys.GroupKeys(l.group) {
		if err := b.b.Delete(k, nil); err != nil {
			return fmt.Errorf("storage: group %d: delete %s: %w", l.group, keys.String(k), err)
		}
	}
	l.destroyed = true
	l.err = fmt.Errorf("%w: group %d", ErrDestroyed, l.group)
	clear(l.tail)
	l.tail, l.tailBytes = nil, 0
	b.touch(l, 0)
	return nil
}

// InitialState implements raft.Storage: the hard state (nil if never set)
// and the conf state of the latest snapshot (empty if none).
func (l *RaftLog) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(); err != nil {
		return nil, nil, err
	}
	var hs *raftpb.HardState
	if l.hardState != nil {
		hs = proto.Clone(l.hardState).(*raftpb.HardState)
	}
	return hs, proto.Clone(l.confState).(*raftpb.ConfState), nil
}

// FirstIndex implements raft.Storage.
func (l *RaftLog) FirstIndex() (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(); err != nil {
		return 0, err
	}
	return l.truncIndex + 1, nil
}

// LastIndex implements raft.Storage.
func (l *RaftLog) LastIndex() (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(); err != nil {
		return 0, err
	}
	return l.lastIndex, nil
}

// Term implements raft.Storage: the term of entry i, for i from
// FirstIndex()-1 to LastIndex().
func (l *RaftLog) Term(i uint64) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(); err != nil {
		return 0, err
	}
	return l.term(i)
}

func (l *RaftLog) term(i uint64) (uint64, error) {
	switch {
	case i < l.truncIndex:
		return 0, raft.ErrCompacted
	case i == l.truncIndex:
		return l.truncTerm, nil
	case i > l.lastIndex:
		return 0, raft.ErrUnavailable
	case i >= l.tailFirst():
		return l.tail[i-l.tailFirst()].e.GetTerm(), nil
	}
	ents, _, err := l.read(i, i+1, math.MaxUint64, nil, 0)
	if err != nil {
		return 0, err
	}
	return ents[0].GetTerm(), nil
}

// Entries implements raft.Storage: entries [lo, hi), at least one, and no
// more than maxSize bytes (raft's measure: the entries' encoded size).
func (l *RaftLog) Entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(); err != nil {
		return nil, err
	}
	if lo <= l.truncIndex {
		return nil, raft.ErrCompacted
	}
	if hi > l.lastIndex+1 || lo > hi {
		return nil, raft.ErrUnavailable
	}
	if lo == hi {
		return nil, nil
	}
	out := make([]*raftpb.Entry, 0, min(hi-lo, 256))
	var size uint64
	tf := l.tailFirst()
	if lo < tf {
		var err error
		out, size, err = l.read(lo, min(hi, tf), maxSize, out, 0)
		if err != nil {
			return nil, err
		}
		if uint64(len(out)) < min(hi, tf)-lo {
			return out, nil // stopped by maxSize
		}
		lo = tf
	}
	for i := lo; i < hi; i++ {
		c := l.tail[i-tf]
		if len(out) > 0 && size+uint64(c.size) > maxSize {
			break
		}
		size += uint64(c.size)
		out = append(out, c.e)
	}
	return out, nil
}

// read appends entries [lo, hi) from Pebble to out, whose entries total size
// bytes, stopping before the entry that would take the total above maxSize
// but returning at least one entry overall. It returns the new total. A
// missing entry is raft.ErrUnavailable.
func (l *RaftLog) read(lo, hi, maxSize uint64, out []*raftpb.Entry, size uint64) ([]*raftpb.Entry, uint64, error) {
	start, end := keys.LogRange(l.group, lo, hi)
	it, err := l.e.db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		return nil, 0, fmt.Errorf("storage: group %d read [%d,%d): %w", l.group, lo, hi, err)
	}
	defer it.Close()
	next := lo
	for valid := it.First(); valid && next < hi; valid = it.Next() {
		_, idx, err := keys.ParseLogEntry(it.Key())
		if err != nil {
			return nil, 0, fmt.Errorf("%w: group %d: %v", ErrCorrupt, l.group, err)
		}
		if idx != next {
			return nil, 0, raft.ErrUnavailable
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, fmt.Errorf("storage: group %d read entry %d: %w", l.group, idx, err)
		}
		if len(out) > 0 && size+uint64(len(v)) > maxSize {
			return out, size, nil
		}
		ent := &raftpb.Entry{}
		// Unmarshal copies bytes fields (Data) out of v, which Pebble reuses.
		if err := proto.Unmarshal(v, ent); err != nil {
			return nil, 0, fmt.Errorf("%w: group %d entry %d: %v", ErrCorrupt, l.group, idx, err)
		}
		if ent.GetIndex() != idx {
			return nil, 0, fmt.Errorf("%w: group %d: key says entry %d, value says %d", ErrCorrupt, l.group, idx, ent.GetIndex())
		}
		size += uint64(len(v))
		out = append(out, ent)
		next++
	}
	if err := it.Error(); err != nil {
		return nil, 0, fmt.Errorf("storage: group %d read [%d,%d): %w", l.group, lo, hi, err)
	}
	if next < hi {
		// The iterator ran out before hi without a size stop: a hole.
		return nil, 0, raft.ErrUnavailable
	}
	return out, size, nil
}

// Snapshot implements raft.Storage: the latest snapshot (metadata and the
// state machine's bytes), or an empty one if none was taken.
func (l *RaftLog) Snapshot() (*raftpb.Snapshot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(); err != nil {
		return nil, err
	}
	if l.snapMeta == nil {
		return &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{ConfState: &raftpb.ConfState{}}}, nil
	}
	data := l.snapData
	if l.snapBatch == nil {
		var err error
		if data, err = l.e.get(keys.StateMachineSnapshot(l.group)); err != nil {
			return nil, err
		}
	}
	meta := proto.Clone(l.snapMeta).(*raftpb.SnapshotMetadata)
	if meta.ConfState == nil {
		meta.ConfState = &raftpb.ConfState{}
	}
	return &raftpb.Snapshot{Metadata: meta, Data: data}, nil
}
