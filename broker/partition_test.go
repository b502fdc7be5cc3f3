package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/cluster"
)

func withPartitions(n int) func(*Config) { return func(c *Config) { c.PartitionGroups = n } }

// publishTo publishes persistent messages to a queue through the default exchange and waits
// for every confirm.
func publishTo(t *testing.T, v *VHost, q string, bodies ...string) {
	t.Helper()
	done := make(chan bool, len(bodies))
	for _, b := range bodies {
		m := persistent(b)
		m.RoutingKey = q
		if routed, err := v.Publish(m, func(ok bool) { done <- ok }, nil); !routed || err != nil {
			t.Fatalf("publish to %s: routed=%v err=%v", q, routed, err)
		}
	}
	for range bodies {
		select {
		case ok := <-done:
			if !ok {
				t.Fatalf("publish to %s nacked", q)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("publish to %s not confirmed", q)
		}
	}
}

// getAll takes every ready message of q with no-ack and returns their bodies.
func getAll(t *testing.T, v *VHost, name string) []string {
	t.Helper()
	q, err := v.Queue(name, 0)
	if err != nil {
		t.Fatalf("queue %s: %v", name, err)
	}
	var out []string
	for {
		d, _, ok := q.Get(true)
		if !ok {
			return out
		}
		out = append(out, string(d.Msg.Body))
	}
}

// runningGroups counts the raft groups the node's host runs.
func runningGroups(t *testing.T, n *node) []uint64 {
	t.Helper()
	st, err := n.host.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, g := range st {
		ids = append(ids, g.ID)
	}
	return ids
}

// Many packed durable queues share the partition groups: the host runs group 0 and at most
// PartitionGroups more, however many queues there are; each keeps its messages and its state
// records across a restart, and what was acknowledged stays gone.
func TestPackedQueuesShareFewGroups(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir, withPartitions(4))
	v, _ := n.b.VHost("/")
	const queues = 60
	for i := range queues {
		name := fmt.Sprintf("mqtt.s.dev%d", i)
		if _, err := v.DeclareQueue(meta.QueueDef{Name: name, Durable: true, Packed: true}, false); err != nil {
			t.Fatal(err)
		}
		publishTo(t, v, name, fmt.Sprintf("%d-a", i), fmt.Sprintf("%d-b", i))
		q, _ := v.Queue(name, 0)
		if err := q.SetState(context.Background(), "k", []byte(name)); err != nil {
			t.Fatal(err)
		}
		if !meta.IsPartitionGroup(q.group.ID()) || q.def.Partition != q.group.ID() {
			t.Fatalf("queue %s in group %d, partition %d", name, q.group.ID(), q.def.Partition)
		}
	}
	// An ordinary durable queue keeps a group of its own.
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "amqp-q", Durable: true}, false); err != nil {
		t.Fatal(err)
	}
	publishTo(t, v, "amqp-q", "x")
	if g := groupOf(t, n, "amqp-q"); meta.IsPartitionGroup(g) {
		t.Fatalf("AMQP durable queue packed into partition group %d", g)
	}
	if gs := runningGroups(t, n); len(gs) > 1+4+1 {
		t.Fatalf("%d queues run %d groups (%v), want at most 6", queues+1, len(gs), gs)
	}
	// Ack the first message of the even queues, take the second with no-ack, publish again.
	for i := 0; i < queues; i += 2 {
		q, _ := v.Queue(fmt.Sprintf("mqtt.s.dev%d", i), 0)
		d, _, ok := q.Get(false)
		if !ok {
			t.Fatalf("queue %d empty", i)
		}
		q.Settle([]queue.DeliveryID{d.ID}, queue.Ack)
		q.Get(true) // takes (no-ack) the second; the settle's batch goes through before it returns
		publishTo(t, v, fmt.Sprintf("mqtt.s.dev%d", i), fmt.Sprintf("%d-b", i))
	}
	n.close()

	n = openNode(t, dir, withPartitions(4))
	defer n.close()
	v, _ = n.b.VHost("/")
	for i := range queues {
		name := fmt.Sprintf("mqtt.s.dev%d", i)
		want := []string{fmt.Sprintf("%d-a", i), fmt.Sprintf("%d-b", i)}
		if i%2 == 0 {
			want = []string{fmt.Sprintf("%d-b", i)} // the one published again
		}
		q, _ := v.Queue(name, 0)
		if got := q.State()["k"]; string(got) != name {
			t.Fatalf("queue %s: state record %q after a restart", name, got)
		}
		if got := getAll(t, v, name); !slices.Equal(got, want) {
			t.Fatalf("queue %s after a restart: %q, want %q", name, got, want)
		}
	}
	if got := getAll(t, v, "amqp-q"); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("own-group queue after a restart: %q", got)
	}
	if gs := runningGroups(t, n); len(gs) > 6 {
		t.Fatalf("after a restart %d groups run: %v", len(gs), gs)
	}
}

