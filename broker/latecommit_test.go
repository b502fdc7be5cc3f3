package broker

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/cluster"
	"github.com/parleymq/parley/storage"
)

// Entries of a durable queue's log that commit after its queue started (the queue's group was
// recovered only up to what this node knew committed) must reach the running queue, once. The
// tests run three hosts over real Pebble, connected by a cluster.LocalNetwork, the way
// cmd/parley runs a cluster: one node serves (runs a broker), the others keep replicas of group
// 0 and of the queue's group with the broker's stand-ins.

// trioTimeout bounds every wait of these tests; nothing asserts a duration.
const trioTimeout = 30 * time.Second

type trioNode struct {
	eng  *storage.Engine
	host *cluster.Host
	b    *Broker // nil on a standby
	stop context.CancelFunc
}

type trio struct {
	t        *testing.T
	net      *cluster.LocalNetwork
	dirs     map[uint64]string
	nodes    map[uint64]*trioNode
	snapshot uint64 // the hosts' SnapshotEntries
}

func newTrio(t *testing.T, snapshotEntries uint64) *trio {
	tr := &trio{t: t, net: cluster.NewLocalNetwork(), dirs: map[uint64]string{}, nodes: map[uint64]*trioNode{},
		snapshot: snapshotEntries}
	for id := uint64(1); id <= 3; id++ {
		tr.dirs[id] = t.TempDir()
	}
	t.Cleanup(func() {
		for id := range tr.nodes {
			tr.down(id)
		}
	})
	return tr
}

// up starts node id's host (over its data directory, kept across down and up).
func (tr *trio) up(id uint64) *trioNode {
	tr.t.Helper()
	eng, err := storage.Open(tr.dirs[id], storage.DefaultOptions(), zap.NewNop())
	if err != nil {
		tr.t.Fatal(err)
	}
	host, err := cluster.NewHost(cluster.Config{
		NodeID: id, Peers: map[uint64]string{1: "n1", 2: "n2", 3: "n3"}, Transport: tr.net.Transport(id),
		TickInterval: 10 * time.Millisecond, SnapshotEntries: tr.snapshot,
	}, eng, zap.NewNop())
	if err != nil {
		tr.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := host.Start(ctx); err != nil {
		tr.t.Fatal(err)
	}
	tr.net.Attach(host)
	n := &trioNode{eng: eng, host: host, stop: cancel}
	tr.nodes[id] = n
	return n
}

// serve starts a broker on node id, as a node that takes over serving does.
func (tr *trio) serve(id uint64) *VHost {
	tr.t.Helper()
	n := tr.nodes[id]
	cfg := DefaultConfig()
	cfg.Host = n.host
	b, err := New(zaptest.NewLogger(tr.t, zaptest.Level(zap.WarnLevel)), cfg)
	if err != nil {
		tr.t.Fatalf("broker on node %d: %v", id, err)
	}
	n.b = b
	v, _ := b.VHost("/")
	return v
}

// standby keeps replicas of group 0 and of the given queue groups on node id.
func (tr *trio) standby(id uint64, groups ...uint64) {
	tr.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), trioTimeout)
	defer cancel()
	h := tr.nodes[id].host
	if h.Group(MetaGroup) == nil {
		if _, err := h.AddReplica(ctx, MetaGroup, MetaStandIn(func([]uint64, error) {})); err != nil {
			tr.t.Fatalf("node %d: group 0 replica: %v", id, err)
		}
	}
	for _, g := range groups {
		if h.Group(g) == nil {
			if _, err := h.AddReplica(ctx, g, QueueStandIn()); err != nil {
				tr.t.Fatalf("node %d: replica of group %d: %v", id, g, err)
			}
		}
	}
}

// down stops node id: its broker (if it serves), its host and its storage.
func (tr *trio) down(id uint64) {
	n := tr.nodes[id]
	if n == nil {
		return
	}
	if n.b != nil {
		n.b.Close()
	}
	tr.net.Detach(id)
	n.host.Stop()
	n.stop()
	_ = n.eng.Close()
	delete(tr.nodes, id)
}

