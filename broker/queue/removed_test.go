package queue

import (
	"slices"
	"testing"

	"github.com/parleymq/parley/broker/message"
)

// refHarness drives a queue for the Output.Removed tests: messages are published with
// references 1, 2, ... and every Removed reference is tallied.
type refHarness struct {
	t       *testing.T
	q       *Queue
	out     Output
	now     int64
	nextRef uint64
	removed map[uint64]int
	ids     []DeliveryID // outstanding deliveries seen, in order
}

func newRefHarness(t *testing.T, cfg Config) *refHarness {
	return &refHarness{t: t, q: New(cfg), nextRef: 1, removed: map[uint64]int{}}
}

func (h *refHarness) collect() {
	for _, d := range h.out.Deliveries {
		h.ids = append(h.ids, d.ID)
	}
	for _, r := range h.out.Removed {
		h.removed[r]++
	}
	h.out.Reset()
}

func (h *refHarness) pub(m *message.Message) (uint64, bool) {
	if m == nil {
		m = &message.Message{Body: []byte("m")}
	}
	ref := h.nextRef
	h.nextRef++
	ok := h.q.PublishRef(h.now, m, ref, &h.out)
	h.collect()
	return ref, ok
}

func (h *refHarness) consume(spec ConsumerSpec) {
	if err := h.q.AddConsumer(spec); err != nil {
		h.t.Fatal(err)
	}
}

func (h *refHarness) drain() {
	h.q.Drain(h.now, nil, &h.out)
	h.collect()
}

func (h *refHarness) settle(o Outcome) {
	if err := h.q.Settle(h.now, h.ids, o, &h.out); err != nil {
		h.t.Fatal(err)
	}
	h.ids = nil
	h.collect()
}

func (h *refHarness) get(noAck bool) {
	d, ok := h.q.Get(h.now, noAck, &h.out)
	if !ok {
		h.t.Fatal("basic.get found nothing")
	}
	if !noAck {
		h.ids = append(h.ids, d.ID)
	}
	h.collect()
}

