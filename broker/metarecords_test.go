package broker

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/cluster"
	"github.com/parleymq/parley/storage"
)

// Setting n retained messages one by one writes O(n) bytes to group 0, not O(n²): each entry
// holds the one record that changed, and snapshots (at the host's default interval, spaced by
// metaLog's SnapshotInterval) are bounded by the entries. Measured as the bytes the storage
// engine committed (only group 0 changes here: no queue is declared), compared with a single
// record's size. A restart restores them all.
func TestRetainedWritesAreLinear(t *testing.T) {
	n := 5000
	if testing.Short() {
		n = 1000
	}
	dir := t.TempDir()
	nd := openNodeHost(t, dir, cluster.Config{NodeID: 1})
	v, _ := nd.b.VHost("/")
	topic := func(i int) string { return fmt.Sprintf("site/%05d/temperature", i) }
	body := func(i int) string { return fmt.Sprintf("temperature %d", i) }
	before := nd.eng.Metrics().Bytes
	for i := range n {
		if err := v.SetRetained(topic(i), msg("amq.topic", "", body(i))); err != nil {
			t.Fatal(err)
		}
	}
	written := nd.eng.Metrics().Bytes - before

	one := meta.New()
	_, _ = one.TakeChanges()
	enc, err := message.AppendBinary(nil, msg("amq.topic", "", body(n-1)))
	if err != nil {
		t.Fatal(err)
	}
	one.SetRetained("/", topic(n-1), enc)
	cs, _ := one.TakeChanges()
	record := len(meta.EncodeChanges(cs))
	t.Logf("%d retained messages wrote %d bytes to storage (%d per message; one record's entry is %d bytes)",
		n, written, written/uint64(n), record)
	if limit := uint64(50 * record * n); written > limit {
		t.Fatalf("%d retained messages wrote %d bytes, above 50 × %d-byte record × n = %d: not linear", n, written, record, limit)
	}
	nd.close()

	nd = openNodeHost(t, dir, cluster.Config{NodeID: 1})
	defer nd.close()
	v, _ = nd.b.VHost("/")
	got := v.RetainedMessages(func(string) bool { return true })
	if len(got) != n {
		t.Fatalf("after a restart %d retained messages, want %d", len(got), n)
	}
	for i := range n {
		if m := got[topic(i)]; m == nil || string(m.Body) != body(i) {
			t.Fatalf("after a restart, %s holds %v", topic(i), m)
		}
	}
}

