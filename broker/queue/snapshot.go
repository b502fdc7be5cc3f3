package queue

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/parleymq/parley/broker/message"
)

// Snapshot format, version 3. Everything is a uvarint unless said otherwise; strings and
// byte strings are a uvarint length and the bytes; signed numbers are zig-zag varints.
//
//	"PQS" 3
//	nextSeq nextID
//	consumers: n, then per consumer (registration order) id prefetch flags(1 noack, 2 exclusive) priority
//	groups:    n, then per group prio next members (n, ids in round-robin order)
//	ready:     n levels, then per level: level entries (n, entry...)
//	pending:   n, then per delivery: id consumer(0 = basic.get) entry
//	entry:     seq expiry(varint) prio flags(1 delivered, 2 stub) ref size, then unless a stub message
//	message:   message.AppendBinary
//
// Settled deliveries (tombstones) and the scratch state are not saved: a restored queue
// behaves exactly as the one snapshotted, not byte for byte the same in memory.

var snapshotMagic = []byte("PQS\x03")

// ErrSnapshot is the sentinel for a snapshot that cannot be written or read.
var ErrSnapshot = errors.New("queue snapshot")

// Snapshot encodes the queue's state: its messages, outstanding deliveries and consumers.
// It fails only for a header value of a type message.AppendBinary does not know.
func (q *Queue) Snapshot() ([]byte, error) {
	w := &snapWriter{b: append([]byte(nil), snapshotMagic...)}
	w.uint(q.nextSeq)
	w.uint(uint64(q.nextID))
	w.uint(uint64(len(q.consumers)))
	for _, c := range q.consumers {
		w.uint(uint64(c.spec.ID))
		w.uint(uint64(c.spec.Prefetch))
		var f uint64
		if c.spec.NoAck {
			f |= 1
		}
		if c.spec.Exclusive {
			f |= 2
		}
		w.uint(f)
		w.int(int64(c.spec.Priority))
	}
	w.uint(uint64(len(q.groups)))
	for _, g := range q.groups {
		w.int(int64(g.prio))
		w.uint(uint64(g.next))
		w.uint(uint64(len(g.members)))
		for _, c := range g.members {
			w.uint(uint64(c.spec.ID))
		}
	}
	levels := 0
	for l := range q.levels {
		if q.levels[l].len() > 0 {
			levels++
		}
	}
	w.uint(uint64(levels))
	for l := range q.levels {
		r := &q.levels[l]
		if r.len() == 0 {
			continue
		}
		w.uint(uint64(l))
		w.uint(uint64(r.len()))
		for i := 0; i < r.len(); i++ {
			w.entry(r.at(i))
		}
	}
	w.uint(uint64(q.unacked))
	for i := 0; i < q.pend.len(); i++ {
		p := q.pend.at(i)
		if p.done {
			continue
		}
		w.uint(uint64(p.id))
		var cid ConsumerID
		if p.c != nil {
			cid = p.c.spec.ID
		}
		w.uint(uint64(cid))
		w.entry(&p.e)
	}
	if w.err != nil {
		return nil, fmt.Errorf("%w: queue %q: %w", ErrSnapshot, q.cfg.Name, w.err)
	}
	return w.b, nil
}

// Restore rebuilds a queue from a Snapshot. cfg is the queue's configuration now (it is not
// part of the snapshot, since policies may have changed it); messages at priority levels
// above a lowered x-max-priority are clamped to the top level. The restored messages' bodies
// alias data (see message.DecodeBinary): the caller must not modify or reuse it.
func Restore(cfg Config, data []byte) (*Queue, error) {
	q := New(cfg)
	if err := q.restore(data); err != nil {
		return nil, fmt.Errorf("%w: queue %q: %w", ErrSnapshot, cfg.Name, err)
	}
	return q, nil
}

