package broker

// A durable queue's log is its message store (DESIGN.md §4), and a queue may be a million
// messages deep with no consumer. So neither the queue nor its log's state machine holds a
// backlog's bodies in memory, and a snapshot does not copy them:
//
//   - queueLog, the group's state machine, keeps a compact record per live message (reference,
//     enqueue time, size, priority, TTL: what the queue state machine needs to recover it) in a
//     slice sorted by reference. A snapshot is those records. It implements cluster.LogKeeper:
//     the host compacts the log no further than the oldest live message, whose enqueue entry
//     still holds its body.
//   - The queue state machine keeps the bodies of its head (broker Config.QueueBodyWindow bytes
//     of ready messages) and stubs for the rest; Queue.loadBody reads a stub's body back from
//     the log when it is delivered, a run of entries at a time.
//   - A few messages stuck at the head (unacknowledged, or requeued over and over) must not pin
//     the log: when a snapshot finds live messages that are few and far apart from the rest, it
//     copies their bodies into itself ("inline"), keeps them in memory, and lets the log be
//     compacted past them. The budget for that is small (inlineMax*), and the choice is made
//     only when it frees more log than it copies.
//
// Memory per message in a deep durable queue is then about 80 bytes (this record and the
// queue's entry), whatever the body size; a restart reads the records from the snapshot and
// replays at most the entries since, and reads no body until it delivers it.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/cluster"
	"go.uber.org/zap"
)

// Bounds of what one snapshot copies into itself to unpin the log.
const (
	inlineMaxMessages = 1024
	inlineMaxBytes    = 8 << 20
)

// queueLogMagic starts a queue log snapshot; the last byte is its version. Version 2 added the
// queue's state records (Queue.SetState) after the live messages; version 3 has packed refs
// (packRef), where 1 and 2 had log indexes. Versions 1 and 2 are still read.
var (
	queueLogMagic   = []byte("PQL\x03")
	queueLogMagicV2 = []byte("PQL\x02")
	queueLogMagicV1 = []byte("PQL\x01")
)

// queueLog is a durable queue's state machine: the live messages by reference.
type queueLog struct {
	// mu guards pending (the queue goroutine adds, the host's loop takes), inline (the
	// host's loop changes it, the queue goroutine reads it), the hand-over to the running
	// queue (started, late, lateGone, wake) and every change of live (the queue reads live
	// once, in recover, while the loop may be applying entries).
	mu        sync.Mutex
	pending   map[uint64]pendingEntry
	nextToken uint64 // starts at random: see newQueueLog
	inline    map[uint64]*message.Message
	// state holds the queue's state records by key (Queue.SetState): the host's loop changes
	// it, the adapter reads it through Queue.State. The per-message records of SetRefStates
	// are kept in it too, under refStateKey, so a snapshot carries them as it carries the
	// others; refStates counts them.
	state     map[string][]byte
	refStates int

	// The running queue's share (see "Entries committed after the queue started" below):
	// started is set by recover; from then on the live messages the queue did not propose
	// itself are handed to it through late, and the ones a restored snapshot says are gone
	// through lateGone; wake tells it to take them.
	started  bool
	self     uint64 // the marker of this instance's remove entries (removeEntry)
	late     []liveRecord
	lateGone map[uint64]bool
	wake     func()

	reader entryReader // set by AttachLog, before anything is applied

	// prefix starts every entry of this queue in a partition group's log (partition.go): the
	// queue's tag there. Empty for a queue with a group of its own. The entries this log
	// writes carry it, and reader shows it only the entries that carry it, without it.
	prefix []byte

	// Owned by the host's loop (Apply, Snapshot, Restore, KeepFrom), and read by the queue
	// when it starts (recover, under mu).
	live     []liveRecord // sorted by ref; removed records stay as tombstones until compacted
	removed  int          // tombstones in live
	rmHint   int          // where in live the next removal is likely (removeLocked)
	floor    uint64       // a ref: the log is compacted below its entry, live messages below it are inline
	keepFrom uint64       // the log index the last snapshot needs the log to keep from
	applied  uint64
	decoded  []liveRecord // Apply's scratch: the records of the entry it decodes
	// Enqueue entries applied and the messages they carried, for SnapshotInterval.
	enqEntries, enqMessages uint64
}