// publishConfirmed publishes persistent messages body(i) for i in [from, to) to queue q, one at
// a time (each its own log entry), each confirmed before the next. A nack (a proposal dropped by
// an election, which these fast ticks make frequent) is retried, as a publisher would; the
// bodies retried are added to again, since such a message may be stored twice (at least once).
func publishConfirmed(t *testing.T, v *VHost, q string, from, to int, again map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(trioTimeout)
	for i := from; i < to; i++ {
		confirmed := make(chan bool, 1)
		m := persistent(fmt.Sprint(i))
		m.RoutingKey = q
		if routed, err := v.Publish(m, func(ok bool) { confirmed <- ok }, nil); !routed || err != nil {
			t.Fatalf("publish %d: routed=%v err=%v", i, routed, err)
		}
		select {
		case ok := <-confirmed:
			if !ok {
				if time.Now().After(deadline) {
					t.Fatalf("publish %d: nacked until %v", i, trioTimeout)
				}
				again[fmt.Sprint(i)] = true
				i--
			}
		case <-time.After(trioTimeout):
			t.Fatalf("publish %d: no confirm within %v", i, trioTimeout)
		}
	}
}

// getAllOf takes messages (no-ack) from queue q until every body in want came, and fails when
// one is missing at the deadline or one comes twice (unless in again) or one not wanted comes.
// Then it checks that nothing more comes for a while.
func getAllOf(t *testing.T, v *VHost, q string, want []string, again map[string]bool) {
	t.Helper()
	qq, err := v.Queue(q, 0)
	if err != nil {
		t.Fatal(err)
	}
	missing := map[string]bool{}
	for _, w := range want {
		missing[w] = true
	}
	seen := map[string]bool{}
	deadline := time.Now().Add(trioTimeout)
	for len(missing) > 0 {
		d, _, ok := qq.Get(true)
		if !ok {
			if time.Now().After(deadline) {
				keys := make([]string, 0, len(missing))
				for k := range missing {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				t.Fatalf("queue %s: %d committed messages never reached the running queue: %v", q, len(keys), keys)
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		body := string(d.Msg.Body)
		if seen[body] && again[body] {
			continue
		}
		if seen[body] {
			t.Fatalf("queue %s: message %q delivered twice", q, body)
		}
		if !missing[body] && again[body] {
			continue // another copy of a message published again after a nack
		}
		if !missing[body] {
			t.Fatalf("queue %s: unexpected message %q (ref %d/%d, redelivered %v)", q, body, refIndex(d.Ref), refSlot(d.Ref), d.Redelivered)
		}
		seen[body] = true
		delete(missing, body)
	}
	// A duplicate would come right behind: the entries are applied by now.
	for range 20 {
		if d, _, ok := qq.Get(true); ok && !(seen[string(d.Msg.Body)] && again[string(d.Msg.Body)]) {
			t.Fatalf("queue %s: message %q after all wanted ones (twice, or one removed for good)", q, d.Msg.Body)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lead makes node id lead group g, as a node that serves does (cmd/parley: the serving node
// leads every group), and waits until it does.
func (tr *trio) lead(id, g uint64) {
	tr.t.Helper()
	h := tr.nodes[id].host
	deadline := time.Now().Add(trioTimeout)
	for !h.Group(g).IsLeader() {
		if time.Now().After(deadline) {
			tr.t.Fatalf("node %d does not lead group %d", id, g)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = h.TransferLeadership(ctx, g, id)
		cancel()
		time.Sleep(50 * time.Millisecond)
	}
}

// serveQueue starts the three hosts with node 1 serving and leading group 0 (cmd/parley starts
// a broker only on group 0's leader) and nodes 2 and 3 standing by, and declares the durable
// queue q, replicated on both standbys. It returns node 1's vhost and q's group.
func (tr *trio) serveQueue(q string) (*VHost, uint64) {
	tr.t.Helper()
	for id := uint64(1); id <= 3; id++ {
		tr.up(id)
	}
	tr.standby(2)
	tr.standby(3)
	v := tr.serve(1)
	tr.lead(1, MetaGroup)
	declareDurable(tr.t, v, q)
	g := groupOfQueue(tr.t, v, q)
	tr.standby(2, g)
	tr.standby(3, g)
	return v, g
}

// declareDurable declares a durable queue, again while an election drops the metadata's
// proposal (the fast ticks of these tests make elections at start frequent).
func declareDurable(t *testing.T, v *VHost, name string) {
	t.Helper()
	deadline := time.Now().Add(trioTimeout)
	for {
		_, err := v.DeclareQueue(meta.QueueDef{Name: name, Durable: true}, false)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("declare %s: %v", name, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// takeAcked takes n messages from q and acknowledges them, and returns their bodies.
func takeAcked(t *testing.T, q *Queue, n int) map[string]bool {
	t.Helper()
	var ids []queue.DeliveryID
	got := map[string]bool{}
	for i := range n {
		d, _, ok := q.Get(false)
		if !ok {
			t.Fatalf("queue %s: message %d of %d missing", q.Name(), i, n)
		}
		ids = append(ids, d.ID)
		got[string(d.Msg.Body)] = true
	}
	q.Settle(ids, queue.Ack)
	return got
}

// without returns the bodies not in drop.
func without(bodies []string, drop map[string]bool) []string {
	var out []string
	for _, b := range bodies {
		if !drop[b] {
			out = append(out, b)
		}
	}
	return out
}

// groupOfQueue is the raft group of durable queue q.
func groupOfQueue(t *testing.T, v *VHost, q string) uint64 {
	t.Helper()
	qq, err := v.Queue(q, 0)
	if err != nil || qq.group == nil {
		t.Fatalf("durable queue %s: %v", q, err)
	}
	return qq.group.ID()
}

func bodies(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprint(i))
	}
	return out
}

// TestEntriesCommittedAfterStartReachTheQueue: node 1 serves and is stopped; node 2 takes
// over, consumes some of node 1's messages and publishes more, committed on nodes 2 and 3;
// node 2 stops; node 1 comes back and serves again with a log that ends before node 2's
// entries, so its queue starts without them and with the consumed ones. Node 3, which has
// them, leads the queue's group and sends them: node 1 applies them after its queue started
// and, once it takes the lead of the group (as a serving node does), node 2's messages must be
// delivered there, once, and the consumed ones not again. Node 1's own publishes must not come
// twice either.
func TestEntriesCommittedAfterStartReachTheQueue(t *testing.T) {
	tr := newTrio(t, 0)
	again := map[string]bool{}
	v, g := tr.serveQueue("late")
	publishConfirmed(t, v, "late", 0, 10, again)
	tr.down(1)

	v = tr.serve(2)
	// Node 2 consumes half of node 1's messages: node 1 recovers them and must drop them
	// when the removal commits there, or deliver them again (empty, once its log is
	// compacted past them).
	q, err := v.Queue("late", 0)
	if err != nil {
		t.Fatal(err)
	}
	consumed := takeAcked(t, q, 5)
	publishConfirmed(t, v, "late", 10, 30, again)
	last3 := tr.nodes[3].host.Group(g).Applied()
	tr.down(2)

	tr.up(1)
	v = tr.serve(1)
	// Until node 1 has applied the removal, its queue rightly holds the consumed ones.
	if q, err = v.Queue("late", 0); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(trioTimeout); q.group.Applied() < last3; {
		if time.Now().After(deadline) {
			t.Fatalf("node 1 applied %d of node 3's %d entries", q.group.Applied(), last3)
		}
		time.Sleep(5 * time.Millisecond)
	}
	tr.lead(1, g)
	getAllOf(t, v, "late", without(bodies(0, 30), consumed), again)
	publishConfirmed(t, v, "late", 30, 40, again)
	getAllOf(t, v, "late", bodies(30, 40), again)
}

// TestSnapshotInstalledWhileRunningReachesTheQueue is the test above where node 1 is so far
// behind that node 3 sends it a snapshot rather than entries: node 2 consumed node 1's
// messages (they are gone for good) and published more, and node 3 compacted its log past
// what node 1 has. The snapshot node 1 installs while its queue runs must bring node 2's
// messages into it, and take out the ones consumed meanwhile (their bodies are no longer in
// node 1's log: delivered, they would come out empty).
func TestSnapshotInstalledWhileRunningReachesTheQueue(t *testing.T) {
	tr := newTrio(t, 10)
	again := map[string]bool{}
	v, g := tr.serveQueue("behind")
	publishConfirmed(t, v, "behind", 0, 10, again)
	// Where node 1's log ends: after its broker stopped (a stopping queue writes a barrier).
	tr.nodes[1].b.Close()
	tr.nodes[1].b = nil
	l1, err := tr.nodes[1].eng.RaftLog(g)
	if err != nil {
		t.Fatal(err)
	}
	last1, err := l1.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	tr.down(1)

	v = tr.serve(2)
	q, err := v.Queue("behind", 0)
	if err != nil {
		t.Fatal(err)
	}
	takeAcked(t, q, 10)
	// More messages, consumed at once, before node 2's own: whatever the order of the entries
	// of node 2's first batches, node 3 compacts well past node 1's log.
	publishConfirmed(t, v, "behind", 100, 130, again)
	for range 30 {
		if _, _, ok := q.Get(true); !ok {
			t.Fatal("node 2: a message published to be consumed is missing")
		}
	}
	for {
		d, _, ok := q.Get(true)
		if !ok {
			break
		}
		if b := string(d.Msg.Body); !again[b] {
			t.Fatalf("node 2: message %q left", b)
		}
	}
	publishConfirmed(t, v, "behind", 10, 60, again)
	// Node 3 compacts past the end of node 1's log: node 1 then needs a snapshot.
	first := func() uint64 {
		l, err := tr.nodes[3].eng.RaftLog(g)
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.FirstIndex()
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	deadline := time.Now().Add(trioTimeout)
	for first() <= last1+1 {
		if time.Now().After(deadline) {
			t.Fatalf("node 3 did not compact its log of the queue (first index %d, node 1 has up to %d): the test would not install a snapshot", first(), last1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	tr.down(2)
	last3 := tr.nodes[3].host.Group(g).Applied()

	tr.up(1)
	v = tr.serve(1)
	// Until node 1 has the snapshot, its queue rightly holds what it recovered (at least once);
	// once installed, the consumed messages must be gone.
	if q, err = v.Queue("behind", 0); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(trioTimeout); q.group.Applied() < last3; {
		if time.Now().After(deadline) {
			t.Fatalf("node 1 applied %d of node 3's %d entries", q.group.Applied(), last3)
		}
		time.Sleep(5 * time.Millisecond)
	}
	tr.lead(1, g)
	getAllOf(t, v, "behind", bodies(10, 60), again)
	if m := tr.nodes[1].host.Metrics(); m.SnapshotsReceived == 0 {
		t.Fatalf("node 1 caught up without a snapshot: the test did not test a snapshot installed while running")
	}
}

// The queue log hands the running queue exactly the messages it will not add itself: before
// the queue starts nothing (recover takes the live records), afterwards another instance's
// entries and this instance's own entries whose proposal failed (forgotten), never an own
// entry whose proposal will get Apply's result.
func TestQueueLogHandsOverWhatTheQueueDidNotPropose(t *testing.T) {
	l, other := newQueueLog(), newQueueLog()
	theirs := func(body string) []byte { return entryData(t)(other.enqueueEntry(1, persistent(body))) }
	if res := l.Apply(1, theirs("before")); res != packRef(1, 0) {
		t.Fatalf("apply: %v", res)
	}
	woken := 0
	sm := queue.New(queue.Config{Name: "q", MessageTTL: -1, MaxLength: -1, MaxLengthBytes: -1})
	l.recover(sm, func() { woken++ })
	if sm.Len() != 1 {
		t.Fatalf("recovered %d messages, want 1", sm.Len())
	}
	if late, _, _ := l.takeLate(true); len(late) != 0 {
		t.Fatalf("handed over %d before anything committed after the start", len(late))
	}

	mine, _, err := l.enqueueEntry(2, persistent("mine"))
	if err != nil {
		t.Fatal(err)
	}
	failed, failedToken, err := l.enqueueBatchEntry(3, batchOf("lost-a", "lost-b"))
	if err != nil {
		t.Fatal(err)
	}
	l.forget(failedToken) // its proposal failed: the publisher was told so
	l.Apply(2, bytes.Clone(mine[cluster.EntryHeaderRoom:]))
	l.Apply(3, theirs("other"))
	l.Apply(4, bytes.Clone(failed[cluster.EntryHeaderRoom:]))
	if late, _, waiting := l.takeLate(false); late != nil || !waiting {
		t.Fatalf("a queue whose node does not lead took %d messages (waiting %v)", len(late), waiting)
	}
	late, gone, _ := l.takeLate(true)
	var refs []uint64
	for _, r := range late {
		refs = append(refs, r.ref)
	}
	if want := []uint64{packRef(3, 0), packRef(4, 0), packRef(4, 1)}; !slices.Equal(refs, want) || gone != nil {
		t.Fatalf("handed over %v (gone %v), want %v", refs, gone, want)
	}
	if woken != 2 {
		t.Fatalf("woken %d times, want 2", woken)
	}
	if len(l.live) != 5 || len(l.pending) != 0 {
		t.Fatalf("%d live records, %d pending, want 5 and 0", len(l.live), len(l.pending))
	}
}
