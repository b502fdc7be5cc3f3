package broker

// The entries of a durable queue's log (kinds in durable.go) and message references.
//
// A queue takes every command waiting in its inbox as one batch (DESIGN.md §2), and the
// persistent publishes of a batch go into the log as one entry (entryEnqueueBatch) rather than
// one entry each: raft's cost is per entry (the entry, etcd raft's copy of it, a Pebble key,
// an apply), so a publisher with a confirm window of hundreds pays it once per batch. More:
// while that entry still waits in its group's queue (the host's loop is busy with the previous
// fsync), the next batches' publishes are appended to it (Queue.extendOpen,
// cluster.Group.Extend), so the publishes of one turn of the host's loop share an entry. Every
// batch entry is written with its count padded (appendCount) so that it can be raised in place;
// entryEnqueue entries of one message are still read, and still written when a batch cannot be
// encoded.
//
// A message's reference (queue.Queue's ref, the live records' key, what remove entries list)
// is therefore not a log index but packRef(index, slot): the index of the entry that carries
// the message in the high 48 bits, its slot in that entry in the low 16. Refs keep log order,
// so the live records stay sorted by ref, and a ref's entry is refIndex(ref). Logs written
// before refs were packed stay readable: an entryEnqueue entry's message has slot 0 (its ref
// is index<<16), and the old remove entries (entryRemoveLegacy) and snapshots (queueLogMagicV1
// and V2) hold plain indexes, which are shifted when read. The data directory's FORMAT says
// which builds may open a directory (storage.FormatVersion): one written with packed refs is
// refused by a build that would misread it.

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/cluster"
)

// refSlotBits is the width of a ref's slot. Log indexes then have 48 bits: at a million
// entries a second, about 9 years of one queue's log.
const refSlotBits = 16

// Bounds of one batch entry: its slots, and the bytes of messages it carries (entrySizeOf
// each). A larger batch is split: its entries then come from cluster.EntryBuffer's largest
// class (64 KiB), so they are recycled rather than allocated (with 1 KiB bodies, entries of
// 256 KiB cost 20% more bytes allocated per message than 64 KiB ones, for no fewer
// allocations), stay well under raft's MaxSizePerMsg, and reading one message back does not
// read much more.
const (
	maxBatchMessages = 1 << refSlotBits
	maxBatchBytes    = 64<<10 - cluster.EntryHeaderRoom - 17 - binary.MaxVarintLen64
)

// packRef is the reference of the message in slot slot of the entry at index.
func packRef(index uint64, slot int) uint64 { return index<<refSlotBits | uint64(slot) }

// refIndex is the log index of the entry that carries the message with reference ref.
func refIndex(ref uint64) uint64 { return ref >> refSlotBits }

// refSlot is the slot of the message with reference ref in its entry.
func refSlot(ref uint64) int { return int(ref & (1<<refSlotBits - 1)) }

// legacyRef turns a reference written before refs were packed (a log index) into a packed
// one; ok is false for an index a packed ref cannot hold (only a corrupt record has one).
func legacyRef(index uint64) (uint64, bool) {
	if index >= 1<<(64-refSlotBits) {
		return 0, false
	}
	return packRef(index, 0), true
}

// pendingEntry is what this node proposed in an enqueue entry, kept under its token for Apply.
type pendingEntry struct {
	one  *message.Message   // an entryEnqueue entry's
	many []*message.Message // an entryEnqueueBatch entry's
}

// enqueueEntry encodes m for the log and remembers it under a token, so that Apply on this node
// takes the message itself instead of decoding its own bytes again. The entry is a
// cluster.EntryBuffer (recycled once raft has copied it, and with room for the proposal
// header of cluster.Group.ProposeAsyncInPlace) sized for the message, so the body is copied
// once, here, on its way to the log (raft's own copy of each proposed entry aside).
func (l *queueLog) enqueueEntry(at int64, m *message.Message) ([]byte, uint64, error) {
	token := l.remember(pendingEntry{one: m})
	buf := cluster.EntryBuffer(len(l.prefix) + 17 + entrySizeOf(m))
	buf = append(buf, l.prefix...)
	buf = append(buf, entryEnqueue)
	buf = binary.BigEndian.AppendUint64(buf, token)
	buf = binary.BigEndian.AppendUint64(buf, uint64(at))
	buf, err := message.AppendBinary(buf, m)
	if err != nil {
		l.forget(token)
		return nil, 0, err
	}
	return buf, token, nil
}

// enqueueBatchEntry is enqueueEntry for several messages (at most maxBatchMessages), in one
// entry: their slots are their places in ms. The log owns ms from then on.
func (l *queueLog) enqueueBatchEntry(at int64, ms []*message.Message) ([]byte, uint64, error) {
	entry, token, _, err := l.openBatchEntry(at, ms, false)
	return entry, token, err
}