// A deleted packed queue (an expired session) leaves its partition: its state goes on every
// replica (a partDrop entry), a restart does not bring it back, and its messages no longer
// keep the partition's log: once the other queues of the partition have moved on, the log is
// compacted past them.
func TestDeletedPackedQueueLeavesPartition(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir, withPartitions(1))
	v, _ := n.b.VHost("/")
	for _, name := range []string{"gone", "busy"} {
		if _, err := v.DeclareQueue(meta.QueueDef{Name: name, Durable: true, Packed: true}, false); err != nil {
			t.Fatal(err)
		}
	}
	var bodies []string
	// More than a snapshot copies in to unpin the log (inlineMaxMessages): left in the
	// partition, these would hold its log back.
	for i := range inlineMaxMessages + 100 {
		bodies = append(bodies, fmt.Sprint("g", i))
	}
	publishTo(t, v, "gone", bodies...)
	gq, _ := v.Queue("gone", 0)
	tag, part := gq.def.Group, gq.part
	first := refIndex(gq.log.live[0].ref)
	if _, err := v.DeleteQueue("gone", false, false, 0); err != nil {
		t.Fatal(err)
	}
	// Traffic on the other queue, consumed, well past SnapshotEntries (50).
	for i := range 200 {
		publishTo(t, v, "busy", fmt.Sprint(i))
		if got := getAll(t, v, "busy"); len(got) != 1 {
			t.Fatalf("busy: %q", got)
		}
	}
	waitFor(t, "the partition's log compacted past the deleted queue's messages", func() bool {
		_, err := part.log.subs[partTestAnyTag(part)].reader.Read(first, first+1, 1, func(uint64, []byte) {})
		return errors.Is(err, cluster.ErrCompacted)
	})
	if part.log.sub(tag) != nil {
		t.Fatal("deleted queue still in its partition")
	}
	n.close()
	n = openNode(t, dir, withPartitions(1))
	defer n.close()
	v, _ = n.b.VHost("/")
	if _, err := v.Queue("gone", 0); err == nil {
		t.Fatal("deleted packed queue came back")
	}
	for _, p := range n.b.partitions {
		if p.log.sub(tag) != nil {
			t.Fatal("deleted queue back in its partition after a restart")
		}
	}
	// Declared again: a new incarnation, empty.
	if st, err := v.DeclareQueue(meta.QueueDef{Name: "gone", Durable: true, Packed: true}, false); err != nil || st.Messages != 0 {
		t.Fatalf("redeclare: %+v %v", st, err)
	}
}

// partTestAnyTag returns the tag of some queue of the partition (test helper; the partition
// must hold one).
func partTestAnyTag(p *partition) uint64 {
	p.log.mu.Lock()
	defer p.log.mu.Unlock()
	for t := range p.log.subs {
		return t
	}
	return 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A data directory written before partitions (PartitionGroups 0 stands for the old build:
// every durable queue in its own group, and records without a partition) keeps its queues in
// their own groups, with their messages; only queues declared afterwards are packed.
func TestQueuesBeforePartitionsKeepTheirGroup(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir, withPartitions(0))
	v, _ := n.b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "mqtt.s.old", Durable: true, Packed: true}, false); err != nil {
		t.Fatal(err)
	}
	publishTo(t, v, "mqtt.s.old", "1", "2")
	old := groupOf(t, n, "mqtt.s.old")
	if meta.IsPartitionGroup(old) {
		t.Fatal("packed with partitions off")
	}
	n.close()

	n = openNode(t, dir, withPartitions(16))
	v, _ = n.b.VHost("/")
	if g := groupOf(t, n, "mqtt.s.old"); g != old {
		t.Fatalf("old queue moved from group %d to %d", old, g)
	}
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "mqtt.s.new", Durable: true, Packed: true}, false); err != nil {
		t.Fatal(err)
	}
	publishTo(t, v, "mqtt.s.new", "3")
	if g := groupOf(t, n, "mqtt.s.new"); !meta.IsPartitionGroup(g) {
		t.Fatalf("new queue in group %d, not a partition", g)
	}
	n.close()
	n = openNode(t, dir, withPartitions(16))
	defer n.close()
	v, _ = n.b.VHost("/")
	if got := getAll(t, v, "mqtt.s.old"); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("old queue: %q", got)
	}
	if got := getAll(t, v, "mqtt.s.new"); !slices.Equal(got, []string{"3"}) {
		t.Fatalf("new queue: %q", got)
	}
}

