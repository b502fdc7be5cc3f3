package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/cluster"
)

// entryData returns what the log stores of an entry built for ProposeAsyncInPlace.
func entryData(t testing.TB) func(buf []byte, token uint64, err error) []byte {
	return func(buf []byte, _ uint64, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Clone(buf[cluster.EntryHeaderRoom:])
	}
}

func batchOf(bodies ...string) []*message.Message {
	ms := make([]*message.Message, len(bodies))
	for i, b := range bodies {
		ms[i] = persistent(b)
		ms[i].RoutingKey = "q"
	}
	return ms
}

// A batch entry's messages get refs (index, slot) in order, the same whether Apply takes them
// from the proposer's memory or decodes them (a replay, another node's entry); removals and
// snapshots use those refs.
func TestQueueLogBatchEntry(t *testing.T) {
	proposer := newQueueLog()
	data := entryData(t)(proposer.enqueueBatchEntry(1000, batchOf("a", "bb", "ccc")))
	single := entryData(t)(proposer.enqueueEntry(2000, persistent("dddd")))
	replica := newQueueLog()
	for _, l := range []*queueLog{proposer, replica} {
		if res := l.Apply(7, data); res != packRef(7, 0) {
			t.Fatalf("batch entry applied: %v, want ref %d", res, packRef(7, 0))
		}
		if res := l.Apply(8, single); res != packRef(8, 0) {
			t.Fatalf("single entry applied: %v, want ref %d", res, packRef(8, 0))
		}
	}
	want := []liveRecord{
		{ref: packRef(7, 0), at: 1000, ttl: -1, size: 1}, {ref: packRef(7, 1), at: 1000, ttl: -1, size: 2},
		{ref: packRef(7, 2), at: 1000, ttl: -1, size: 3}, {ref: packRef(8, 0), at: 2000, ttl: -1, size: 4},
	}
	if !slices.Equal(proposer.live, want) || !slices.Equal(replica.live, want) {
		t.Fatalf("records:\nproposer %+v\nreplica  %+v\nwant     %+v", proposer.live, replica.live, want)
	}
	if len(proposer.pending) != 0 {
		t.Fatalf("%d proposals still pending after they were applied", len(proposer.pending))
	}
	var got []string
	if err := decodeEnqueued(data, func(slot int, at int64, m *message.Message) bool {
		got = append(got, fmt.Sprintf("%d:%d:%s", slot, at, m.Body))
		return true
	}); err != nil || !slices.Equal(got, []string{"0:1000:a", "1:1000:bb", "2:1000:ccc"}) {
		t.Fatalf("decoded %q, %v", got, err)
	}

	// The middle of the batch leaves; the snapshot keeps the others by ref.
	replica.Apply(9, removeEntry(0, []uint64{packRef(7, 1)}))
	snap, err := encodeSnapshot(packRef(7, 2), slices.DeleteFunc(slices.Clone(replica.live), func(r liveRecord) bool { return r.gone }),
		nil, func(ref uint64) (*message.Message, error) { return &message.Message{Body: []byte{byte(ref)}}, nil })
	if err != nil {
		t.Fatal(err)
	}
	restored := newQueueLog()
	if err := restored.Restore(snap); err != nil {
		t.Fatal(err)
	}
	refs := func(rs []liveRecord) (out []uint64) {
		for _, r := range rs {
			out = append(out, r.ref)
		}
		return out
	}
	if got := refs(restored.live); !slices.Equal(got, []uint64{packRef(7, 0), packRef(7, 2), packRef(8, 0)}) {
		t.Fatalf("restored refs %x", got)
	}
	if restored.KeepFrom() != 7 || restored.inline[packRef(7, 0)] == nil || restored.inline[packRef(7, 2)] != nil {
		t.Fatalf("restored keepFrom %d, inline %v", restored.KeepFrom(), restored.inline)
	}

	// A corrupt batch adds none of its messages.
	for _, bad := range [][]byte{data[:len(data)-1], append(slices.Clone(data), 0), data[:17]} {
		l := newQueueLog()
		if res := l.Apply(3, bad); !errors.Is(res.(error), errCorruptEntry) || len(l.live) != 0 {
			t.Fatalf("corrupt batch of %d bytes: %v, %d records", len(bad), res, len(l.live))
		}
	}
}