// openBatchEntry is enqueueBatchEntry for an entry that may be extended. The count is
// written in countLen bytes at countAt (an offset in the returned entry), so that messages
// appended while the entry waits to be taken (appendBatch) can raise it in place; with room,
// the entry comes from cluster.EntryBuffer's largest class, which leaves room to append.
func (l *queueLog) openBatchEntry(at int64, ms []*message.Message, room bool) (entry []byte, token uint64, countAt int, err error) {
	if len(ms) > maxBatchMessages {
		return nil, 0, 0, fmt.Errorf("enqueue batch of %d messages: more than %d", len(ms), maxBatchMessages)
	}
	size := len(l.prefix) + 17 + countLen
	for _, m := range ms {
		size += entrySizeOf(m)
	}
	token = l.remember(pendingEntry{many: ms})
	n := size
	if room {
		n = max(n, extendableEntryBytes)
	}
	buf := cluster.EntryBuffer(n)
	buf = append(buf, l.prefix...)
	buf = append(buf, entryEnqueueBatch)
	buf = binary.BigEndian.AppendUint64(buf, token)
	buf = binary.BigEndian.AppendUint64(buf, uint64(at))
	countAt = len(buf)
	buf = appendCount(buf, len(ms))
	for _, m := range ms {
		if buf, err = message.AppendBinary(buf, m); err != nil {
			l.forget(token)
			return nil, 0, 0, err
		}
	}
	return buf, token, countAt, nil
}

// extendableEntryBytes asks cluster.EntryBuffer for its largest class (64 KiB, recycled once
// raft has copied the entry) for a batch entry that may be extended.
const extendableEntryBytes = 64<<10 - cluster.EntryHeaderRoom

// A batch entry's message count is a uvarint written in countLen bytes, padded with
// continuation bytes when it needs fewer (5 is 0x85 0x80 0x00): encoding/binary's Uvarint,
// which every build reads entries with, takes it as the same number, so the log format is
// unchanged, and the count of an entry being extended is raised in place.
const countLen = 3 // 21 bits, enough for maxBatchMessages

func appendCount(b []byte, n int) []byte {
	return append(b, byte(n)|0x80, byte(n>>7)|0x80, byte(n>>14))
}

// putCount rewrites the count appendCount wrote at b[0:countLen].
func putCount(b []byte, n int) {
	b[0], b[1], b[2] = byte(n)|0x80, byte(n>>7)|0x80, byte(n>>14)
}

// appendBatch appends the messages of ps to the batch entry proposed under token, which now
// holds n messages and whose count is at data[countAt:]: it encodes them after the entry's
// last message, raises the count, and adds them to what Apply takes under the token. It runs
// inside cluster.Group.Extend, before the host can take the entry (lock order: the group's
// proposal queue, then l.mu). On an error data is returned as it came and nothing changes.
func (l *queueLog) appendBatch(data []byte, countAt int, token uint64, n int, ps []*pendingPublish) ([]byte, error) {
	start := len(data)
	for _, p := range ps {
		var err error
		if data, err = message.AppendBinary(data, p.m); err != nil {
			return data[:start], err
		}
	}
	putCount(data[countAt:], n+len(ps))
	l.mu.Lock()
	pe := l.pending[token]
	for _, p := range ps {
		pe.many = append(pe.many, p.m)
	}
	l.pending[token] = pe
	l.mu.Unlock()
	return data, nil
}

func (l *queueLog) remember(e pendingEntry) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextToken++
	l.pending[l.nextToken] = e
	return l.nextToken
}

// forget drops what this node proposed under token: the proposal failed (or was never made),
// so if its entry commits after all, Apply hands its messages to the running queue instead of
// leaving them to a callback that has already reported the failure.
func (l *queueLog) forget(token uint64) {
	l.mu.Lock()
	delete(l.pending, token)
	l.mu.Unlock()
}

// entrySizeOf is about the bytes of m's encoding: its body, exchange and routing key, and
// enqueueEntrySlack for the rest.
func entrySizeOf(m *message.Message) int {
	return len(m.Body) + len(m.Exchange) + len(m.RoutingKey) + enqueueEntrySlack
}

// enqueueEntrySlack is room for a message's encoding besides its body, exchange and routing
// key (lengths, flags, the common properties); a larger one (many headers) grows the buffer.
const enqueueEntrySlack = 128

// isEnqueue reports whether data is an enqueue entry (of one message or a batch).
func isEnqueue(data []byte) bool {
	return len(data) > 0 && (data[0] == entryEnqueue || data[0] == entryEnqueueBatch)
}