// A partition snapshot decodes back to the queues' snapshots; a truncated one is refused.
func TestPartitionSnapshotRoundTrip(t *testing.T) {
	p := newPartitionLog()
	for _, tag := range []uint64{meta.QueueGroupBase + 1, meta.QueueGroupBase + 7} {
		if res := p.Apply(1, partEntry(partOpen, tag)); res != nil {
			t.Fatal(res)
		}
	}
	if res := p.Apply(2, append(partEntry(partQueueEntry, meta.QueueGroupBase+7), stateEntry("k", []byte("v"))...)); res != nil {
		t.Fatal(res)
	}
	if res := p.Apply(3, append(partEntry(partQueueEntry, meta.QueueGroupBase+9), stateEntry("k", []byte("v"))...)); !errors.Is(res.(error), errNotInPartition) {
		t.Fatalf("entry of a queue not in the partition: %v", res)
	}
	data, err := p.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	q := newPartitionLog()
	if err := q.Restore(data); err != nil {
		t.Fatal(err)
	}
	if got := q.tags(); !slices.Equal(got, []uint64{meta.QueueGroupBase + 1, meta.QueueGroupBase + 7}) {
		t.Fatalf("restored tags %v", got)
	}
	if got := q.sub(meta.QueueGroupBase + 7).stateCopy()["k"]; string(got) != "v" {
		t.Fatalf("restored state %q", got)
	}
	for i := range len(data) - 1 {
		if err := newPartitionLog().Restore(data[:i]); err == nil {
			t.Fatalf("snapshot cut at %d restored", i)
		}
	}
}

// A packed queue that expires (x-expires: an MQTT session's expiry interval) leaves its
// partition as a deleted one does.
func TestExpiredPackedQueueLeavesPartition(t *testing.T) {
	n := openNode(t, t.TempDir(), withPartitions(2))
	defer n.close()
	v, _ := n.b.VHost("/")
	def := meta.QueueDef{Name: "mqtt.s.expiring", Durable: true, Packed: true, Args: message.Table{"x-expires": int64(200)}}
	if _, err := v.DeclareQueue(def, false); err != nil {
		t.Fatal(err)
	}
	publishTo(t, v, def.Name, "left behind")
	q, _ := v.Queue(def.Name, 0)
	part, tag := q.part, q.def.Group
	if part == nil || part.log.sub(tag) == nil {
		t.Fatal("not in a partition")
	}
	waitFor(t, "the queue to expire and leave its partition", func() bool {
		_, err := v.Queue(def.Name, 0)
		return err != nil && part.log.sub(tag) == nil
	})
}

// FuzzPartitionLog: no snapshot makes Restore panic, what decodes encodes and decodes back
// alike, and no entry makes Apply panic.
func FuzzPartitionLog(f *testing.F) {
	p := newPartitionLog()
	p.Apply(1, partEntry(partOpen, meta.QueueGroupBase+1))
	p.Apply(2, append(partEntry(partQueueEntry, meta.QueueGroupBase+1), stateEntry("k", []byte("v"))...))
	snap, err := p.Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(snap)
	f.Add(encodePartitionSnapshot(nil, nil))
	f.Add(partEntry(partDrop, meta.QueueGroupBase+1))
	f.Add(append(partEntry(partQueueEntry, meta.QueueGroupBase+1), removeEntry(0, []uint64{packRef(3, 0)})...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if tags, snaps, err := decodePartitionSnapshot(data); err == nil {
			again := encodePartitionSnapshot(tags, snaps)
			t2, s2, err := decodePartitionSnapshot(again)
			if err != nil || !slices.Equal(t2, tags) || len(s2) != len(snaps) {
				t.Fatalf("re-encoded snapshot: %v %v %v", err, t2, tags)
			}
		}
		_ = newPartitionLog().Restore(data)
		q := newPartitionLog()
		q.Apply(1, partEntry(partOpen, meta.QueueGroupBase+1))
		_ = q.Apply(2, data)
	})
}
