package broker

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/cluster"
	"github.com/parleymq/parley/storage"
)

// node is a broker over real storage in dir, as cmd/parley builds it.
type node struct {
	eng  *storage.Engine
	host *cluster.Host
	b    *Broker
	stop context.CancelFunc
}

func openNode(t testing.TB, dir string, opts ...func(*Config)) *node {
	t.Helper()
	return openNodeHost(t, dir, cluster.Config{NodeID: 1, SnapshotEntries: 50}, opts...)
}

// openNodeHost is openNode with the host's configuration given.
func openNodeHost(t testing.TB, dir string, hcfg cluster.Config, opts ...func(*Config)) *node {
	t.Helper()
	eng, err := storage.Open(dir, storage.DefaultOptions(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	host, err := cluster.NewHost(hcfg, eng, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := host.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Host = host
	for _, o := range opts {
		o(&cfg)
	}
	b, err := New(zap.NewNop(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &node{eng: eng, host: host, b: b, stop: cancel}
}

func (n *node) close() {
	n.b.Close()
	n.host.Stop()
	n.stop()
	_ = n.eng.Close()
}

func persistent(body string) *message.Message {
	m := msg("", "", body)
	m.Properties.Flags = message.FlagDeliveryMode
	m.Properties.DeliveryMode = 2
	return m
}

func TestDurableQueueSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir)
	v, _ := n.b.VHost("/")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := v.DeclareQueue(meta.QueueDef{Name: "dq", Durable: true}, false)
	must(err)
	_, err = v.DeclareQueue(meta.QueueDef{Name: "tq"}, false)
	must(err)
	must(v.DeclareExchange(meta.ExchangeDef{Name: "dx", Type: "direct", Durable: true}, false))
	must(v.Bind(meta.BindingDef{Source: "dx", Dest: exchange.Dest{Name: "dq"}, Key: "k"}, 0))

	// 120 persistent messages (past SnapshotEntries, so recovery goes through a snapshot and a
	// log suffix), one transient, and an ack of the first 10.
	const total = 120
	confirmed := make(chan bool, total+1)
	for i := 0; i < total; i++ {
		m := persistent(fmt.Sprint(i))
		m.Exchange, m.RoutingKey = "dx", "k"
		if routed, err := v.Publish(m, func(ok bool) { confirmed <- ok }, nil); !routed || err != nil {
			t.Fatalf("publish %d: routed=%v err=%v", i, routed, err)
		}
	}
	v.Publish(msg("", "dq", "transient"), func(ok bool) { confirmed <- ok }, nil)
	for i := 0; i <= total; i++ {
		if !<-confirmed {
			t.Fatal("nack")
		}
	}
	q, _ := v.Queue("dq", 0)
	var ids []queue.DeliveryID
	for i := 0; i < 10; i++ {
		d, _, ok := q.Get(false)
		if !ok || string(d.Msg.Body) != fmt.Sprint(i) {
			t.Fatalf("get %d: ok=%v body=%q", i, ok, d.Msg.Body)
		}
		ids = append(ids, d.ID)
	}
	q.Settle(ids, queue.Ack)
	// One more delivered but not acked: it comes back, redelivered.
	if d, _, ok := q.Get(false); !ok || string(d.Msg.Body) != "10" {
		t.Fatalf("get 10: %v %q", ok, d.Msg.Body)
	}
	q.Get(true) // forces the settle's batch through before closing
	n.close()

	n = openNode(t, dir)
	defer n.close()
	v, _ = n.b.VHost("/")
	if _, err := v.Queue("tq", 0); err == nil {
		t.Fatal("non-durable queue survived a restart")
	}
	q, err = v.Queue("dq", 0)
	must(err)
	// 11 was taken with no-ack before the restart, so 10 and 12.. remain.
	want := []string{"10"}
	for i := 12; i < total; i++ {
		want = append(want, fmt.Sprint(i))
	}
	for i, w := range want {
		d, _, ok := q.Get(true)
		if !ok {
			t.Fatalf("message %d (%s) lost", i, w)
		}
		if string(d.Msg.Body) != w || !d.Redelivered || !d.Msg.Persistent() {
			t.Fatalf("message %d: body %q redelivered=%v, want %q redelivered", i, d.Msg.Body, d.Redelivered, w)
		}
	}
	if d, _, ok := q.Get(true); ok {
		t.Fatalf("unexpected message after recovery: %q (the transient one must be gone)", d.Msg.Body)
	}
	// The durable exchange and its binding are back.
	m := persistent("after")
	m.Exchange, m.RoutingKey = "dx", "k"
	if routed, err := v.Publish(m, nil, nil); !routed || err != nil {
		t.Fatalf("durable binding lost: routed=%v err=%v", routed, err)
	}
}

func TestDeletedDurableQueueStaysDeleted(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir)
	v, _ := n.b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "gone", Durable: true}, false); err != nil {
		t.Fatal(err)
	}
	done := make(chan bool, 1)
	m := persistent("x")
	m.RoutingKey = "gone"
	v.Publish(m, func(ok bool) { done <- ok }, nil)
	<-done
	if _, err := v.DeleteQueue("gone", false, false, 0); err != nil {
		t.Fatal(err)
	}
	n.close()
	n = openNode(t, dir)
	defer n.close()
	v, _ = n.b.VHost("/")
	if _, err := v.Queue("gone", 0); err == nil {
		t.Fatal("deleted durable queue came back")
	}
	// Redeclared, it starts empty: its old log was destroyed.
	if st, err := v.DeclareQueue(meta.QueueDef{Name: "gone", Durable: true}, false); err != nil || st.Messages != 0 {
		t.Fatalf("redeclare: %+v %v", st, err)
	}
}

// A durable queue deleted and declared again gets a raft group of its own, not its
// predecessor's (a replica that missed the delete may still hold that one's log); the old
// group's log is destroyed, and a restart finds the new group from the metadata.
func TestRedeclaredDurableQueueGetsNewGroup(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir)
	v, _ := n.b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "again", Durable: true}, false); err != nil {
		t.Fatal(err)
	}
	old := groupOf(t, n, "again")
	if _, err := v.DeleteQueue("again", false, false, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "again", Durable: true}, false); err != nil {
		t.Fatal(err)
	}
	cur := groupOf(t, n, "again")
	if cur == old {
		t.Fatalf("redeclared queue reuses group %d", old)
	}
	done := make(chan bool, 1)
	m := persistent("new")
	m.RoutingKey = "again"
	v.Publish(m, func(ok bool) { done <- ok }, nil)
	if !<-done {
		t.Fatal("publish not confirmed")
	}
	stored, err := n.host.StoredGroups()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(stored, old) || !slices.Contains(stored, cur) {
		t.Fatalf("stored groups %v: want %d and not %d", stored, cur, old)
	}
	n.close()
	n = openNode(t, dir)
	defer n.close()
	if g := groupOf(t, n, "again"); g != cur {
		t.Fatalf("after a restart the queue is in group %d, want %d", g, cur)
	}
	v, _ = n.b.VHost("/")
	q, _ := v.Queue("again", 0)
	if d, _, ok := q.Get(true); !ok || string(d.Msg.Body) != "new" {
		t.Fatalf("after a restart: get %v", ok)
	}
}