// Data written before records (group 0's entries were the whole metadata as JSON) recovers:
// the broker reads the old entry, writes record changes after it, takes snapshots of records,
// and a restart finds both the old metadata and the new.
func TestLegacyMetadataEntryRecovers(t *testing.T) {
	legacy, err := os.ReadFile("meta/testdata/legacy-snapshot.json")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	func() { // a node of the old format: group 0 holds one whole-metadata entry
		eng, err := storage.Open(dir, storage.DefaultOptions(), zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = eng.Close() }()
		host, err := cluster.NewHost(cluster.Config{NodeID: 1}, eng, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := host.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer host.Stop()
		g, err := host.AddGroup(ctx, metaGroup, &rawLog{})
		if err != nil {
			t.Fatal(err)
		}
		f, err := g.Propose(ctx, legacy)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}()

	check := func(n *node, extra int) {
		t.Helper()
		v, ok := n.b.VHost("v2")
		if !ok {
			t.Fatal("vhost v2 not recovered")
		}
		if got := v.RetainedMessages(func(string) bool { return true }); len(got) != 0 {
			t.Fatalf("v2 retained %v (the legacy test data holds raw bytes, not a message)", got)
		}
		root, _ := n.b.VHost("/")
		for _, name := range []string{"dq", "dq2"} {
			if _, err := root.Queue(name, 0); err != nil {
				t.Fatalf("legacy queue %s: %v", name, err)
			}
		}
		for i := range extra {
			if _, err := root.Queue(fmt.Sprintf("new%d", i), 0); err != nil {
				t.Fatalf("queue new%d: %v", i, err)
			}
		}
		if got := groupOf(t, n, "dq2"); got != meta.QueueGroupBase+3 {
			t.Fatalf("legacy queue dq2 in group %d", got)
		}
		if extra > 0 {
			if m := root.RetainedMessages(func(string) bool { return true })["status"]; m == nil || string(m.Body) != "149" {
				t.Fatalf("retained status %v", m)
			}
		}
	}
	// SnapshotEntries 50, and metaLog asks for at least as many entries as records between two
	// snapshots: the declares and the updates of one retained message below take snapshots of
	// records.
	n := openNode(t, dir)
	check(n, 0)
	v, _ := n.b.VHost("/")
	const extra = 20
	for i := range extra {
		if _, err := v.DeclareQueue(meta.QueueDef{Name: fmt.Sprintf("new%d", i), Durable: true}, false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 150 {
		if err := v.SetRetained("status", msg("amq.topic", "status", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if n.host.Metrics().Snapshots == 0 {
		t.Fatal("no snapshot taken")
	}
	n.close()
	n = openNode(t, dir)
	defer n.close()
	check(n, extra)
	v, _ = n.b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "another", Durable: true}, false); err != nil {
		t.Fatal(err)
	}
	if g := groupOf(t, n, "another"); g != meta.QueueGroupBase+3+extra+1 {
		t.Fatalf("next group after the legacy counter and %d declares: %d", extra, g)
	}
}

// rawLog is a state machine that keeps nothing: it writes entries as an old node did.
type rawLog struct{}

func (rawLog) Apply(uint64, []byte) any  { return nil }
func (rawLog) Snapshot() ([]byte, error) { return nil, nil }
func (rawLog) Restore([]byte) error      { return nil }

// A standby's group 0 stand-in follows the durable queues' groups from the record changes: it
// reports the whole list after its first entry, after each entry that touched a queue and after
// a snapshot, and stays quiet for the others (a retained message).
func TestMetaStandInFollowsQueueGroups(t *testing.T) {
	var lists [][]uint64
	sm := MetaStandIn(func(ids []uint64, err error) {
		if err != nil {
			t.Fatal(err)
		}
		lists = append(lists, ids)
	})
	s := meta.New()
	index := uint64(0)
	apply := func() {
		t.Helper()
		cs, err := s.TakeChanges()
		if err != nil {
			t.Fatal(err)
		}
		index++
		if res := sm.Apply(index, meta.EncodeChanges(cs)); res != nil {
			t.Fatalf("apply: %v", res)
		}
	}
	expect := func(n int, want ...uint64) {
		t.Helper()
		if len(lists) != n {
			t.Fatalf("%d lists, want %d: %v", len(lists), n, lists)
		}
		if got := lists[n-1]; len(got) != len(want) || (len(want) > 0 && !slices.Equal(got, want)) {
			t.Fatalf("list %v, want %v", got, want)
		}
	}
	s.SetRetained("/", "a", []byte("m"))
	apply()
	expect(1)
	s.SetRetained("/", "b", []byte("m"))
	apply()
	expect(1)
	a, _, _ := s.DeclareQueue(meta.QueueDef{VHost: "/", Name: "a", Durable: true}, false)
	apply()
	expect(2, a.Group)
	b, _, _ := s.DeclareQueue(meta.QueueDef{VHost: "/", Name: "b", Durable: true}, false)
	_, _, _ = s.DeclareQueue(meta.QueueDef{VHost: "/", Name: "t"}, false)
	apply()
	expect(3, a.Group, b.Group)
	if _, err := s.DeleteQueue("/", "a", 0); err != nil {
		t.Fatal(err)
	}
	apply()
	expect(4, b.Group)
	snap, err := sm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	other := MetaStandIn(func(ids []uint64, err error) { lists = append(lists, ids) })
	if err := other.Restore(snap); err != nil {
		t.Fatal(err)
	}
	expect(5, b.Group)
	legacy, err := os.ReadFile("meta/testdata/legacy-snapshot.json")
	if err != nil {
		t.Fatal(err)
	}
	if res := other.Apply(7, legacy); res != nil {
		t.Fatal(res)
	}
	expect(6, meta.QueueGroupBase+1, meta.QueueGroupBase+3)
}