// liveRecord is what a restart needs of a live message to put it back in its queue.
type liveRecord struct {
	ref  uint64 // packRef(index of its enqueue entry, its slot there)
	at   int64  // enqueue time, unix ms: TTL counts from it
	ttl  int64  // the expiration property in ms, -1 for none
	size uint32
	prio uint8 // priority+1; 0 for none
	gone bool
}

func (r *liveRecord) stub() queue.Stub {
	return queue.Stub{Size: r.size, Priority: r.prio - 1, HasPrio: r.prio != 0, TTL: r.ttl}
}

// newQueueLog returns an empty queue log. Its proposal tokens start at a random number: Apply
// takes the messages remembered under an entry's token, so a token must not match an entry
// this instance did not propose (one of another node, or of this node before a restart that
// commits only now). With every instance counting from the same start, they did; with a batch
// entry, the records would then get another entry's messages, slots that do not exist, and a
// snapshot that cannot read them back.
func newQueueLog() *queueLog {
	return &queueLog{pending: map[uint64]pendingEntry{}, nextToken: rand.Uint64(), self: removeMarkerBit | rand.Uint64(),
		inline: map[uint64]*message.Message{}, state: map[string][]byte{}}
}

// AttachLog implements cluster.LogKeeper.
func (l *queueLog) AttachLog(r cluster.LogReader) { l.reader = taggedReader{r: r, prefix: l.prefix} }

// entryReader reads a queue's entries from its log (cluster.LogReader, through taggedReader).
type entryReader interface {
	Read(lo, hi, maxBytes uint64, fn func(index uint64, data []byte)) (next uint64, err error)
}

// taggedReader is a group's log as one queue sees it: in a partition group only the entries
// that start with the queue's prefix, without it; in a queue's own group every entry.
type taggedReader struct {
	r      cluster.LogReader
	prefix []byte
}

func (t taggedReader) Read(lo, hi, maxBytes uint64, fn func(index uint64, data []byte)) (uint64, error) {
	if len(t.prefix) == 0 {
		return t.r.Read(lo, hi, maxBytes, fn)
	}
	return t.r.Read(lo, hi, maxBytes, func(i uint64, data []byte) {
		if bytes.HasPrefix(data, t.prefix) {
			fn(i, data[len(t.prefix):])
		}
	})
}

// tagged returns data as an entry of this queue's: behind its prefix in a partition group.
func (l *queueLog) tagged(data []byte) []byte {
	if len(l.prefix) == 0 {
		return data
	}
	return append(append(make([]byte, 0, len(l.prefix)+len(data)), l.prefix...), data...)
}

// KeepFrom implements cluster.LogKeeper.
func (l *queueLog) KeepFrom() uint64 { return l.keepFrom }

// SnapshotInterval implements cluster.LogKeeper: a snapshot costs about 12 bytes a live
// message, so taking one every live/8 enqueued messages (of a body each) keeps snapshots a few
// percent of what the log writes, and a restart replays at most about that many messages. The
// host counts entries, and a batch entry carries several messages: the interval is in entries
// of the average batch so far.
func (l *queueLog) SnapshotInterval() uint64 {
	msgs := uint64(len(l.live)-l.removed) / 8
	if l.enqMessages == 0 {
		return msgs
	}
	return msgs * l.enqEntries / l.enqMessages
}

func recordOf(ref uint64, at int64, m *message.Message) liveRecord {
	s := queue.StubOf(m)
	r := liveRecord{ref: ref, at: at, ttl: s.TTL, size: s.Size}
	if s.HasPrio {
		r.prio = s.Priority + 1
	}
	return r
}

