package broker

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
)

// publishPersistent publishes n persistent messages to queue q through the default exchange
// and waits for every confirm. Bodies are body(i).
func publishPersistent(t *testing.T, v *VHost, q string, from, n int, body func(int) string) {
	t.Helper()
	confirmed := make(chan bool, n)
	for i := from; i < from+n; i++ {
		m := persistent(body(i))
		m.RoutingKey = q
		if routed, err := v.Publish(m, func(ok bool) { confirmed <- ok }, nil); !routed || err != nil {
			t.Fatalf("publish %d: routed=%v err=%v", i, routed, err)
		}
	}
	for range n {
		if !<-confirmed {
			t.Fatal("nack")
		}
	}
}

func deepBody(i int) string { return fmt.Sprintf("%05d:%s", i, bytes.Repeat([]byte{'x'}, 100)) }

// A deep durable queue keeps most bodies only in its log: its snapshot holds records, not
// bodies, and a consumer (and basic.get) gets every body back, in order, before and after a
// restart.
func TestDeepQueueBodiesStayInLog(t *testing.T) {
	dir := t.TempDir()
	window := func(c *Config) { c.QueueBodyWindow = 1000 } // about 10 bodies in memory
	n := openNode(t, dir, window)
	v, _ := n.b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "deep", Durable: true}, false); err != nil {
		t.Fatal(err)
	}
	const total = 1500
	// In waves, each of a few log entries (an inbox batch is one entry): past SnapshotEntries.
	for i := 0; i < total; i += 10 {
		publishPersistent(t, v, "deep", i, 10, deepBody)
	}

	// Half through a consumer (the drain path), acked, which reads stubs back in runs.
	q, _ := v.Queue("deep", 0)
	s := newSink()
	id, err := q.Consume(ConsumeOptions{Prefetch: 100}, s)
	if err != nil {
		t.Fatal(err)
	}
	for got := 0; got < total/2; {
		ds := s.wait(t, got+1)
		for _, d := range ds[got:] {
			if got < total/2 {
				if want := deepBody(got); d.Msg == nil || string(d.Msg.Body) != want {
					t.Fatalf("delivery %d: %v, want %.8s...", got, d.Msg, want)
				}
				q.Settle([]queue.DeliveryID{d.ID}, queue.Ack)
			}
			got++
		}
		if got > total/2 {
			// Past half: the rest stays unacked and comes back after the restart.
			break
		}
	}
	q.Cancel(id)
	q.Get(false) // push the acks' batch through; unacked, it comes back after the restart
	n.close()

	n = openNode(t, dir, window)
	defer n.close()
	snap, err := snapshotOf(t, n, "deep")
	if err != nil {
		t.Fatal(err)
	}
	if len(snap) == 0 {
		t.Fatal("no snapshot of the deep queue's log was stored: nothing to measure")
	}
	if len(snap) > total*40 {
		t.Fatalf("the snapshot is %d bytes for %d messages: it copies bodies", len(snap), total)
	}
	v, _ = n.b.VHost("/")
	q, _ = v.Queue("deep", 0)
	acked := -1
	for i := total / 2; i < total; i++ {
		d, _, ok := q.Get(true)
		if !ok {
			t.Fatalf("message %d lost", i)
		}
		if acked < 0 {
			// The consumer may have been handed some before the ack of the half went through.
			fmt.Sscanf(string(d.Msg.Body), "%05d", &acked)
			if acked > total/2 || acked < total/2-100 {
				t.Fatalf("first message after restart is %.5s", d.Msg.Body)
			}
			i = acked
		}
		if string(d.Msg.Body) != deepBody(i) || !d.Redelivered {
			t.Fatalf("message %d after restart: %.8s redelivered=%v", i, d.Msg.Body, d.Redelivered)
		}
	}
	if d, _, ok := q.Get(true); ok {
		t.Fatalf("unexpected message %.8s", d.Msg.Body)
	}
}

// groupOf is the raft group of durable queue q in vhost "/".
func groupOf(t *testing.T, n *node, q string) uint64 {
	t.Helper()
	v, ok := n.b.VHost("/")
	if !ok {
		t.Fatal("no vhost /")
	}
	qq, err := v.Queue(q, 0)
	if err != nil || qq.group == nil {
		t.Fatalf("durable queue %s: %v", q, err)
	}
	return qq.group.ID()
}

// snapshotOf returns the stored snapshot of a durable queue's log.
func snapshotOf(t *testing.T, n *node, q string) ([]byte, error) {
	l, err := n.eng.RaftLog(groupOf(t, n, q))
	if err != nil {
		return nil, err
	}
	s, err := l.Snapshot()
	if err != nil {
		return nil, err
	}
	return s.GetData(), nil
}