// TestRemovedEachWayOfLeaving: for every way a message leaves the queue for good, its
// reference appears exactly once in Output.Removed; for the ways it stays, never.
func TestRemovedEachWayOfLeaving(t *testing.T) {
	limit := func(n int64, o Overflow, dlx bool) Config {
		c := cfgDefault()
		c.MaxLength, c.Overflow, c.HasDeadLetterExchange = n, o, dlx
		return c
	}
	withTTL := func(ttl int64, dlx bool) Config {
		c := cfgDefault()
		c.MessageTTL, c.HasDeadLetterExchange = ttl, dlx
		return c
	}
	for _, tt := range []struct {
		name    string
		cfg     Config
		run     func(h *refHarness) uint64 // returns the reference under test
		removed bool
	}{
		{"ack", cfgDefault(), func(h *refHarness) uint64 {
			h.consume(ConsumerSpec{ID: 1})
			r, _ := h.pub(nil)
			h.drain()
			h.settle(Ack)
			return r
		}, true},
		{"delivered, not settled", cfgDefault(), func(h *refHarness) uint64 {
			h.consume(ConsumerSpec{ID: 1})
			r, _ := h.pub(nil)
			h.drain()
			return r
		}, false},
		{"requeue", cfgDefault(), func(h *refHarness) uint64 {
			h.consume(ConsumerSpec{ID: 1, Prefetch: 1})
			r, _ := h.pub(nil)
			h.drain()
			h.settle(Requeue)
			return r
		}, false},
		{"discard without dead-letter exchange", cfgDefault(), func(h *refHarness) uint64 {
			h.consume(ConsumerSpec{ID: 1})
			r, _ := h.pub(nil)
			h.drain()
			h.settle(Discard)
			return r
		}, true},
		{"discard, dead-lettered", withTTL(-1, true), func(h *refHarness) uint64 {
			h.consume(ConsumerSpec{ID: 1})
			r, _ := h.pub(nil)
			h.drain()
			h.settle(Discard)
			return r
		}, true},
		{"expired at drain", withTTL(10, false), func(h *refHarness) uint64 {
			r, _ := h.pub(nil)
			h.now = 10
			h.drain()
			return r
		}, true},
		{"expired at basic.get, dead-lettered", withTTL(10, true), func(h *refHarness) uint64 {
			r, _ := h.pub(nil)
			h.now = 10
			h.pub(nil)
			h.get(false)
			return r
		}, true},
		{"TTL 0 at publish, no consumer", withTTL(0, false), func(h *refHarness) uint64 {
			r, _ := h.pub(nil)
			return r
		}, true},
		{"TTL 0 at publish, delivered and acked", withTTL(0, false), func(h *refHarness) uint64 {
			h.consume(ConsumerSpec{ID: 1})
			r, _ := h.pub(nil)
			h.settle(Ack)
			return r
		}, true},
		{"expiration property 0", cfgDefault(), func(h *refHarness) uint64 {
			r, _ := h.pub(&message.Message{Properties: message.Properties{Flags: message.FlagExpiration, Expiration: "0"}})
			return r
		}, true},
		{"drop-head", limit(1, DropHead, false), func(h *refHarness) uint64 {
			r, _ := h.pub(nil)
			h.pub(nil)
			return r
		}, true},
		{"drop-head, dead-lettered", limit(1, DropHead, true), func(h *refHarness) uint64 {
			r, _ := h.pub(nil)
			h.pub(nil)
			return r
		}, true},
		{"drop-head after a requeue", limit(1, DropHead, false), func(h *refHarness) uint64 {
			h.consume(ConsumerSpec{ID: 1, Prefetch: 1})
			r, _ := h.pub(nil)
			h.drain()
			h.q.RemoveConsumer(1)
			h.pub(nil)
			h.settle(Requeue) // back at the head, over the limit: dropped
			return r
		}, true},
		{"drop-head when a policy lowers the limit", cfgDefault(), func(h *refHarness) uint64 {
			r, _ := h.pub(nil)
			h.pub(nil)
			h.q.SetConfig(h.now, limit(1, DropHead, false), &h.out)
			h.collect()
			return r
		}, true},
		{"purge", cfgDefault(), func(h *refHarness) uint64 {
			r, _ := h.pub(nil)
			if n := h.q.Purge(&h.out); n != 1 {
				h.t.Fatalf("purged %d", n)
			}
			h.collect()
			return r
		}, true},
		{"purge keeps unacknowledged", cfgDefault(), func(h *refHarness) uint64 {
			h.consume(ConsumerSpec{ID: 1})
			r, _ := h.pub(nil)
			h.drain()
			h.q.Purge(&h.out)
			h.collect()
			return r
		}, false},
		{"no-ack consumer", cfgDefault(), func(h *refHarness) uint64 {
			h.consume(ConsumerSpec{ID: 1, NoAck: true})
			r, _ := h.pub(nil)
			h.drain()
			return r
		}, true},
		{"basic.get no-ack", cfgDefault(), func(h *refHarness) uint64 {
			r, _ := h.pub(nil)
			h.get(true)
			return r
		}, true},
		{"basic.get then ack", cfgDefault(), func(h *refHarness) uint64 {
			r, _ := h.pub(nil)
			h.get(false)
			h.settle(Ack)
			return r
		}, true},
		{"reject-publish refuses", limit(1, RejectPublish, false), func(h *refHarness) uint64 {
			h.pub(nil)
			r, ok := h.pub(nil)
			if ok {
				h.t.Fatal("not refused")
			}
			return r
		}, true},
		{"reject-publish-dlx refuses, dead-lettered", limit(1, RejectPublishDLX, true), func(h *refHarness) uint64 {
			h.pub(nil)
			r, ok := h.pub(nil)
			if ok {
				h.t.Fatal("not refused")
			}
			return r
		}, true},
		{"reject-publish keeps the queued one", limit(1, RejectPublish, false), func(h *refHarness) uint64 {
			r, _ := h.pub(nil)
			h.pub(nil)
			return r
		}, false},
		{"consumer cancelled, outstanding stays", cfgDefault(), func(h *refHarness) uint64 {
			h.consume(ConsumerSpec{ID: 1})
			r, _ := h.pub(nil)
			h.drain()
			h.q.RemoveConsumer(1)
			return r
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newRefHarness(t, tt.cfg)
			ref := tt.run(h)
			want := 0
			if tt.removed {
				want = 1
			}
			if h.removed[ref] != want {
				t.Fatalf("reference %d reported removed %d times, want %d (all: %v)", ref, h.removed[ref], want, h.removed)
			}
			// Nothing is reported twice, and nothing still in the queue is reported.
			left := refsIn(h.q)
			for r, n := range h.removed {
				if n != 1 || slices.Contains(left, r) {
					t.Fatalf("reference %d reported %d times, still in the queue: %v", r, n, slices.Contains(left, r))
				}
			}
			if uint64(len(left)+len(h.removed)) != h.nextRef-1 {
				t.Fatalf("%d in the queue + %d removed != %d published", len(left), len(h.removed), h.nextRef-1)
			}
		})
	}
}

// refsIn lists the references of the messages in q, ready and outstanding.
func refsIn(q *Queue) []uint64 {
	var refs []uint64
	for l := range q.levels {
		r := &q.levels[l]
		for i := 0; i < r.len(); i++ {
			refs = append(refs, r.at(i).ref)
		}
	}
	for i := 0; i < q.pend.len(); i++ {
		if p := q.pend.at(i); !p.done {
			refs = append(refs, p.e.ref)
		}
	}
	slices.Sort(refs)
	return refs
}

func TestPublishWithoutRefReportsNothing(t *testing.T) {
	q := New(cfgDefault())
	var out Output
	q.Publish(0, &message.Message{}, &out)
	d, _ := q.Get(0, true, &out)
	if d.Msg == nil || len(out.Removed) != 0 {
		t.Fatalf("removed %v for a message without a reference", out.Removed)
	}
}