// decodeEnqueued reads an enqueue entry, of one message or a batch: fn gets the enqueue time
// and each message with its slot, in slot order, until it returns false. The messages' bodies
// alias data. An error says the entry is corrupt; fn may have seen some of its messages.
func decodeEnqueued(data []byte, fn func(slot int, at int64, m *message.Message) bool) error {
	if len(data) < 17 || !isEnqueue(data) {
		return errCorruptEntry
	}
	at := int64(binary.BigEndian.Uint64(data[9:17]))
	if data[0] == entryEnqueue {
		m, _, err := message.DecodeBinary(data[17:])
		if err != nil {
			return fmt.Errorf("%w: %v", errCorruptEntry, err)
		}
		fn(0, at, m)
		return nil
	}
	n, used := binary.Uvarint(data[17:])
	// Every message takes at least a byte: a count beyond what is left is corrupt.
	if used <= 0 || n == 0 || n > maxBatchMessages || n > uint64(len(data)) {
		return errCorruptEntry
	}
	rest := data[17+used:]
	for slot := range int(n) {
		m, r, err := message.DecodeBinary(rest)
		if err != nil {
			return fmt.Errorf("%w: slot %d: %v", errCorruptEntry, slot, err)
		}
		rest = r
		if !fn(slot, at, m) {
			return nil
		}
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d bytes after the batch's last message", errCorruptEntry, len(rest))
	}
	return nil
}

// removeEntry lists the refs of messages that left the queue for good. A non-zero marker
// (queueLog.self: its top bit set) goes first and says which queue instance proposed the
// entry (see "Entries committed after the queue started" in queuelog.go). As a ref it is one
// that is never live (its log index is past any a log reaches), so a build that does not know
// markers skips it as it skips any unknown ref.
func removeEntry(marker uint64, refs []uint64) []byte {
	buf := make([]byte, 1, 1+binary.MaxVarintLen64+len(refs)*6)
	buf[0] = entryRemove
	if marker != 0 {
		buf = binary.AppendUvarint(buf, marker)
	}
	for _, r := range refs {
		buf = binary.AppendUvarint(buf, r)
	}
	return buf
}

// removeMarkerBit is set in a remove entry's marker and in no ref a log reaches.
const removeMarkerBit = 1 << 63

// stateEntry encodes a state record change: val nil deletes key.
func stateEntry(key string, val []byte) []byte {
	buf := make([]byte, 0, 2+len(key)+len(val)+binary.MaxVarintLen64)
	buf = append(buf, entryState)
	buf = binary.AppendUvarint(buf, uint64(len(key)))
	buf = append(buf, key...)
	if val != nil {
		buf = append(buf, 1)
		buf = append(buf, val...)
	}
	return buf
}

func decodeStateEntry(data []byte) (key string, val []byte, del bool, err error) {
	n, used := binary.Uvarint(data[1:])
	if used <= 0 || n > uint64(len(data)-1-used) {
		return "", nil, false, errCorruptEntry
	}
	rest := data[1+used:]
	key, rest = string(rest[:n]), rest[n:]
	if len(rest) == 0 {
		return key, nil, true, nil
	}
	if rest[0] != 1 {
		return "", nil, false, errCorruptEntry
	}
	return key, bytes.Clone(rest[1:]), false, nil
}

// Per-message state records (Queue.SetRefStates) travel in an entryState entry whose key is
// refStatesKey and whose value lists (uvarint ref, uvarint length, value) triples, and are kept
// among the state records under refStateKey(ref). Both keys start with a zero byte, which no
// key an adapter passes to SetState does (Queue.SetState refuses one): a build from before
// these records reads such an entry, and a snapshot holding them, as an ordinary state record
// it has no use for, so the log format stays what it was.
const (
	refStatesKey      = "\x00refs"
	refStateKeyPrefix = "\x00r:"
)

func refStateKey(ref uint64) string {
	var b [len(refStateKeyPrefix) + 8]byte
	copy(b[:], refStateKeyPrefix)
	binary.BigEndian.PutUint64(b[len(refStateKeyPrefix):], ref)
	return string(b[:])
}

func isRefStateKey(k string) bool {
	return len(k) == len(refStateKeyPrefix)+8 && k[:len(refStateKeyPrefix)] == refStateKeyPrefix
}

func parseRefStateKey(k string) (uint64, bool) {
	if !isRefStateKey(k) {
		return 0, false
	}
	return binary.BigEndian.Uint64([]byte(k[len(refStateKeyPrefix):])), true
}

func encodeRefStates(recs []RefState) []byte {
	n := 0
	for _, r := range recs {
		n += 2*binary.MaxVarintLen64 + len(r.Val)
	}
	buf := make([]byte, 0, n)
	for _, r := range recs {
		buf = binary.AppendUvarint(buf, r.Ref)
		buf = binary.AppendUvarint(buf, uint64(len(r.Val)))
		buf = append(buf, r.Val...)
	}
	return buf
}

func decodeRefStates(b []byte) ([]RefState, error) {
	var out []RefState
	for len(b) > 0 {
		ref, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errCorruptEntry
		}
		b = b[n:]
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return nil, errCorruptEntry
		}
		b = b[n:]
		out = append(out, RefState{Ref: ref, Val: bytes.Clone(b[:l])})
		b = b[l:]
	}
	return out, nil
}