// A few unacknowledged messages at the head do not pin a busy queue's log: a snapshot copies
// them and the log is compacted past them; they survive a restart from that copy.
func TestStuckHeadDoesNotPinLog(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir)
	v, _ := n.b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "busy", Durable: true}, false); err != nil {
		t.Fatal(err)
	}
	publishPersistent(t, v, "busy", 0, 3, deepBody)
	q, _ := v.Queue("busy", 0)
	var stuck uint64 // the last entry holding one of the three
	for i := range 3 {
		d, _, ok := q.Get(false)
		if !ok || string(d.Msg.Body) != deepBody(i) {
			t.Fatalf("get %d", i)
		}
		stuck = max(stuck, refIndex(d.Ref))
	}
	l, err := n.eng.RaftLog(groupOf(t, n, "busy"))
	if err != nil {
		t.Fatal(err)
	}
	// Entries go through and are consumed until the log is compacted past the three, far more
	// than SnapshotEntries (50) if need be. (Removals of several gets may share an entry, so
	// how many entries a round makes varies.)
	first, _ := l.FirstIndex()
	for round := 0; first <= stuck && round < 100; round++ {
		publishPersistent(t, v, "busy", 3+round*50, 50, deepBody)
		for range 50 {
			if _, _, ok := q.Get(true); !ok {
				t.Fatal("get")
			}
		}
		first, _ = l.FirstIndex()
	}
	if first <= stuck {
		t.Fatalf("the log still starts at %d: the three unacked messages (entry %d) pin it", first, stuck)
	}
	n.close()

	n = openNode(t, dir)
	defer n.close()
	v, _ = n.b.VHost("/")
	q, _ = v.Queue("busy", 0)
	for i := range 3 {
		d, _, ok := q.Get(true)
		if !ok || string(d.Msg.Body) != deepBody(i) || !d.Redelivered {
			t.Fatalf("unacked message %d after restart: ok=%v", i, ok)
		}
	}
	if d, _, ok := q.Get(true); ok {
		t.Fatalf("unexpected message %.8s", d.Msg.Body)
	}
}