// Entries committed after the queue started. The queue takes the live messages once, when it
// starts (recover), and from then on adds the messages it proposes itself, as their entries
// commit (takeLogged). Any other enqueue entry that commits later is this log's to hand over:
// a proposal in flight when the node went down that a quorum had appended, which commits only
// once the group has a leader again (AddGroup recovers what this node knew committed); an
// entry a new leader committed while this node, serving again now, was down; an entry another
// node proposed; and this queue's own proposal that failed (leader changed, forwarded and
// lost: the publisher got a nack) but still commits. Apply tells them apart by the token: a
// token still pending is a proposal whose callback will get Apply's result, so the queue adds
// the message itself; any other is handed over (late), and the queue takes it at its next
// batch, marked redelivered (it may have been delivered by the node that proposed it). A
// proposal that fails forgets its token (forget, on the host's loop like Apply), so an entry
// of it that commits afterwards is handed over rather than lost. Every message of a committed
// entry reaches the queue once.
//
// A snapshot restored while the queue runs (a follower too far behind its leader) replaces
// the entries between the last one applied and the snapshot: its records past the last
// applied entry are handed over, and the ones the queue has that it no longer holds were
// removed for good by entries this node never applied, so the queue drops them (lateGone)
// while they are ready; their bodies may be gone from this node's log.
//
// Only the queue of the node that leads the group takes the messages handed over (the
// removals it takes anyway). In a cluster one broker drives a queue, on the node that leads
// its group (cmd/parley/cluster.go: the serving node takes the lead of every group before
// it serves); a queue on a node that does not lead is one whose node is about to stop serving
// (cut off, its leadership gone), and the entries it applies are the new leader's messages,
// which the new serving node delivers: delivered here too, they went out twice
// (TestClusterRandomFaults). They wait until this node leads again, if it does.
//
// A removal entry that commits after the queue started and that this queue instance did not
// propose (an ack before a crash or a failover, committed only now) removes messages the queue
// may still hold: they go to lateGone too, or the queue would deliver them again, and with an
// empty body once the log is compacted past them (they no longer pin it). The queue's own
// removal entries carry its marker (self; removeEntry), since those refs have left the queue
// already, and the queue is spared a pass over its ready messages per acknowledgement.

// Apply returns, for an enqueue entry, the reference of its first message (the others follow
// slot by slot: packRef(index, slot)), or an error.
func (l *queueLog) Apply(index uint64, data []byte) any {
	l.applied = index
	if len(data) == 0 {
		return errCorruptEntry
	}
	switch data[0] {
	case entryEnqueue, entryEnqueueBatch:
		if len(data) < 17 {
			return errCorruptEntry
		}
		if index >= 1<<(64-refSlotBits) {
			return fmt.Errorf("%w: log index %d past what a reference holds", errCorruptEntry, index)
		}
		token := binary.BigEndian.Uint64(data[1:9])
		at := int64(binary.BigEndian.Uint64(data[9:17]))
		l.mu.Lock()
		p, ok := l.pending[token]
		if ok {
			delete(l.pending, token)
			n := len(l.live)
			if p.one != nil {
				l.live = append(l.live, recordOf(packRef(index, 0), at, p.one))
			}
			for slot, m := range p.many {
				l.live = append(l.live, recordOf(packRef(index, slot), at, m))
			}
			l.countEnqueued(len(l.live) - n)
			l.mu.Unlock()
			return packRef(index, 0)
		}
		l.mu.Unlock()
		// Replay after a restart, an entry another node proposed, or one committed after the
		// queue started. A corrupt batch adds none of its messages.
		recs := l.decoded[:0]
		err := decodeEnqueued(data, func(slot int, at int64, m *message.Message) bool {
			recs = append(recs, recordOf(packRef(index, slot), at, m))
			return true
		})
		l.decoded = recs[:0]
		if err != nil {
			l.countEnqueued(0)
			return err
		}
		l.mu.Lock()
		l.live = append(l.live, recs...)
		l.countEnqueued(len(recs))
		wake := l.handOverLocked(recs)
		l.mu.Unlock()
		if wake != nil {
			wake()
		}
		return packRef(index, 0)
	case entryRemove, entryRemoveLegacy:
		rest := data[1:]
		own := false
		if data[0] == entryRemove {
			if m, n := binary.Uvarint(rest); n > 0 && m&removeMarkerBit != 0 {
				own, rest = m == l.self, rest[n:]
			}
		}
		l.mu.Lock()
		var wake func()
		for len(rest) > 0 {
			r, n := binary.Uvarint(rest)
			if n <= 0 {
				l.mu.Unlock()
				return errCorruptEntry
			}
			rest = rest[n:]
			if data[0] == entryRemoveLegacy {
				var ok bool
				if r, ok = legacyRef(r); !ok {
					continue // never live
				}
			}
			if l.removeLocked(r) && !own && l.started {
				// The running queue still has it (recovered, or handed over): see
				// "Entries committed after the queue started".
				if l.lateGone == nil {
					l.lateGone = map[uint64]bool{}
				}
				l.lateGone[r] = true
				wake = l.wake
			}
		}
		l.compactLiveLocked()
		l.mu.Unlock()
		if wake != nil {
			wake()
		}
		return nil
	case entryState:
		key, val, del, err := decodeStateEntry(data)
		if err != nil {
			return err
		}
		if key == refStatesKey && !del {
			return l.applyRefStates(val)
		}
		l.mu.Lock()
		if del {
			delete(l.state, key)
		} else {
			l.state[key] = val
		}
		l.mu.Unlock()
		return nil
	}
	return errCorruptEntry
}

