package cluster

import (
	"context"
	"encoding/binary"
	"sync"
	"time"
)

// Future is the outcome of one proposal: the state machine's result once
// the entry is committed and applied, or why it never will be.
type Future struct {
	done   chan struct{}
	result any
	err    error
}

func newFuture() *Future { return &Future{done: make(chan struct{})} }

// complete is the proposal callback behind Propose; it runs once.
func (f *Future) complete(result any, err error) {
	f.result, f.err = result, err
	close(f.done)
}

// Done is closed when the future completes.
func (f *Future) Done() <-chan struct{} { return f.done }

// Result is the state machine's result, or why the proposal failed
// (ErrDropped, ErrStopped, ErrGroupRemoved, a storage error). Before Done is
// closed it returns ErrNotDone.
func (f *Future) Result() (any, error) {
	select {
	case <-f.done:
		return f.result, f.err
	default:
		return nil, ErrNotDone
	}
}

// Wait blocks until the future completes or ctx ends.
func (f *Future) Wait(ctx context.Context) (any, error) {
	select {
	case <-f.done:
		return f.result, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// A proposal's entry carries a header that lets the node that proposed it
// find its callback when the entry comes back committed: the proposer's node
// id (raft forwards a follower's proposal to the leader, so entries of many
// nodes interleave) and a sequence number. Matching by (term, index) would
// be cheaper but cannot follow a forwarded proposal. The sequence starts at
// the host's start time in nanoseconds, so entries proposed before a restart
// and committed after it do not match a new proposal (that would need more
// than one proposal per nanosecond, or a clock stepped back).
const (
	entryTagProposal = 0x01
	entryHeaderLen   = 1 + 8 + 8
)

// EntryHeaderRoom is how many bytes ProposeAsyncInPlace needs in front of the data for the
// proposal header.
const EntryHeaderRoom = entryHeaderLen

func encodeEntry(node, seq uint64, data []byte) []byte {
	b := make([]byte, entryHeaderLen, entryHeaderLen+len(data))
	return append(putEntryHeader(b, node, seq), data...)
}

// putEntryHeader writes the header into b[:entryHeaderLen] and returns b.
func putEntryHeader(b []byte, node, seq uint64) []byte {
	b[0] = entryTagProposal
	binary.BigEndian.PutUint64(b[1:], node)
	binary.BigEndian.PutUint64(b[9:], seq)
	return b
}

// decodeEntry splits an entry written by encodeEntry; ok is false for any
// other data.
func decodeEntry(b []byte) (node, seq uint64, data []byte, ok bool) {
	if len(b) < entryHeaderLen || b[0] != entryTagProposal {
		return 0, 0, nil, false
	}
	return binary.BigEndian.Uint64(b[1:]), binary.BigEndian.Uint64(b[9:]), b[entryHeaderLen:], true
}

// proposal is one entry waiting for its outcome.
type proposal struct {
	seq  uint64
	data []byte // header + payload, as it goes into the log
	cb   func(result any, err error)
	// inPlace: data was handed over by ProposeAsyncInPlace, so the host may recycle it once
	// raft has its own copy (see entrybuf.go).
	inPlace bool
	// lazy: proposed by ProposeLazy, it may wait for a cycle that writes anyway (lazy.go).
	lazy bool
	// waiting: in its group's queue, not taken by the host yet; under the queue's mu
	// (Group.AppendLazy).
	waiting bool
	// tick is the host's tick count when the proposal went to raft: a proposal a follower
	// forwarded to its leader expires (see expireForwarded) if it is never applied.
	tick uint64
}

// proposalQueue is a group's inbox of proposals not yet handed to raft,
// filled by any goroutine and drained by the loop.
type proposalQueue struct {
	mu     sync.Mutex
	props  []*proposal
	closed error // once set, new proposals fail with it
	// eager counts the queued proposals that are not lazy; lazySince is when the oldest lazy
	// one still queued was queued (zero when none is). See lazy.go.
	eager     int
	lazySince time.Time
}