func (q *Queue) restore(data []byte) error {
	if len(data) < len(snapshotMagic) || string(data[:len(snapshotMagic)]) != string(snapshotMagic) {
		return errors.New("not a version 2 queue snapshot")
	}
	r := snapReader{message.NewBinaryReader(data[len(snapshotMagic):])}
	q.nextSeq = r.Uint()
	q.nextID = DeliveryID(r.Uint())
	byID := map[ConsumerID]*consumer{}
	for n := r.Count(); n > 0 && r.Err() == nil; n-- {
		spec := ConsumerSpec{ID: ConsumerID(r.Uint()), Prefetch: uint32(r.Uint())}
		f := r.Uint()
		spec.NoAck, spec.Exclusive = f&1 != 0, f&2 != 0
		spec.Priority = int32(r.Int())
		c := &consumer{spec: spec}
		if byID[spec.ID] != nil || spec.ID == 0 {
			return errors.New("duplicate consumer")
		}
		byID[spec.ID] = c
		q.consumers = append(q.consumers, c)
	}
	placed := 0
	for n := r.Count(); n > 0 && r.Err() == nil; n-- {
		g := group{prio: int32(r.Int()), next: int(r.Uint())}
		if len(q.groups) > 0 && q.groups[len(q.groups)-1].prio <= g.prio {
			return errors.New("consumer groups out of order")
		}
		for m := r.Count(); m > 0 && r.Err() == nil; m-- {
			c := byID[ConsumerID(r.Uint())]
			if c == nil || c.spec.Priority != g.prio || c.skip != 0 {
				return errors.New("bad consumer group member")
			}
			c.skip = 1 // placed; reset below
			g.members = append(g.members, c)
			placed++
		}
		if len(g.members) == 0 {
			return errors.New("empty consumer group")
		}
		if g.next >= len(g.members) {
			g.next = 0
		}
		q.groups = append(q.groups, g)
	}
	if r.Err() == nil && placed != len(q.consumers) {
		return errors.New("consumer missing from its group")
	}
	for _, c := range q.consumers {
		c.skip = 0
	}
	for n := r.Count(); n > 0 && r.Err() == nil; n-- {
		r.Uint() // level: each entry carries its own
		for m := r.Count(); m > 0 && r.Err() == nil; m-- {
			e := r.entry()
			e.prio = min(e.prio, q.cfg.MaxPriority)
			q.pushReadyOrdered(e)
		}
	}
	for n := r.Count(); n > 0 && r.Err() == nil; n-- {
		id := DeliveryID(r.Uint())
		cid := ConsumerID(r.Uint())
		e := r.entry()
		e.prio = min(e.prio, q.cfg.MaxPriority)
		var c *consumer
		if cid != 0 {
			// A consumer gone since the delivery still owns it until settled; keep its count
			// on a detached record.
			if c = byID[cid]; c == nil {
				c = &consumer{spec: ConsumerSpec{ID: cid}}
				byID[cid] = c
			}
		}
		if q.pend.len() > 0 && q.pend.back().id >= id {
			return errors.New("outstanding deliveries out of order")
		}
		q.pend.pushBack(pending{id: id, c: c, e: e})
		q.unacked++
		if c != nil {
			c.unacked++
		}
	}
	if r.Err() != nil {
		return r.Err()
	}
	if q.pend.len() > 0 && q.pend.back().id >= q.nextID {
		return errors.New("delivery id counter behind its deliveries")
	}
	if r.Len() != 0 {
		return errors.New("trailing bytes")
	}
	return nil
}

// pushReadyOrdered adds a restored message, keeping publish order within its level even
// when a lowered x-max-priority merges levels.
func (q *Queue) pushReadyOrdered(e entry) {
	r := &q.levels[e.prio]
	if r.len() == 0 || r.back().seq < e.seq {
		q.pushReady(e)
		return
	}
	q.requeue([]entry{e})
}

type snapWriter struct {
	b   []byte
	err error
}

func (w *snapWriter) uint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }
func (w *snapWriter) int(v int64)   { w.b = binary.AppendVarint(w.b, v) }
func (w *snapWriter) u8(v uint8)    { w.b = append(w.b, v) }

func (w *snapWriter) entry(e *entry) {
	w.uint(e.seq)
	w.int(e.expiry)
	w.u8(e.prio)
	var flags uint8
	if e.delivered {
		flags |= 1
	}
	if e.msg == nil {
		flags |= 2
	}
	w.u8(flags)
	w.uint(e.ref)
	w.uint(uint64(e.size))
	if e.msg == nil {
		return
	}
	var err error
	if w.b, err = message.AppendBinary(w.b, e.msg); err != nil && w.err == nil {
		w.err = err
	}
}

// snapReader reads a snapshot: message's binary primitives plus the queue's entries.
type snapReader struct{ *message.BinaryReader }

func (r *snapReader) entry() entry {
	// A corrupt entry still gets a message, so restore can finish its pass before failing.
	e := entry{seq: r.Uint(), expiry: r.Int(), prio: r.U8()}
	flags := r.U8()
	e.delivered = flags&1 != 0
	e.ref = r.Uint()
	size := r.Uint()
	e.size = uint32(size)
	if size > 1<<32-1 || flags&^3 != 0 || (flags&2 != 0 && e.ref == 0) {
		r.Fail("entry")
	}
	if r.Err() != nil || flags&2 != 0 {
		return e
	}
	m := r.Message()
	if r.Err() != nil {
		return e
	}
	if m.Size() != int(size) {
		r.Fail("message size")
		return e
	}
	e.msg = m
	return e
}