// countEnqueued counts an applied enqueue entry of n messages, for SnapshotInterval.
func (l *queueLog) countEnqueued(n int) {
	l.enqEntries, l.enqMessages = l.enqEntries+1, l.enqMessages+uint64(n)
}

// handOverLocked hands recs to the running queue, if it started, and returns the function
// that wakes it (to call once mu is released). mu held.
func (l *queueLog) handOverLocked(recs []liveRecord) func() {
	if !l.started || len(recs) == 0 {
		return nil
	}
	l.late = append(l.late, recs...)
	return l.wake
}

// takeLate returns, and forgets, what was handed over to the running queue since it last
// asked: messages to add, and references of messages to drop.
// The messages to add are taken only by a queue whose node leads its group (withLate): see
// "Entries committed after the queue started"; waiting says some are left for later.
func (l *queueLog) takeLate(withLate bool) (late []liveRecord, gone map[uint64]bool, waiting bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	gone, l.lateGone = l.lateGone, nil
	if !withLate {
		return nil, gone, len(l.late) > 0
	}
	late, l.late = l.late, nil
	return late, gone, false
}

// applyRefStates applies a SetRefStates entry: each record of a live message is set (an
// empty value deletes it); one of a message that is gone already is dropped, so no record
// outlives its message.
func (l *queueLog) applyRefStates(val []byte) error {
	recs, err := decodeRefStates(val)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range recs {
		k := refStateKey(r.Ref)
		_, had := l.state[k]
		switch {
		case len(r.Val) == 0 || !l.isLive(r.Ref):
			if had {
				delete(l.state, k)
				l.refStates--
			}
		default:
			l.state[k] = r.Val
			if !had {
				l.refStates++
			}
		}
	}
	return nil
}

// isLive reports whether the message ref is in the queue. mu held.
func (l *queueLog) isLive(ref uint64) bool {
	i, ok := slices.BinarySearchFunc(l.live, ref, func(r liveRecord, ref uint64) int {
		return cmpUint(r.ref, ref)
	})
	return ok && !l.live[i].gone
}

// stateCopy returns a copy of the state records, without the per-message ones (refStates).
func (l *queueLog) stateCopy() map[string][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]byte, len(l.state)-l.refStates)
	for k, v := range l.state {
		if !isRefStateKey(k) {
			out[k] = v
		}
	}
	return out
}

// refStatesCopy returns the per-message records by ref.
func (l *queueLog) refStatesCopy() map[uint64][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[uint64][]byte, l.refStates)
	if l.refStates == 0 {
		return out
	}
	for k, v := range l.state {
		if ref, ok := parseRefStateKey(k); ok {
			out[ref] = v
		}
	}
	return out
}

