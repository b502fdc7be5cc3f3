package storage

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/parleymq/parley/storage/keys"
)

// Batch collects writes for any number of raft groups and commits them
// atomically; with sync, one fsync covers all of them (group commit: one
// Ready cycle of every group is one Batch). A Batch is not safe for
// concurrent use.
type Batch struct {
	e       *Engine
	b       *pebble.Batch
	entries int
	// touched records, per RaftLog written into, the last log index this
	// batch wrote (0 if it wrote no entries), so that a successful commit can
	// tell the log which entries are now in Pebble.
	touched   map[*RaftLog]uint64
	done      bool
	committed bool
	// key is scratch for encoding keys; Pebble copies what it is given.
	key []byte
}

// NewBatch starts a batch. On a closed engine it returns a batch that
// refuses writes and fails to commit with ErrClosed.
func (e *Engine) NewBatch() *Batch {
	if e.isClosed.Load() {
		return &Batch{e: e, done: true}
	}
	return &Batch{e: e, b: e.db.NewBatch()}
}

func (b *Batch) touch(l *RaftLog, last uint64) {
	if b.touched == nil {
		b.touched = make(map[*RaftLog]uint64)
	}
	if last == 0 {
		last = b.touched[l]
	}
	b.touched[l] = last
}

// setEntry writes a raft log entry, marshalled straight into the batch's own buffer: an
// entry carries a message body, and encoding it into scratch first would copy every body once
// more on its way to the log. It returns the encoded size.
func (b *Batch) setEntry(group uint64, ent *raftpb.Entry) (int, error) {
	b.key = keys.AppendLogEntry(b.key[:0], group, ent.GetIndex())
	mo := proto.MarshalOptions{UseCachedSize: true}
	size := mo.Size(ent)
	op := b.b.SetDeferred(len(b.key), size)
	copy(op.Key, b.key)
	out, err := mo.MarshalAppend(op.Value[:0:size], ent)
	if err != nil {
		return 0, fmt.Errorf("encode: %w", err)
	}
	if len(out) != size {
		return 0, fmt.Errorf("encode: %d bytes, sized at %d", len(out), size)
	}
	if size > 0 && &out[0] != &op.Value[0] {
		copy(op.Value, out) // not expected with the capacity capped at size
	}
	if err := op.Finish(); err != nil {
		return 0, err
	}
	return size, nil
}

// Len is the number of Pebble operations in the batch.
func (b *Batch) Len() int {
	if b.b == nil {
		return 0
	}
	return int(b.b.Count())
}

// Entries is the number of raft log entries appended into the batch.
func (b *Batch) Entries() int { return b.entries }

// Commit writes the batch; with sync it returns only once the batch is on
// stable storage. A batch commits at most once. If Commit fails, every
// RaftLog the batch wrote to fails from then on with ErrLogFailed.
func (b *Batch) Commit(sync bool) error {
	if b.b == nil {
		return ErrClosed
	}
	if b.done {
		return errors.New("storage: batch already committed or closed")
	}
	b.done = true
	wo := pebble.NoSync
	if sync {
		wo = pebble.Sync
	}
	n := b.b.Count()
	size := len(b.b.Repr())
	if err := b.b.Commit(wo); err != nil {
		err = fmt.Errorf("storage: commit batch of %d operations: %w", n, err)
		if errors.Is(err, syscall.ENOSPC) {
			b.e.setDiskLow(true, "commit: no space left on device")
		}
		b.failLogs(err)
		return err
	}
	b.committed = true
	e := b.e
	e.batches.Add(1)
	if sync {
		e.syncs.Add(1)
	}
	e.ops.Add(uint64(n))
	e.entries.Add(uint64(b.entries))
	e.bytes.Add(uint64(size))
	for l, last := range b.touched {
		l.committed(b, last)
	}
	return nil
}

func (b *Batch) failLogs(err error) {
	for l := range b.touched {
		l.fail(err)
	}
}

// Close releases the batch. Closing a batch that wrote to a RaftLog without
// committing it leaves that log's in-memory view ahead of the disk, so those
// logs fail from then on with ErrLogFailed.
func (b *Batch) Close() {
	if !b.done {
		b.done = true
		if len(b.touched) > 0 {
			b.failLogs(errors.New("storage: batch closed without commit"))
		}
	}
	if b.b != nil {
		_ = b.b.Close()
		b.b = nil
	}
}