// A log written before refs were packed (entryEnqueue entries referenced by index, remove
// entries listing indexes, version 2 snapshots) reads back with packed refs.
func TestQueueLogLegacyRefs(t *testing.T) {
	old := newQueueLog()
	for i := uint64(3); i <= 5; i++ {
		e := entryData(t)(newQueueLog().enqueueEntry(int64(i), persistent("m")))
		if res := old.Apply(i, e); res != packRef(i, 0) {
			t.Fatalf("legacy enqueue at %d: %v", i, res)
		}
	}
	legacyRemove := append([]byte{entryRemoveLegacy}, binary.AppendUvarint(nil, 4)...)
	old.Apply(6, legacyRemove)
	if old.live[1].ref != packRef(4, 0) || !old.live[1].gone || old.live[0].gone || old.live[2].gone {
		t.Fatalf("legacy removal of index 4: %+v", old.live)
	}

	// A version 2 snapshot: floor 4, message 3 inline, message 5 in the log.
	v2 := append([]byte("PQL\x02"), 4, 2)
	v2 = append(v2, 3, 6, 1, 1, 0, 1) // ref delta 3, at 3, ttl -1, size 1, no priority, inline
	var err error
	if v2, err = message.AppendBinary(v2, persistent("m")); err != nil {
		t.Fatal(err)
	}
	v2 = append(v2, 2, 10, 1, 1, 0, 0) // ref delta 2, at 5, ...; in the log
	v2 = append(v2, 0)                 // no state records
	l := newQueueLog()
	if err := l.Restore(v2); err != nil {
		t.Fatal(err)
	}
	if len(l.live) != 2 || l.live[0].ref != packRef(3, 0) || l.live[1].ref != packRef(5, 0) ||
		l.floor != packRef(4, 0) || l.KeepFrom() != 4 || l.inline[packRef(3, 0)] == nil {
		t.Fatalf("version 2 snapshot restored as %+v floor %x keepFrom %d inline %v", l.live, l.floor, l.KeepFrom(), l.inline)
	}
}

// holdSink holds the queue's goroutine in its first delivery until released, so that what is
// posted meanwhile is taken as one inbox batch; it takes nothing more.
type holdSink struct {
	held, release chan struct{}
	first         queue.Delivery
	n             atomic.Int32
}

func (h *holdSink) Deliver(_ *Queue, d queue.Delivery) {
	if h.n.Add(1) == 1 {
		h.first = d
		close(h.held)
		<-h.release
	}
}
func (h *holdSink) Allow() bool      { return h.n.Load() == 0 }
func (h *holdSink) Cancelled(*Queue) {}

// publishOneBatch publishes messages from..from+n-1 (bodies deepBody) to the durable queue
// name so that the queue takes them in one inbox batch, and waits for their confirms.
func publishOneBatch(t *testing.T, v *VHost, name string, from, n int) {
	t.Helper()
	q, _ := v.Queue(name, 0)
	h := &holdSink{held: make(chan struct{}), release: make(chan struct{})}
	id, err := q.Consume(ConsumeOptions{}, h)
	if err != nil {
		t.Fatal(err)
	}
	gate := persistent("gate")
	gate.RoutingKey = name
	gateOK := make(chan bool, 1)
	if _, err := v.Publish(gate, func(ok bool) { gateOK <- ok }, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the gate message was not delivered")
	}
	confirmed := make(chan bool, n)
	for i := from; i < from+n; i++ {
		m := persistent(deepBody(i))
		m.RoutingKey = name
		if routed, err := v.Publish(m, func(ok bool) { confirmed <- ok }, nil); !routed || err != nil {
			t.Fatalf("publish %d: routed=%v err=%v", i, routed, err)
		}
	}
	close(h.release)
	for range n {
		if !<-confirmed {
			t.Fatal("nack")
		}
	}
	if !<-gateOK {
		t.Fatal("gate nacked")
	}
	q.Settle([]queue.DeliveryID{h.first.ID}, queue.Ack)
	q.Cancel(id)
}