// removeLocked marks the record of ref gone and reports whether it was live; an unknown ref
// is ignored (removed twice after a crash replayed a removal, or never live). mu held.
func (l *queueLog) removeLocked(ref uint64) bool {
	// Messages mostly leave in the order they came (acknowledged oldest first, by several
	// consumers in turn): the record after the last one removed, then the few around it, are
	// looked at before the whole slice (a binary search per removal was 1-3 % of the broker's
	// CPU in the persistent 1p/1c benchmark). Any hint is safe: what it finds is checked.
	i, ok := l.rmHint, false
	if i < len(l.live) && l.live[i].ref == ref {
		ok = true
	} else {
		lo, hi := max(0, min(i, len(l.live))-rmWindow), min(len(l.live), i+rmWindow)
		if lo < hi && l.live[lo].ref <= ref && ref <= l.live[hi-1].ref {
			i, ok = searchLive(l.live[lo:hi], ref)
			i += lo
		} else {
			i, ok = searchLive(l.live, ref)
		}
	}
	if !ok || l.live[i].gone {
		return false
	}
	l.rmHint = i + 1
	l.live[i].gone = true
	l.removed++
	if l.refStates > 0 {
		// Its per-message record goes with it (SetRefStates).
		k := refStateKey(ref)
		if _, ok := l.state[k]; ok {
			delete(l.state, k)
			l.refStates--
		}
	}
	if ref < l.floor {
		delete(l.inline, ref)
	}
	return true
}

// rmWindow is how far around its hint removeLocked looks before searching every record.
const rmWindow = 32

func searchLive(live []liveRecord, ref uint64) (int, bool) {
	return slices.BinarySearchFunc(live, ref, func(r liveRecord, ref uint64) int { return cmpUint(r.ref, ref) })
}