func TestOutputResetClearsRemoved(t *testing.T) {
	out := Output{Removed: []uint64{1, 2}}
	out.Reset()
	if len(out.Removed) != 0 || cap(out.Removed) != 2 {
		t.Fatalf("Removed after Reset: %v (cap %d)", out.Removed, cap(out.Removed))
	}
}

func TestRecover(t *testing.T) {
	ttl := cfgDefault()
	ttl.MessageTTL = 100
	limited := cfgDefault()
	limited.MaxLength, limited.Overflow = 1, RejectPublish
	msg := func(id string) *message.Message {
		return &message.Message{Properties: message.Properties{Flags: message.FlagMessageID, MessageID: id}}
	}
	for _, tt := range []struct {
		name    string
		cfg     Config
		now     int64 // of the Drain after recovery
		live    []string
		removed []uint64
	}{
		{"redelivered in log order", cfgDefault(), 0, []string{"a", "b", "c"}, nil},
		{"TTL counts from the original enqueue", ttl, 130, []string{"c"}, []uint64{1, 2}},
		{"no overflow check", limited, 0, []string{"a", "b", "c"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := New(tt.cfg)
			if err := q.AddConsumer(ConsumerSpec{ID: 1}); err != nil {
				t.Fatal(err)
			}
			for i, id := range []string{"a", "b", "c"} {
				q.Recover(int64(i*25), msg(id), uint64(i+1))
			}
			if q.Len() != 3 || q.Unacked() != 0 {
				t.Fatalf("after Recover: ready %d, unacked %d; want 3 ready, none delivered", q.Len(), q.Unacked())
			}
			var out Output
			q.Drain(tt.now, nil, &out)
			var got []string
			var ids []DeliveryID
			for _, d := range out.Deliveries {
				if !d.Redelivered {
					t.Fatalf("%s not marked redelivered", d.Msg.Properties.MessageID)
				}
				got = append(got, d.Msg.Properties.MessageID)
				ids = append(ids, d.ID)
			}
			if !slices.Equal(got, tt.live) || !slices.Equal(out.Removed, tt.removed) {
				t.Fatalf("delivered %v removed %v, want %v and %v", got, out.Removed, tt.live, tt.removed)
			}
			removed := slices.Clone(out.Removed)
			out.Reset()
			if err := q.Settle(tt.now, ids, Ack, &out); err != nil {
				t.Fatal(err)
			}
			removed = append(removed, out.Removed...)
			slices.Sort(removed)
			if !slices.Equal(removed, []uint64{1, 2, 3}) {
				t.Fatalf("references back %v, want 1 2 3", removed)
			}
		})
	}
}

// TestSnapshotKeepsRefs: a restored queue reports the references of the messages it had,
// ready and outstanding.
func TestSnapshotKeepsRefs(t *testing.T) {
	q := New(cfgDefault())
	var out Output
	if err := q.AddConsumer(ConsumerSpec{ID: 1, Prefetch: 2}); err != nil {
		t.Fatal(err)
	}
	for ref := uint64(1); ref <= 5; ref++ {
		q.PublishRef(0, &message.Message{Body: []byte{byte(ref)}}, ref*10, &out)
	}
	q.Drain(0, nil, &out)
	ids := []DeliveryID{out.Deliveries[0].ID, out.Deliveries[1].ID}
	snap, err := q.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Restore(cfgDefault(), snap)
	if err != nil {
		t.Fatal(err)
	}
	if got := refsIn(r); !slices.Equal(got, []uint64{10, 20, 30, 40, 50}) {
		t.Fatalf("restored refs %v", got)
	}
	out.Reset()
	if err := r.Settle(0, ids, Ack, &out); err != nil {
		t.Fatal(err)
	}
	r.Purge(&out)
	if !slices.Equal(out.Removed, []uint64{10, 20, 30, 40, 50}) {
		t.Fatalf("removed %v", out.Removed)
	}
}

// TestRefsDoNotAllocate: publish, deliver and ack with references costs no allocation once
// the Output's buffers have room (the benchmark shows the same; this keeps it so).
func TestRefsDoNotAllocate(t *testing.T) {
	q := New(cfgDefault())
	if err := q.AddConsumer(ConsumerSpec{ID: 1, Prefetch: 100}); err != nil {
		t.Fatal(err)
	}
	m := &message.Message{Body: []byte("x")}
	out := Output{Deliveries: make([]Delivery, 0, 8), Removed: make([]uint64, 0, 8)}
	ids := make([]DeliveryID, 0, 8)
	ref := uint64(0)
	round := func() {
		for range 8 {
			ref++
			q.PublishRef(0, m, ref, &out)
		}
		q.Drain(0, nil, &out)
		ids = ids[:0]
		for _, d := range out.Deliveries {
			ids = append(ids, d.ID)
		}
		out.Reset()
		if err := q.Settle(0, ids, Ack, &out); err != nil || len(out.Removed) != 8 {
			t.Fatalf("settle: %v, removed %v", err, out.Removed)
		}
		out.Reset()
	}
	for range 100 {
		round() // grow the rings first
	}
	if n := testing.AllocsPerRun(100, round); n != 0 {
		t.Fatalf("%v allocations per round", n)
	}
}
