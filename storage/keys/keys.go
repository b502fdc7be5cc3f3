package keys

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Table is the one-byte prefix that says which kind of record a key names.
type Table byte

// The tables. Their values are part of the on-disk format: never renumber.
const (
	TableLogEntry             Table = 0x01
	TableHardState            Table = 0x02
	TableSnapshotMeta         Table = 0x03
	TableApplied              Table = 0x04
	TableStateMachineSnapshot Table = 0x05
	TableTruncated            Table = 0x06
	// TableNode holds records about the node rather than a raft group (the
	// cluster membership); the "group" of its keys is the record's number.
	TableNode Table = 0x07
)

// NodeMembers is the TableNode record holding the cluster membership as this
// node last applied it (cluster/membership.go).
const NodeMembers uint64 = 1

// Key lengths: a prefix byte and one or two uint64s.
const (
	GroupKeyLen = 1 + 8
	LogKeyLen   = 1 + 8 + 8
)

// ErrMalformed is returned by the Parse functions for a key that is not of the
// expected table or length.
var ErrMalformed = errors.New("keys: malformed key")

func (t Table) String() string {
	switch t {
	case TableLogEntry:
		return "log"
	case TableHardState:
		return "hardstate"
	case TableSnapshotMeta:
		return "snapmeta"
	case TableApplied:
		return "applied"
	case TableStateMachineSnapshot:
		return "smsnap"
	case TableTruncated:
		return "truncated"
	case TableNode:
		return "node"
	}
	return fmt.Sprintf("table(0x%02x)", byte(t))
}

// AppendLogEntry appends the key of group's log entry at index to dst and
// returns the extended slice. The append form lets the hot path (one key per
// appended entry) reuse one buffer instead of allocating per entry.
func AppendLogEntry(dst []byte, group, index uint64) []byte {
	dst = append(dst, byte(TableLogEntry))
	dst = binary.BigEndian.AppendUint64(dst, group)
	return binary.BigEndian.AppendUint64(dst, index)
}

// LogEntry is the key of group's log entry at index.
func LogEntry(group, index uint64) []byte {
	return AppendLogEntry(make([]byte, 0, LogKeyLen), group, index)
}

// LogRange is the half-open key span [LogEntry(group, lo), LogEntry(group, hi))
// covering the entries with lo <= index < hi.
func LogRange(group, lo, hi uint64) (start, end []byte) {
	return LogEntry(group, lo), LogEntry(group, hi)
}

// LogPrefixRange is the half-open key span covering every log entry of group,
// whatever its index (index math.MaxUint64 included): it ends at the first
// key of the next group, or at the first key after the log table for the last
// group.
func LogPrefixRange(group uint64) (start, end []byte) {
	start = AppendLogEntry(make([]byte, 0, LogKeyLen), group, 0)[:GroupKeyLen]
	if group == ^uint64(0) {
		return start, []byte{byte(TableLogEntry) + 1}
	}
	end = appendGroupKey(make([]byte, 0, GroupKeyLen), TableLogEntry, group+1)
	return start, end
}

// TablePrefixRange is the half-open key span covering every key of table t.
func TablePrefixRange(t Table) (start, end []byte) {
	return []byte{byte(t)}, []byte{byte(t) + 1}
}

func appendGroupKey(dst []byte, t Table, group uint64) []byte {
	dst = append(dst, byte(t))
	return binary.BigEndian.AppendUint64(dst, group)
}

func groupKey(t Table, group uint64) []byte {
	return appendGroupKey(make([]byte, 0, GroupKeyLen), t, group)
}

// HardState is the key of group's raft hard state (term, vote, commit).
func HardState(group uint64) []byte { return groupKey(TableHardState, group) }

// SnapshotMeta is the key of group's raft snapshot metadata (index, term,
// conf state) for the latest state-machine snapshot.
func SnapshotMeta(group uint64) []byte { return groupKey(TableSnapshotMeta, group) }

// Applied is the key of group's applied index.
func Applied(group uint64) []byte { return groupKey(TableApplied, group) }

// StateMachineSnapshot is the key of group's state-machine snapshot bytes.
func StateMachineSnapshot(group uint64) []byte {
	return groupKey(TableStateMachineSnapshot, group)
}

// Truncated is the key of group's log truncation state: the index and term of
// the last entry removed from the front of the log, which raft still asks
// about (Storage.Term(FirstIndex()-1)).
func Truncated(group uint64) []byte { return groupKey(TableTruncated, group) }

// Node is the key of node record id (NodeMembers); not a raft group's.
func Node(id uint64) []byte { return groupKey(TableNode, id) }

// GroupKeys lists every single (non-log) key group owns; with LogPrefixRange
// it is everything to delete when a group is destroyed.
func GroupKeys(group uint64) [][]byte {
	return [][]byte{
		HardState(group),
		SnapshotMeta(group),
		Applied(group),
		StateMachineSnapshot(group),
		Truncated(group),
	}
}

// ParseLogEntry returns the group and index of a log entry key.
func ParseLogEntry(k []byte) (group, index uint64, err error) {
	if len(k) != LogKeyLen || Table(k[0]) != TableLogEntry {
		return 0, 0, fmt.Errorf("%w: %x is not a log entry key", ErrMalformed, k)
	}
	return binary.BigEndian.Uint64(k[1:9]), binary.BigEndian.Uint64(k[9:17]), nil
}

// ParseGroupKey returns the table and group of a per-group (non-log) key.
func ParseGroupKey(k []byte) (Table, uint64, error) {
	if len(k) != GroupKeyLen {
		return 0, 0, fmt.Errorf("%w: %x is not a group key", ErrMalformed, k)
	}
	switch t := Table(k[0]); t {
	case TableHardState, TableSnapshotMeta, TableApplied, TableStateMachineSnapshot, TableTruncated, TableNode:
		return t, binary.BigEndian.Uint64(k[1:]), nil
	}
	return 0, 0, fmt.Errorf("%w: %x has unknown table 0x%02x", ErrMalformed, k, k[0])
}

// Parse returns the table, group and (for log entries) index of any key
// built by this package, for debugging and tests.
func Parse(k []byte) (t Table, group, index uint64, err error) {
	if len(k) > 0 && Table(k[0]) == TableLogEntry {
		group, index, err = ParseLogEntry(k)
		return TableLogEntry, group, index, err
	}
	t, group, err = ParseGroupKey(k)
	return t, group, 0, err
}

// String renders any key for debug output: "log/7/42", "hardstate/7".
func String(k []byte) string {
	t, g, i, err := Parse(k)
	if err != nil {
		return fmt.Sprintf("invalid(%x)", k)
	}
	if t == TableLogEntry {
		return fmt.Sprintf("%s/%d/%d", t, g, i)
	}
	return fmt.Sprintf("%s/%d", t, g)
}