// enqueueEntries counts the enqueue entries in a queue's log and the messages they carry.
func enqueueEntries(t *testing.T, q *Queue) (entries, msgs int) {
	t.Helper()
	if _, err := q.log.reader.Read(1, q.group.Applied()+1, 1<<30, func(_ uint64, data []byte) {
		if isEnqueue(data) {
			entries++
			if err := decodeEnqueued(data, func(int, int64, *message.Message) bool { msgs++; return true }); err != nil {
				t.Fatal(err)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	return entries, msgs
}

// The persistent publishes an inbox batch holds are one log entry; a batch entry whose head
// stays partly unacknowledged does not pin the log (its live messages are copied into the
// snapshot), and they come back, with their bodies, after a restart.
func TestBatchEntryPartiallyAckedAtHead(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir)
	v, _ := n.b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "batch", Durable: true}, false); err != nil {
		t.Fatal(err)
	}
	const size = 20
	publishOneBatch(t, v, "batch", 0, size)
	q, _ := v.Queue("batch", 0)
	if entries, msgs := enqueueEntries(t, q); entries != 2 || msgs != size+1 {
		t.Fatalf("the gate and a batch of %d: %d enqueue entries carrying %d messages, want 2 carrying %d", size, entries, msgs, size+1)
	}
	keep := map[int]bool{2: true, 9: true, size - 1: true}
	var ids []queue.DeliveryID
	for i := range size {
		d, _, ok := q.Get(false)
		if !ok || string(d.Msg.Body) != deepBody(i) || refIndex(d.Ref) == 0 || refSlot(d.Ref) != i {
			t.Fatalf("get %d: ok=%v ref %d/%d body %.8s", i, ok, refIndex(d.Ref), refSlot(d.Ref), d.Msg.Body)
		}
		if !keep[i] {
			ids = append(ids, d.ID)
		}
	}
	q.Settle(ids, queue.Ack)
	batchIndex := uint64(0)
	if _, err := q.log.reader.Read(1, q.group.Applied()+1, 1<<30, func(i uint64, data []byte) {
		if len(data) > 0 && data[0] == entryEnqueueBatch {
			batchIndex = i
		}
	}); err != nil || batchIndex == 0 {
		t.Fatalf("batch entry not found: %v", err)
	}

	// Entries go through and are consumed until the log is compacted past the batch entry, far
	// more than SnapshotEntries (50) if need be (removals of several gets may share an entry).
	l, err := n.eng.RaftLog(groupOf(t, n, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := l.FirstIndex()
	for round := 0; first <= batchIndex && round < 200; round++ {
		publishPersistent(t, v, "batch", size+round*10, 10, deepBody)
		for range 10 {
			if _, _, ok := q.Get(true); !ok {
				t.Fatal("get")
			}
		}
		first, _ = l.FirstIndex()
	}
	if first <= batchIndex {
		t.Fatalf("the log still starts at %d: the batch entry at %d, partly unacked, pins it", first, batchIndex)
	}
	n.close()

	n = openNode(t, dir)
	defer n.close()
	v, _ = n.b.VHost("/")
	q, _ = v.Queue("batch", 0)
	for _, i := range []int{2, 9, size - 1} {
		d, _, ok := q.Get(true)
		if !ok || string(d.Msg.Body) != deepBody(i) || !d.Redelivered {
			t.Fatalf("unacked message %d after restart: ok=%v body %.8s", i, ok, d.Msg.Body)
		}
	}
	if d, _, ok := q.Get(true); ok {
		t.Fatalf("unexpected message %.8s", d.Msg.Body)
	}
}

// FuzzQueueLogEntry: no entry makes Apply panic, and an enqueue entry it accepts gives one live
// record per message the decoder reads, with refs of that entry.
func FuzzQueueLogEntry(f *testing.F) {
	l := newQueueLog()
	batch, _, err := l.enqueueBatchEntry(5, batchOf("a", "bb", "ccc"))
	if err != nil {
		f.Fatal(err)
	}
	one, _, err := l.enqueueEntry(6, persistent("x"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(bytes.Clone(batch[cluster.EntryHeaderRoom:]))
	f.Add(bytes.Clone(one[cluster.EntryHeaderRoom:]))
	f.Add(removeEntry(0, []uint64{packRef(3, 1), packRef(9, 0)}))
	f.Add(removeEntry(removeMarkerBit|42, []uint64{packRef(3, 1)}))
	f.Add(append([]byte{entryRemoveLegacy}, 3, 9))
	f.Add(stateEntry("k", []byte("v")))
	f.Fuzz(func(t *testing.T, data []byte) {
		l := newQueueLog()
		res := l.Apply(11, data)
		if !isEnqueue(data) {
			return
		}
		n := 0
		derr := decodeEnqueued(data, func(int, int64, *message.Message) bool { n++; return true })
		if _, ok := res.(error); ok != (derr != nil) {
			t.Fatalf("Apply says %v, the decoder %v", res, derr)
		}
		if derr != nil {
			if len(l.live) != 0 {
				t.Fatalf("a corrupt entry added %d records", len(l.live))
			}
			return
		}
		if len(l.live) != n {
			t.Fatalf("%d records for %d messages", len(l.live), n)
		}
		for slot, r := range l.live {
			if r.ref != packRef(11, slot) {
				t.Fatalf("record %d has ref %x", slot, r.ref)
			}
		}
	})
}

// Publishes a queue takes in the same inbox batch as the broker's shutdown still reach the log
// (they are proposed before the shutdown's barrier) and are there after a restart.
func TestBatchBeforeShutdownIsLogged(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir)
	v, _ := n.b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "last", Durable: true}, false); err != nil {
		t.Fatal(err)
	}
	q, _ := v.Queue("last", 0)
	h := &holdSink{held: make(chan struct{}), release: make(chan struct{})}
	if _, err := q.Consume(ConsumeOptions{}, h); err != nil {
		t.Fatal(err)
	}
	gate := persistent("gate")
	gate.RoutingKey = "last"
	if _, err := v.Publish(gate, nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the gate message was not delivered")
	}
	const size = 10
	for i := range size {
		m := persistent(deepBody(i))
		m.RoutingKey = "last"
		if _, err := v.Publish(m, func(bool) {}, nil); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan struct{})
	go func() { n.b.Close(); close(closed) }()
	// The shutdown's command waits behind the publishes, in the same batch.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		q.inbox.mu.Lock()
		waiting := len(q.inbox.cmds)
		q.inbox.mu.Unlock()
		if waiting == size+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d commands in the inbox, want %d publishes and the shutdown", waiting, size)
		}
	}
	close(h.release)
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("the broker did not close")
	}
	n.close()

	n = openNode(t, dir)
	defer n.close()
	v, _ = n.b.VHost("/")
	q, _ = v.Queue("last", 0)
	if d, _, ok := q.Get(true); !ok || string(d.Msg.Body) != "gate" {
		t.Fatalf("the gate message after restart: ok=%v", ok)
	}
	for i := range size {
		if d, _, ok := q.Get(true); !ok || string(d.Msg.Body) != deepBody(i) {
			t.Fatalf("message %d published before the shutdown: lost (ok=%v)", i, ok)
		}
	}
}

// An entry another instance proposed (another node, or this node before a restart) is decoded,
// not mistaken for one of this instance's own pending proposals.
func TestQueueLogTokensDoNotCollide(t *testing.T) {
	mine, other := newQueueLog(), newQueueLog()
	if _, _, err := mine.enqueueEntry(1, persistent("mine")); err != nil {
		t.Fatal(err)
	}
	theirs := entryData(t)(other.enqueueBatchEntry(2, batchOf("a", "bb", "ccc")))
	if res := mine.Apply(5, theirs); res != packRef(5, 0) {
		t.Fatalf("applied: %v", res)
	}
	if len(mine.live) != 3 || mine.live[2].size != 3 || len(mine.pending) != 1 {
		t.Fatalf("another instance's batch of 3 applied as %+v, %d pending", mine.live, len(mine.pending))
	}
}