// compactLiveLocked drops the tombstones once they are half the slice. mu held.
func (l *queueLog) compactLiveLocked() {
	if l.removed < 64 || l.removed*2 < len(l.live) {
		return
	}
	l.live = slices.DeleteFunc(l.live, func(r liveRecord) bool { return r.gone })
	l.removed = 0
	if cap(l.live) > 4*len(l.live)+64 {
		l.live = slices.Clip(slices.Clone(l.live))
	}
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Snapshot encodes the live records, with the bodies of those below the new floor (see
// encodeSnapshot), and moves the floor.
func (l *queueLog) Snapshot() ([]byte, error) {
	l.mu.Lock()
	l.compactLiveLocked()
	l.mu.Unlock()
	live := l.live
	if l.removed > 0 {
		live = slices.DeleteFunc(slices.Clone(l.live), func(r liveRecord) bool { return r.gone })
	}
	floor, err := l.chooseFloor(live)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	buf, err := encodeSnapshot(floor, live, l.state, func(ref uint64) (*message.Message, error) {
		if m := l.inline[ref]; m != nil {
			return m, nil
		}
		return nil, fmt.Errorf("inline message %d: %w", ref, errCorruptEntry)
	})
	if err != nil {
		return nil, err
	}
	l.floor, l.keepFrom = floor, refIndex(floor)
	return buf, nil
}

// TransferSnapshot turns a snapshot this node took at index into one that stands on its own,
// for a node that installs it with no log below index: every body the snapshot left in the log
// is read from this node's log (which keeps them, from the snapshot's floor on) and copied in.
// The node installing it holds those bodies in memory until they are consumed.
func (l *queueLog) TransferSnapshot(data []byte, index uint64) ([]byte, error) {
	snap, err := decodeSnapshot(data)
	if err != nil {
		return nil, err
	}
	return encodeSnapshot(packRef(index+1, 0), snap.live, snap.state, func(ref uint64) (*message.Message, error) {
		if m := snap.inline[ref]; m != nil {
			return m, nil
		}
		return l.readBody(ref)
	})
}

// encodeSnapshot writes a queue log snapshot: the floor, then the live records, each with its
// message if it lies below the floor (inline), which body gives:
//
//	"PQL" 3, floor (a ref), n, then per record: ref delta, at (varint), ttl (varint), size, prio,
//	inline (0/1), and if inline the message (message.AppendBinary); then the number of state
//	records and each one's key and value, each a uvarint length and the bytes, by key order.
func encodeSnapshot(floor uint64, live []liveRecord, state map[string][]byte, body func(ref uint64) (*message.Message, error)) ([]byte, error) {
	buf := make([]byte, 0, len(queueLogMagic)+20+len(live)*12)
	buf = append(buf, queueLogMagic...)
	buf = binary.AppendUvarint(buf, floor)
	buf = binary.AppendUvarint(buf, uint64(len(live)))
	var prev uint64
	for _, r := range live {
		buf = binary.AppendUvarint(buf, r.ref-prev)
		prev = r.ref
		buf = binary.AppendVarint(buf, r.at)
		buf = binary.AppendVarint(buf, r.ttl)
		buf = binary.AppendUvarint(buf, uint64(r.size))
		buf = append(buf, r.prio)
		if r.ref >= floor {
			buf = append(buf, 0)
			continue
		}
		buf = append(buf, 1)
		m, err := body(r.ref)
		if err != nil {
			return nil, fmt.Errorf("snapshot message %d: %w", r.ref, err)
		}
		if buf, err = message.AppendBinary(buf, m); err != nil {
			return nil, fmt.Errorf("snapshot message %d: %w", r.ref, err)
		}
	}
	keys := make([]string, 0, len(state))
	for k := range state {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	buf = binary.AppendUvarint(buf, uint64(len(keys)))
	for _, k := range keys {
		buf = binary.AppendUvarint(buf, uint64(len(k)))
		buf = append(buf, k...)
		buf = binary.AppendUvarint(buf, uint64(len(state[k])))
		buf = append(buf, state[k]...)
	}
	return buf, nil
}

// chooseFloor picks the ref below which the log may go (the log is kept from the entry of that
// ref on). Below the current floor every live message is inline already. Above it, making the
// first j live messages inline moves the floor to the (j+1)th, at the cost of copying j bodies
// into every snapshot from now on; it is done for the j that frees the most log, counting a
// copied body as four entries, within the inline budget. The bodies of newly inline messages are read from the log into l.inline.
func (l *queueLog) chooseFloor(live []liveRecord) (uint64, error) {
	first := 0
	for first < len(live) && live[first].ref < l.floor {
		first++
	}
	floorAt := func(j int) uint64 {
		if first+j < len(live) {
			return live[first+j].ref
		}
		return packRef(l.applied+1, 0)
	}
	// Scores count log entries: making inline the messages of a batch entry below the floor's
	// own entry frees nothing.
	best, bestScore := 0, int64(refIndex(floorAt(0)))
	var size int64
	for j := 1; j <= inlineMaxMessages && first+j <= len(live); j++ {
		if size += int64(live[first+j-1].size); size > inlineMaxBytes {
			break
		}
		if s := int64(refIndex(floorAt(j))) - 4*int64(j); s > bestScore {
			best, bestScore = j, s
		}
	}
	for _, r := range live[first : first+best] {
		m, err := l.readBody(r.ref)
		if err != nil {
			return 0, err
		}
		l.mu.Lock()
		l.inline[r.ref] = m
		l.mu.Unlock()
	}
	return max(floorAt(best), l.floor), nil
}

// readBody reads the message with reference ref from the log. A message of a batch entry gets
// a body of its own, so that keeping it (inline) does not keep the whole entry in memory.
func (l *queueLog) readBody(ref uint64) (*message.Message, error) {
	var m *message.Message
	var derr error
	idx, slot := refIndex(ref), refSlot(ref)
	if _, err := l.reader.Read(idx, idx+1, 1, func(_ uint64, data []byte) {
		derr = decodeEnqueued(data, func(s int, _ int64, dm *message.Message) bool {
			if s < slot {
				return true
			}
			if s == slot {
				m = dm
				if data[0] == entryEnqueueBatch {
					m.Body = bytes.Clone(m.Body)
				}
			}
			return false
		})
	}); err != nil {
		return nil, fmt.Errorf("read message %d/%d: %w", idx, slot, err)
	}
	if derr != nil {
		return nil, fmt.Errorf("read message %d/%d: %w", idx, slot, derr)
	}
	if m == nil {
		return nil, fmt.Errorf("read message %d/%d: %w", idx, slot, errCorruptEntry)
	}
	return m, nil
}

// errOldSnapshot: a snapshot of the format before stubs; the data directory's FORMAT version
// keeps such a directory from being opened at all.
var errOldSnapshot = errors.New("queue log snapshot of an unknown format")

// Restore replaces the state with a snapshot's. While the queue runs (a snapshot its group's
// leader sent), the difference goes to the queue: see "Entries committed after the queue
// started".
func (l *queueLog) Restore(data []byte) error {
	snap, err := decodeSnapshot(data)
	if err != nil {
		return err
	}
	l.mu.Lock()
	var wake func()
	if l.started {
		wake = l.restoreRunningLocked(snap)
	}
	l.inline = snap.inline
	l.state = snap.state
	l.refStates = 0
	for k := range l.state {
		if isRefStateKey(k) {
			l.refStates++
		}
	}
	l.live, l.removed, l.floor, l.keepFrom = snap.live, 0, snap.floor, refIndex(snap.floor)
	l.mu.Unlock()
	if wake != nil {
		wake()
	}
	return nil
}

// restoreRunningLocked hands the running queue what snap changes: the records of entries past
// the last one applied, which the queue has never seen, and the references of the messages it
// has (live now, applied) that snap no longer holds. The last applied index becomes the
// highest that snap shows: its floor (a snapshot sent to a follower has its floor just past
// its index, see TransferSnapshot) or its last record; no record at or below it can come
// again from a later snapshot without having been in this one. mu held.
func (l *queueLog) restoreRunningLocked(snap queueLogSnapshot) func() {
	var late []liveRecord
	in := make(map[uint64]bool, len(snap.live))
	top := l.applied
	for _, r := range snap.live {
		in[r.ref] = true
		if refIndex(r.ref) > l.applied {
			late = append(late, r)
		}
		top = max(top, refIndex(r.ref))
	}
	if f := refIndex(snap.floor); f > 0 {
		top = max(top, f-1)
	}
	for _, r := range l.live {
		if !r.gone && !in[r.ref] && refIndex(r.ref) <= l.applied {
			if l.lateGone == nil {
				l.lateGone = map[uint64]bool{}
			}
			l.lateGone[r.ref] = true
		}
	}
	l.applied = top
	wake := l.handOverLocked(late)
	if len(l.lateGone) > 0 {
		wake = l.wake
	}
	return wake
}

// queueLogSnapshot is a decoded snapshot.
type queueLogSnapshot struct {
	floor  uint64
	live   []liveRecord
	inline map[uint64]*message.Message
	state  map[string][]byte
}

// decodeSnapshot reads what encodeSnapshot wrote.
func decodeSnapshot(data []byte) (queueLogSnapshot, error) {
	var snap queueLogSnapshot
	v1 := bytes.HasPrefix(data, queueLogMagicV1)
	legacy := v1 || bytes.HasPrefix(data, queueLogMagicV2) // refs are log indexes
	if !legacy && !bytes.HasPrefix(data, queueLogMagic) {
		return snap, errOldSnapshot
	}
	data = data[len(queueLogMagic):]
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(data)
		if n <= 0 {
			return 0, false
		}
		data = data[n:]
		return v, true
	}
	nextInt := func() (int64, bool) {
		v, n := binary.Varint(data)
		if n <= 0 {
			return 0, false
		}
		data = data[n:]
		return v, true
	}
	floor, ok1 := next()
	count, ok2 := next()
	if !ok1 || !ok2 || count > uint64(len(data)) {
		return snap, errCorruptEntry
	}
	if legacy {
		if floor, ok1 = legacyRef(floor); !ok1 {
			return snap, errCorruptEntry
		}
	}
	live := make([]liveRecord, 0, count)
	inline := map[uint64]*message.Message{}
	var ref uint64
	for range count {
		d, ok1 := next()
		at, ok2 := nextInt()
		ttl, ok3 := nextInt()
		size, ok4 := next()
		if !ok1 || !ok2 || !ok3 || !ok4 || len(data) < 2 || size > 1<<32-1 || (d == 0 && len(live) > 0) {
			return snap, errCorruptEntry
		}
		ref += d
		rec := ref
		if legacy {
			if rec, ok1 = legacyRef(ref); !ok1 || ref < d {
				return snap, errCorruptEntry
			}
		}
		r := liveRecord{ref: rec, at: at, ttl: ttl, size: uint32(size), prio: data[0]}
		isInline := data[1]
		data = data[2:]
		switch {
		case isInline == 0 && rec < floor:
			return snap, fmt.Errorf("%w: message %d below the floor %d without its body", errCorruptEntry, rec, floor)
		case isInline == 0:
		case isInline == 1:
			m, rest, err := message.DecodeBinary(data)
			if err != nil {
				return snap, fmt.Errorf("%w: %v", errCorruptEntry, err)
			}
			inline[rec], data = m, rest
		default:
			return snap, errCorruptEntry
		}
		live = append(live, r)
	}
	state := map[string][]byte{}
	if !v1 {
		n, ok := next()
		if !ok || n > uint64(len(data)) {
			return snap, errCorruptEntry
		}
		bytesOf := func() ([]byte, bool) {
			l, ok := next()
			if !ok || l > uint64(len(data)) {
				return nil, false
			}
			b := bytes.Clone(data[:l])
			data = data[l:]
			return b, true
		}
		for range n {
			k, ok1 := bytesOf()
			v, ok2 := bytesOf()
			if !ok1 || !ok2 {
				return snap, errCorruptEntry
			}
			if v == nil {
				v = []byte{}
			}
			state[string(k)] = v
		}
	}
	if len(data) != 0 {
		return snap, errCorruptEntry
	}
	return queueLogSnapshot{floor: floor, live: live, inline: inline, state: state}, nil
}

// recover puts the live messages back into a queue's state machine, in log order: inline ones
// with their bodies, the rest as stubs. Called before the queue proposes anything. From then
// on the messages of entries the queue did not propose are handed to it (takeLate), and wake
// is called when there are some to take.
func (l *queueLog) recover(sm *queue.Queue, wake func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.started, l.wake = true, wake
	for i := range l.live {
		r := &l.live[i]
		if r.gone {
			continue
		}
		if m := l.inline[r.ref]; m != nil {
			sm.Recover(r.at, m, r.ref)
		} else {
			sm.RecoverStub(r.at, r.stub(), r.ref)
		}
	}
}

// inlineBody is the body of a live message the log no longer holds, or nil.
func (l *queueLog) inlineBody(ref uint64) *message.Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inline[ref]
}

// Reading a deep queue's bodies back: a consumer catching up on a backlog reads its log a run
// of entries at a time, and keeps what it read ahead until delivered.
const (
	readAheadEntries = 256
	readAheadBytes   = 1 << 20
	bodyCacheMax     = 1024
)

// loadBody returns the message of the stub with reference ref: from the bodies read ahead, from
// the snapshot's inline copy if the log was compacted past it, or from the log. It runs on the
// queue's goroutine.
func (q *Queue) loadBody(ref uint64) *message.Message {
	if m, ok := q.bodies[ref]; ok {
		delete(q.bodies, ref)
		return m
	}
	if m := q.log.inlineBody(ref); m != nil {
		return m
	}
	if q.bodies == nil || len(q.bodies) >= bodyCacheMax {
		q.bodies = make(map[uint64]*message.Message, readAheadEntries)
	}
	var found *message.Message
	var derr error
	idx := refIndex(ref)
	_, err := q.log.reader.Read(idx, idx+readAheadEntries, readAheadBytes, func(i uint64, data []byte) {
		if !isEnqueue(data) {
			return
		}
		err := decodeEnqueued(data, func(slot int, _ int64, m *message.Message) bool {
			switch r := packRef(i, slot); {
			case r == ref:
				found = m
			case r > ref && len(q.bodies) < bodyCacheMax:
				// Below ref in its own entry: delivered already, or acked.
				q.bodies[r] = m
			}
			return true
		})
		if i == idx {
			derr = err
		}
	})
	if found != nil {
		return found
	}
	if m := q.log.inlineBody(ref); m != nil {
		return m // made inline and compacted away while we read
	}
	if err == nil {
		err = derr
	}
	// The log lost a committed entry: storage has failed or been tampered with. The delivery
	// goes out empty rather than stalling the queue behind it.
	q.v.b.log.Error("message body missing from the queue's log",
		zap.String("queue", q.def.Name), zap.String("vhost", q.v.name), zap.Uint64("ref", ref), zap.Error(err))
	return &message.Message{}
}