// A snapshot sent to a node with no log below it carries every body: that node restores all
// messages from it alone.
func TestTransferSnapshotStandsAlone(t *testing.T) {
	n := openNode(t, t.TempDir(), func(c *Config) { c.QueueBodyWindow = 0 })
	defer n.close()
	v, _ := n.b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "xfer", Durable: true}, false); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 120; i += 2 { // past SnapshotEntries (50) entries
		publishPersistent(t, v, "xfer", i, 2, deepBody)
	}
	q, _ := v.Queue("xfer", 0)
	for range 5 {
		q.Get(true)
	}
	q.Get(false) // a barrier for the removals; stays live
	l, err := n.eng.RaftLog(groupOf(t, n, "xfer"))
	if err != nil {
		t.Fatal(err)
	}
	// The host snapshots at the end of the cycle that applied the entries, perhaps just after
	// the futures completed: wait (bounded) for it.
	stored, err := l.Snapshot()
	for deadline := time.Now().Add(10 * time.Second); err == nil && len(stored.GetData()) == 0; stored, err = l.Snapshot() {
		if time.Now().After(deadline) {
			t.Fatal("no snapshot of the queue's log after 120 entries")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	local, err := decodeSnapshot(stored.GetData())
	if err != nil {
		t.Fatal(err)
	}
	if len(local.inline) == len(local.live) {
		t.Fatalf("the local snapshot copies all %d bodies: nothing to test", len(local.live))
	}
	data, err := q.log.TransferSnapshot(stored.GetData(), stored.GetMetadata().GetIndex())
	if err != nil {
		t.Fatal(err)
	}
	other := newQueueLog()
	if err := other.Restore(data); err != nil {
		t.Fatal(err)
	}
	if len(other.live) != len(local.live) || len(other.inline) != len(other.live) {
		t.Fatalf("transferred %d records with %d bodies, want %d with all bodies", len(other.live), len(other.inline), len(local.live))
	}
	for _, r := range other.live {
		m := other.inline[r.ref]
		var i int
		fmt.Sscanf(string(m.Body), "%05d", &i)
		if string(m.Body) != deepBody(i) || r.size != uint32(len(m.Body)) {
			t.Fatalf("record %d: body %.8s size %d", r.ref, m.Body, r.size)
		}
	}
}

// FuzzQueueLogSnapshot: no input makes the snapshot decoder panic, and what it accepts encodes
// and decodes again.
func FuzzQueueLogSnapshot(f *testing.F) {
	rec := func(ref uint64) liveRecord { return liveRecord{ref: ref, at: 5, ttl: -1, size: 3, prio: 2} }
	body := func(uint64) (*message.Message, error) { return &message.Message{Body: []byte("abc")}, nil }
	state := map[string][]byte{"will": []byte("w"), "in:7": {}}
	for _, seed := range []struct {
		floor uint64
		live  []liveRecord
		state map[string][]byte
	}{{0, nil, nil}, {1, []liveRecord{rec(3)}, state}, {5, []liveRecord{rec(2), rec(4), rec(7), rec(9)}, nil}} {
		b, err := encodeSnapshot(seed.floor, seed.live, seed.state, body)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// Version 2 (refs are log indexes): floor 4, one record at 5 in the log, no state.
	f.Add(append([]byte("PQL\x02"), 4, 1, 5, 6, 1, 1, 0, 0, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		snap, err := decodeSnapshot(data)
		if err != nil {
			return
		}
		again, err := encodeSnapshot(snap.floor, snap.live, snap.state, func(ref uint64) (*message.Message, error) { return snap.inline[ref], nil })
		if err != nil {
			t.Fatalf("re-encoding an accepted snapshot: %v", err)
		}
		if _, err := decodeSnapshot(again); err != nil {
			t.Fatalf("decoding a re-encoded snapshot: %v", err)
		}
	})
}

// State records (Queue.SetState) are applied from the log, carried by snapshots, and a
// version 1 snapshot (before state records) still restores.
func TestQueueLogStateRecords(t *testing.T) {
	l := newQueueLog()
	for i, e := range [][]byte{stateEntry("will", []byte("bye")), stateEntry("in:7", []byte{}),
		stateEntry("gone", []byte("x")), stateEntry("gone", nil)} {
		if res := l.Apply(uint64(i+1), e); res != nil {
			t.Fatalf("entry %d: %v", i, res)
		}
	}
	want := func(st map[string][]byte) {
		t.Helper()
		if len(st) != 2 || string(st["will"]) != "bye" || st["in:7"] == nil || len(st["in:7"]) != 0 {
			t.Fatalf("state %q", st)
		}
	}
	want(l.stateCopy())
	snap, err := encodeSnapshot(5, nil, l.state, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := newQueueLog()
	if err := other.Restore(snap); err != nil {
		t.Fatal(err)
	}
	want(other.stateCopy())
	v1 := append([]byte("PQL\x01"), 5, 0) // floor 5, no records
	if err := other.Restore(v1); err != nil || len(other.stateCopy()) != 0 {
		t.Fatalf("version 1 snapshot: %v, state %q", err, other.stateCopy())
	}
	if res := l.Apply(9, []byte{entryState, 9, 'x'}); res == nil {
		t.Fatal("a state entry whose key runs past its end was applied")
	}
}

// Per-message records (Queue.SetRefStates) are kept for live messages only, go with their
// message's removal, stay out of State, and are carried by snapshots.
func TestQueueLogRefStates(t *testing.T) {
	l := newQueueLog()
	m := &message.Message{RoutingKey: "k", Body: []byte("b")}
	for i := uint64(1); i <= 3; i++ {
		e := entryData(t)(l.enqueueEntry(int64(i), m))
		if res := l.Apply(i, e); res != packRef(i, 0) {
			t.Fatalf("enqueue %d: %v", i, res)
		}
	}
	r1, r2, r3 := packRef(1, 0), packRef(2, 0), packRef(3, 0)
	steps := [][]byte{
		stateEntry("conn", []byte("c")),
		stateEntry(refStatesKey, encodeRefStates([]RefState{{r1, []byte{0, 7}}, {r2, []byte{0, 8}}, {r3, []byte{0, 9}}, {packRef(9, 0), []byte{1}}})),
		removeEntry(0, []uint64{r1}),
		stateEntry(refStatesKey, encodeRefStates([]RefState{{r3, nil}, {r1, []byte{5}}})),
	}
	for i, e := range steps {
		if res := l.Apply(uint64(10+i), e); res != nil {
			t.Fatalf("step %d: %v", i, res)
		}
	}
	want := func(l *queueLog) {
		t.Helper()
		got := l.refStatesCopy()
		if len(got) != 1 || !bytes.Equal(got[r2], []byte{0, 8}) || l.refStates != 1 {
			t.Fatalf("records %v (count %d), want only %d: 0008", got, l.refStates, r2)
		}
		if st := l.stateCopy(); len(st) != 1 || string(st["conn"]) != "c" {
			t.Fatalf("state %q", st)
		}
	}
	want(l)
	live := slices.DeleteFunc(slices.Clone(l.live), func(r liveRecord) bool { return r.gone })
	snap, err := encodeSnapshot(packRef(1, 0), live, l.state, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := newQueueLog()
	if err := other.Restore(snap); err != nil {
		t.Fatal(err)
	}
	want(other)
	if res := other.Apply(20, removeEntry(0, []uint64{r2})); res != nil || len(other.refStatesCopy()) != 0 || other.refStates != 0 {
		t.Fatalf("after removing %d: %v, records %v", r2, res, other.refStatesCopy())
	}
	if res := l.Apply(21, stateEntry(refStatesKey, []byte{1, 9})); res == nil {
		t.Fatal("a record whose value runs past the entry's end was applied")
	}
}
