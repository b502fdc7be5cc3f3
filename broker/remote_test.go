package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/cluster"
	"github.com/parleymq/parley/storage"
)

// spreadNode is one node of a three-node test cluster over real loopback TCP and real Pebble:
// node 1 serves (its broker has the metadata and the proxies), nodes 2 and 3 host queues.
type spreadNode struct {
	id   uint64
	eng  *storage.Engine
	tr   *cluster.TCPTransport
	rpc  *cluster.RPC
	host *cluster.Host
	b    *Broker
	down bool
	// members is what node 1's Spread.Nodes answers (nodes 2 and 3 unless a test changes it).
	members atomic.Pointer[[]uint64]
}

// kill stops the node abruptly as far as its peers can tell: its connections go first.
func (n *spreadNode) kill() {
	if n.down {
		return
	}
	n.down = true
	n.tr.Close()
	n.rpc.Close()
	n.host.Stop()
	n.b.Close()
	_ = n.eng.Close()
}

func spreadLog(t *testing.T) *zap.Logger { return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)) }

func startSpreadCluster(t *testing.T, ctx context.Context) map[uint64]*spreadNode {
	t.Helper()
	peers := map[uint64]string{}
	lns := map[uint64]net.Listener{}
	for id := uint64(1); id <= 3; id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[id], peers[id] = ln, ln.Addr().String()
	}
	nodes := map[uint64]*spreadNode{}
	for id := uint64(1); id <= 3; id++ {
		n := &spreadNode{id: id}
		var err error
		if n.eng, err = storage.Open(t.TempDir(), storage.DefaultOptions(), zap.NewNop()); err != nil {
			t.Fatal(err)
		}
		if n.tr, err = cluster.NewTCPTransport(cluster.TCPConfig{NodeID: id, Listener: lns[id], Peers: peers,
			MaxBackoff: 100 * time.Millisecond}, spreadLog(t)); err != nil {
			t.Fatal(err)
		}
		n.rpc = cluster.NewRPC(n.tr, spreadLog(t))
		if n.host, err = cluster.NewHost(cluster.Config{NodeID: id, Peers: peers, Transport: n.tr,
			TickInterval: 20 * time.Millisecond, SnapshotEntries: 40}, n.eng, spreadLog(t)); err != nil {
			t.Fatal(err)
		}
		if err := n.host.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		n.tr.Start(n.host)
		nodes[id] = n
		t.Cleanup(n.kill)
	}
	for _, n := range nodes {
		spreadWait(t, ctx, "peers connected", func() bool {
			for _, p := range n.tr.Peers() {
				if !p.Connected {
					return false
				}
			}
			return true
		})
	}
	// Nodes 2 and 3 keep group 0's replica (as cmd/parley's standbys do) and host queues.
	for _, id := range []uint64{2, 3} {
		n := nodes[id]
		if _, err := n.host.AddReplica(ctx, MetaGroup, nil); err != nil {
			t.Fatal(err)
		}
		b, err := NewQueueHost(spreadLog(t), Config{Host: n.host})
		if err != nil {
			t.Fatal(err)
		}
		b.ServeQueues(n.rpc)
		n.b = b
	}
	cfg := DefaultConfig()
	cfg.Host = nodes[1].host
	nodes[1].members.Store(&[]uint64{2, 3})
	cfg.Spread = &Spread{RPC: nodes[1].rpc, Nodes: func() []uint64 { return *nodes[1].members.Load() },
		Reachable: nodes[1].tr.Connected}
	b, err := New(spreadLog(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	nodes[1].b = b
	return nodes
}

// declareSpread declares a durable queue on node 1 and gives the third node its replica, as a
// standby does when it applies the declaration.
func declareSpread(t *testing.T, ctx context.Context, nodes map[uint64]*spreadNode, name string) *Queue {
	t.Helper()
	v, _ := nodes[1].b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: name, Durable: true}, false); err != nil {
		t.Fatalf("declare %s: %v", name, err)
	}
	q, _ := v.LookupQueue(name)
	// A connection that flaps (they do while the nodes start) makes the proxy re-attach.
	spreadWait(t, ctx, name+" attached", func() bool { return q.remote == nil || q.Host() != 0 })
	host := q.Host()
	if q.remote == nil || host == 0 || host == 1 {
		t.Fatalf("queue %s: host %d, want it hosted on node 2 or 3", name, host)
	}
	for _, id := range []uint64{2, 3} {
		if id != host && nodes[id].host.Group(q.group.ID()) == nil {
			if _, err := nodes[id].host.AddReplica(ctx, q.group.ID(), QueueStandIn()); err != nil {
				t.Fatal(err)
			}
		}
	}
	return q
}

func spreadPublish(t *testing.T, v *VHost, queueName string, bodies []string) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	nacks := 0
	for _, body := range bodies {
		m := persistent(body)
		m.RoutingKey = queueName
		wg.Add(1)
		if _, err := v.Publish(m, func(ok bool) {
			if !ok {
				mu.Lock()
				nacks++
				mu.Unlock()
			}
			wg.Done()
		}, nil); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if nacks > 0 {
		t.Fatalf("%d of %d publishes nacked", nacks, len(bodies))
	}
}

func spreadBodies(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

func spreadWait(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestRemoteQueueOperations drives two durable queues placed on nodes 2 and 3 from node 1's
// broker: confirmed publishes (a confirm only after the host's commit), consume with prefetch
// and acks, basic.get, requeue, an exclusive consumer's refusal, purge and delete.
func TestRemoteQueueOperations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes := startSpreadCluster(t, ctx)
	v, _ := nodes[1].b.VHost("/")
	q1 := declareSpread(t, ctx, nodes, "q1")
	q2 := declareSpread(t, ctx, nodes, "q2")
	if q1.Host() == q2.Host() {
		t.Fatalf("both queues on node %d: not spread", q1.Host())
	}
	// The host leads the group: its process writes the log.
	spreadWait(t, ctx, "node 1 sees q1's host lead its group", func() bool { return q1.group.Leader() == q1.Host() })
	if g := nodes[q1.Host()].host.Group(q1.group.ID()); g == nil || !g.IsLeader() {
		t.Fatalf("node %d does not lead q1's group", q1.Host())
	}

	const n = 60
	want := spreadBodies("m", n)
	spreadPublish(t, v, "q1", want)
	// A confirm means committed on a majority: the host's group has applied every enqueue.
	if got := q1.Len(); got != n {
		t.Fatalf("q1 holds %d messages after %d confirms", got, n)
	}
	st, err := v.DeclareQueue(meta.QueueDef{Name: "q1", Durable: true}, true)
	if err != nil || st.Messages != n {
		t.Fatalf("passive declare: %+v, %v", st, err)
	}

	// basic.get, then requeue it: it comes again, redelivered, to the consumer below.
	d, remaining, ok := q1.Get(false)
	if !ok || string(d.Msg.Body) != want[0] || remaining != n-1 {
		t.Fatalf("get: %v %q remaining %d", ok, d.Msg.Body, remaining)
	}
	q1.Settle([]queue.DeliveryID{d.ID}, queue.Requeue)

	s := newSink()
	id, err := q1.Consume(ConsumeOptions{Prefetch: 10}, s)
	if err != nil {
		t.Fatal(err)
	}
	if q1.ConsumerCount() != 1 {
		t.Fatalf("consumer count %d", q1.ConsumerCount())
	}
	var got []string
	acked := 0
	for acked < n {
		ds := s.wait(t, acked+1)
		var ids []queue.DeliveryID
		for _, d := range ds[acked:] {
			got = append(got, string(d.Msg.Body))
			ids = append(ids, d.ID)
			if string(d.Msg.Body) == want[0] && !d.Redelivered {
				t.Errorf("the requeued message came back not marked redelivered")
			}
		}
		if un := len(ds) - acked; un > 10 {
			t.Fatalf("%d unacked deliveries with a prefetch of 10", un)
		}
		acked = len(ds)
		q1.Settle(ids, queue.Ack)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("consumed %v, want %v", got, want)
	}
	spreadWait(t, ctx, "q1 empty", func() bool { return q1.Len() == 0 })
	q1.Cancel(id)
	if q1.ConsumerCount() != 0 {
		t.Fatalf("consumer count %d after cancel", q1.ConsumerCount())
	}

	// Exclusive consumer on q2: a second consumer is refused with RabbitMQ's code.
	s2 := newSink()
	if _, err := q2.Consume(ConsumeOptions{Exclusive: true}, s2); err != nil {
		t.Fatal(err)
	}
	_, err = q2.Consume(ConsumeOptions{}, newSink())
	var me *meta.Error
	if !errors.As(err, &me) || me.Code != meta.AccessRefused {
		t.Fatalf("second consumer of an exclusively consumed queue: %v", err)
	}
	// Purge and delete.
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "q3", Durable: true}, false); err != nil {
		t.Fatal(err)
	}
	q3, _ := v.LookupQueue("q3")
	spreadPublish(t, v, "q3", spreadBodies("p", 5))
	if n, err := v.PurgeQueue("q3", 0); err != nil || n != 5 {
		t.Fatalf("purge: %d, %v", n, err)
	}
	if q3.Len() != 0 {
		t.Fatalf("q3 holds %d after purge", q3.Len())
	}
	q2host := q2.Host()
	spreadPublish(t, v, "q2", spreadBodies("d", 3))
	s2.wait(t, 3)
	if n, err := v.DeleteQueue("q2", false, false, 0); err != nil || n != 0 {
		t.Fatalf("delete q2: %d, %v", n, err)
	}
	spreadWait(t, ctx, "q2's consumer cancelled", func() bool {
		s2.mu.Lock()
		defer s2.mu.Unlock()
		return s2.cancelled
	})
	if hosted := nodes[q2host].b.HostedGroups(); slices.Contains(hosted, q2.group.ID()) {
		t.Fatalf("node %d still hosts deleted q2", q2host)
	}
}

// TestRemoteQueueHostFailover kills the node hosting a busy queue: the group elects another
// leader, the proxy re-attaches there with its consumer, the unacked deliveries come again
// marked redelivered, acks of the dead host's delivery ids settle nothing, and no confirmed
// message is lost.
func TestRemoteQueueHostFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes := startSpreadCluster(t, ctx)
	v, _ := nodes[1].b.VHost("/")
	q := declareSpread(t, ctx, nodes, "work")
	first := q.Host()
	spreadWait(t, ctx, "the host leads", func() bool { return q.group.Leader() == first })

	const n = 30
	want := spreadBodies("w", n)
	spreadPublish(t, v, "work", want)
	s := newSink()
	if _, err := q.Consume(ConsumeOptions{Prefetch: 5}, s); err != nil {
		t.Fatal(err)
	}
	before := s.wait(t, 5)
	// Ack two of them; the other three stay unacked when the host dies.
	q.Settle([]queue.DeliveryID{before[0].ID, before[1].ID}, queue.Ack)
	s.wait(t, 7) // the two acked make room for two more
	s.mu.Lock()
	stale := slices.Clone(s.got)
	s.mu.Unlock()

	nodes[first].kill()
	spreadWait(t, ctx, "the proxy re-attached to another node", func() bool {
		h := q.Host()
		return h != 0 && h != first
	})
	second := q.Host()
	if g := nodes[second].host.Group(q.group.ID()); g == nil || !g.IsLeader() {
		t.Fatalf("node %d hosts the queue but does not lead its group", second)
	}
	// Acks of the dead host's deliveries (ids of the old epoch): dropped, never settle
	// another message.
	var staleIDs []queue.DeliveryID
	for _, d := range stale[2:] {
		staleIDs = append(staleIDs, d.ID)
	}
	q.Settle(staleIDs, queue.Ack)

	// Everything not acked before the failover comes again; the messages delivered before and
	// not acked come marked redelivered.
	seen := map[string]bool{want[0]: true, want[1]: true}
	redelivered := map[string]bool{}
	next := len(stale)
	for len(seen) < n {
		ds := s.wait(t, next+1)
		var ids []queue.DeliveryID
		for _, d := range ds[next:] {
			if uint64(d.ID)>>epochShift == uint64(stale[0].ID)>>epochShift {
				t.Fatalf("delivery id %x of the dead host's epoch after the failover", d.ID)
			}
			seen[string(d.Msg.Body)] = true
			if d.Redelivered {
				redelivered[string(d.Msg.Body)] = true
			}
			ids = append(ids, d.ID)
		}
		next = len(ds)
		q.Settle(ids, queue.Ack)
	}
	for _, d := range stale[2:] {
		if !redelivered[string(d.Msg.Body)] {
			t.Errorf("%s was delivered, unacked, before the failover and came back not redelivered", d.Msg.Body)
		}
	}
	spreadWait(t, ctx, "queue drained", func() bool { return q.Len() == 0 })
	// Publishing goes on at the new host.
	spreadPublish(t, v, "work", spreadBodies("after", 5))
	s.wait(t, next+5)
}

// TestRemoteQueueMove: the rebalancer's move of a queue to another node (remote.go's move) is a
// planned failover: the new node leads the group and hosts the queue, the old host stops
// delivering, the consumer stays attached, what it held unacked comes again redelivered, acks
// of the old session's ids settle nothing, and no confirmed message is lost.
func TestRemoteQueueMove(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes := startSpreadCluster(t, ctx)
	v, _ := nodes[1].b.VHost("/")
	q := declareSpread(t, ctx, nodes, "moving")
	first := q.Host()
	spreadWait(t, ctx, "the host leads", func() bool { return q.group.Leader() == first })
	other := uint64(5) - first // 2 <-> 3

	const n = 20
	want := spreadBodies("m", n)
	spreadPublish(t, v, "moving", want)
	s := newSink()
	if _, err := q.Consume(ConsumeOptions{Prefetch: 4}, s); err != nil {
		t.Fatal(err)
	}
	held := s.wait(t, 4)
	if !q.remote.move(other) {
		t.Fatal("move refused")
	}
	spreadWait(t, ctx, "the queue moved", func() bool { return q.Host() == other })
	spreadWait(t, ctx, "the new host leads", func() bool { return nodes[other].host.Group(q.group.ID()).IsLeader() })
	if slices.Contains(nodes[first].b.HostedGroups(), q.group.ID()) {
		spreadWait(t, ctx, "the old host parks the queue", func() bool {
			return !slices.Contains(nodes[first].b.HostedGroups(), q.group.ID())
		})
	}
	var staleIDs []queue.DeliveryID
	for _, d := range held {
		staleIDs = append(staleIDs, d.ID)
	}
	q.Settle(staleIDs, queue.Ack) // of the ended session: dropped

	seen := map[string]bool{}
	redelivered := map[string]bool{}
	next := len(held)
	for len(seen) < n {
		ds := s.wait(t, next+1)
		var ids []queue.DeliveryID
		for _, d := range ds[next:] {
			seen[string(d.Msg.Body)] = true
			if d.Redelivered {
				redelivered[string(d.Msg.Body)] = true
			}
			ids = append(ids, d.ID)
		}
		next = len(ds)
		q.Settle(ids, queue.Ack)
	}
	for _, d := range held {
		if !redelivered[string(d.Msg.Body)] {
			t.Errorf("%s was held unacked before the move and did not come again redelivered", d.Msg.Body)
		}
	}
	spreadWait(t, ctx, "queue drained", func() bool { return q.Len() == 0 })
	spreadPublish(t, v, "moving", spreadBodies("after", 5))
	ds := s.wait(t, next+4) // prefetch 4
	var ids []queue.DeliveryID
	for _, d := range ds[next:] {
		ids = append(ids, d.ID)
	}
	q.Settle(ids, queue.Ack)
	s.wait(t, next+5)
}

// creditSink counts deliveries and acks each at once, unless hold.
type creditSink struct {
	n    atomic.Int64
	hold bool
}

func (s *creditSink) Deliver(q *Queue, d queue.Delivery) {
	s.n.Add(1)
	if !s.hold {
		go q.Settle([]queue.DeliveryID{d.ID}, queue.Ack)
	}
}
func (s *creditSink) Allow() bool      { return true }
func (s *creditSink) Cancelled(*Queue) {}

// TestRemoteQueueRelayCredit: a remote queue's consumer with a prefetch larger than the relay
// window, next to one that holds its deliveries unacked, gets every message. The host's queue
// hands out a drain round's messages after asking Allow for each; the relay credit must be
// taken in Allow, or a round overdraws it and the consumer stalls for good (it did: 514 of
// 20,000 delivered; TestClusterStandbySpaceComesBack with queues spread).
func TestRemoteQueueRelayCredit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes := startSpreadCluster(t, ctx)
	v, _ := nodes[1].b.VHost("/")
	q := declareSpread(t, ctx, nodes, "credit")
	spreadPublish(t, v, "credit", spreadBodies("head", 4))
	holder := &creditSink{hold: true}
	if _, err := q.Consume(ConsumeOptions{Prefetch: 4}, holder); err != nil {
		t.Fatal(err)
	}
	spreadWait(t, ctx, "the holder's four", func() bool { return holder.n.Load() == 4 })
	acker := &creditSink{}
	if _, err := q.Consume(ConsumeOptions{Prefetch: 4 * relayWindow}, acker); err != nil {
		t.Fatal(err)
	}
	const n = 5000
	spreadPublish(t, v, "credit", spreadBodies("m", n))
	spreadWait(t, ctx, "every message at the acking consumer", func() bool { return acker.n.Load() >= n })
}

// TestRemoteQueueGetWithoutHost (issue 7): a basic.get on a spread queue that holds messages
// never answers "empty" for want of a host. While its host is lost and the group elects
// another, Fetch either waits and gets a message or fails with the channel error of a queue
// whose node is down; once no node can host it (both hosts down: no majority), it fails at once
// with that error.
func TestRemoteQueueGetWithoutHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes := startSpreadCluster(t, ctx)
	v, _ := nodes[1].b.VHost("/")
	q := declareSpread(t, ctx, nodes, "getter")
	first := q.Host()
	spreadWait(t, ctx, "the host leads", func() bool { return q.group.Leader() == first })
	want := spreadBodies("g", 6)
	spreadPublish(t, v, "getter", want)

	checkErr := func(err error) {
		t.Helper()
		var me *meta.Error
		if !errors.As(err, &me) || me.Code != meta.NotFound {
			t.Fatalf("Fetch failed with %v, want a %d channel error", err, meta.NotFound)
		}
	}
	d, _, ok, err := q.Fetch(false)
	if err != nil || !ok || string(d.Msg.Body) != want[0] {
		t.Fatalf("first get: ok %v err %v", ok, err)
	}
	q.Settle([]queue.DeliveryID{d.ID}, queue.Ack)

	nodes[first].kill()
	// An ack is a notification: the dead host may not have applied it, and that message comes
	// again (at least once), redelivered.
	seen := map[string]bool{want[0]: true}
	for len(seen) < 3 {
		d, _, ok, err := q.Fetch(false)
		switch {
		case err != nil:
			checkErr(err)
			if ctx.Err() != nil {
				t.Fatal("no host took the queue over")
			}
			time.Sleep(50 * time.Millisecond)
		case !ok:
			t.Fatalf("get answered empty with %d of %d messages never got", len(want)-len(seen), len(want))
		default:
			body := string(d.Msg.Body)
			if !slices.Contains(want, body) || (seen[body] && !d.Redelivered) {
				t.Fatalf("got %s (redelivered %v), seen before: %v", body, d.Redelivered, seen[body])
			}
			seen[body] = true
			q.Settle([]queue.DeliveryID{d.ID}, queue.Ack)
		}
	}

	// The second host goes too: nothing can run the queue, and a get says so.
	nodes[5-first].kill()
	for range 3 {
		_, _, ok, err := q.Fetch(false)
		if ok || err == nil {
			t.Fatalf("get with no node to host the queue: ok %v err %v", ok, err)
		}
		checkErr(err)
	}
}

// TestRemoteQueuePublishOrderAcrossMoves (issue 7): one publisher's messages reach a spread
// queue in the order published although the queue moves between nodes meanwhile (publishes
// its old host no longer takes are sent again to the new one, and must not overtake or be
// overtaken by the ones published after them): every confirmed message is in the queue, and
// the queue's order is the publisher's.
func TestRemoteQueuePublishOrderAcrossMoves(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	nodes := startSpreadCluster(t, ctx)
	v, _ := nodes[1].b.VHost("/")
	q := declareSpread(t, ctx, nodes, "ordered")
	spreadWait(t, ctx, "the host leads", func() bool { return q.group.Leader() == q.Host() })

	var (
		mu        sync.Mutex
		confirmed = map[int]bool{}
		pending   sync.WaitGroup
		stop      atomic.Bool
		published atomic.Int64
	)
	done := make(chan struct{})
	window := make(chan struct{}, 64) // a publisher's unconfirmed messages, as a client's
	go func() {
		defer close(done)
		for i := 0; !stop.Load() && ctx.Err() == nil; i++ {
			window <- struct{}{}
			m := persistent(fmt.Sprintf("%08d", i))
			m.RoutingKey = "ordered"
			pending.Add(1)
			if _, err := v.Publish(m, func(ok bool) {
				if ok {
					mu.Lock()
					confirmed[i] = true
					mu.Unlock()
				}
				<-window
				pending.Done()
			}, nil); err != nil {
				pending.Done()
				t.Error(err)
				return
			}
			published.Add(1)
		}
	}()
	// Moves: the other node takes the group's lead under the host's feet (as an election
	// would), so the host refuses the publishes that reach it after, and the proxy goes after
	// the new leader; and the rebalancer's planned moves (remote.go's move), which also happen
	// on their own as the rebalancer brings the queue back to its placement.
	for move := range 6 {
		at := published.Load()
		spreadWait(t, ctx, "publishes flowing", func() bool { return published.Load() > at+200 })
		spreadWait(t, ctx, "the queue moved", func() bool {
			from := q.Host()
			if from == 0 {
				return false
			}
			if move%2 == 1 {
				return q.remote.move(5 - from)
			}
			asked, err := nodes[5-from].host.TakeLead(ctx, q.group.ID())
			return err == nil && asked
		})
		t.Logf("move %d started after %d publishes", move, published.Load())
	}
	at := published.Load()
	spreadWait(t, ctx, "publishes after the last move", func() bool { return published.Load() > at+500 })
	stop.Store(true)
	<-done
	pending.Wait()

	last, n := -1, 0
	for {
		d, _, ok, err := q.Fetch(true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		var i int
		if _, err := fmt.Sscanf(string(d.Msg.Body), "%d", &i); err != nil {
			t.Fatal(err)
		}
		if i <= last {
			t.Fatalf("message %d after %d: the publisher's order is lost", i, last)
		}
		mu.Lock()
		delete(confirmed, i)
		mu.Unlock()
		last = i
		n++
	}
	if len(confirmed) > 0 {
		t.Fatalf("%d confirmed messages not in the queue", len(confirmed))
	}
	t.Logf("%d of %d publishes in order in the queue", n, published.Load())
}

// TestRemoteQueueReshare (issue 7): queues placed while only node 2 could run them move, once
// node 3 is a member too (as a node that joined), until each of the two runs half: the new
// placements are recorded in the metadata, every queue runs on its recorded placement, a
// consumer stays attached through the move, and no confirmed message is lost or delivered
// twice unless redelivered.
func TestRemoteQueueReshare(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	nodes := startSpreadCluster(t, ctx)
	nodes[1].members.Store(&[]uint64{2})
	v, _ := nodes[1].b.VHost("/")
	const nq, n = 4, 20
	var qs []*Queue
	for i := range nq {
		name := fmt.Sprintf("share-%d", i)
		q := declareSpread(t, ctx, nodes, name)
		if q.Host() != 2 {
			t.Fatalf("%s on node %d with node 2 the only member", name, q.Host())
		}
		spreadPublish(t, v, name, spreadBodies(name, n))
		qs = append(qs, q)
	}
	s := newSink()
	if _, err := qs[0].Consume(ConsumeOptions{Prefetch: 100}, s); err != nil {
		t.Fatal(err)
	}
	s.wait(t, n) // held unacked across the moves

	nodes[1].members.Store(&[]uint64{2, 3})
	// The rebalancer runs on the leader of group 0 (the serving node).
	spreadWait(t, ctx, "node 1 leads group 0", func() bool {
		if nodes[1].b.metaGroup.IsLeader() {
			return true
		}
		_, _ = nodes[1].host.TakeLead(ctx, MetaGroup)
		time.Sleep(100 * time.Millisecond)
		return false
	})
	placed := func() map[uint64]int {
		nodes[1].b.mu.Lock()
		defer nodes[1].b.mu.Unlock()
		out := map[uint64]int{}
		for _, def := range nodes[1].b.meta.Queues("/") {
			out[def.Place]++
		}
		return out
	}
	spreadWait(t, ctx, "placements shared", func() bool { p := placed(); return p[2] == nq/2 && p[3] == nq/2 })
	spreadWait(t, ctx, "every queue on its placement", func() bool {
		for _, q := range qs {
			if q.Host() != q.remote.place.Load() {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * rebalanceInterval)
	if p := placed(); p[2] != nq/2 || p[3] != nq/2 {
		t.Fatalf("placements moved on: %v", p)
	}

	// The consumer's messages: each once, or again marked redelivered after a move.
	seen := map[string]bool{}
	next := 0
	for len(seen) < n {
		ds := s.wait(t, next+1)
		var ids []queue.DeliveryID
		for _, d := range ds[next:] {
			body := string(d.Msg.Body)
			if seen[body] && !d.Redelivered {
				t.Fatalf("%s delivered twice, not marked redelivered", body)
			}
			seen[body] = true
			ids = append(ids, d.ID)
		}
		next = len(ds)
		qs[0].Settle(ids, queue.Ack)
	}
	// The other queues' messages are all there, in order.
	for i, q := range qs[1:] {
		want := spreadBodies(fmt.Sprintf("share-%d", i+1), n)
		for _, body := range want {
			d, _, ok, err := q.Fetch(true)
			if err != nil || !ok || string(d.Msg.Body) != body {
				t.Fatalf("share-%d: want %s, got ok %v err %v", i+1, body, ok, err)
			}
		}
	}
}

// TestRemoteQueueDeadLettersAndExpiry (issue 7): a queue hosted on another node dead-letters
// its expired messages through the serving node's routing (a queue host has none), in order
// and each once, with their x-death; and an x-expires queue left unused is deleted from the
// serving node's metadata, its host's queue with it.
func TestRemoteQueueDeadLettersAndExpiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes := startSpreadCluster(t, ctx)
	v, _ := nodes[1].b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "dead"}, false); err != nil { // local
		t.Fatal(err)
	}
	dead, _ := v.LookupQueue("dead")
	if dead.remote != nil {
		t.Fatal("a transient queue was spread")
	}
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "ttl", Durable: true, Args: message.Table{
		"x-message-ttl": int32(50), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead",
	}}, false); err != nil {
		t.Fatal(err)
	}
	q, _ := v.LookupQueue("ttl")
	spreadWait(t, ctx, "ttl attached", func() bool { return q.Host() != 0 })
	if q.remote == nil || q.Host() == 1 {
		t.Fatalf("queue with a dead-letter exchange not spread (host %d)", q.Host())
	}
	want := spreadBodies("d", 10)
	spreadPublish(t, v, "ttl", want)
	spreadWait(t, ctx, "dead letters routed", func() bool { return dead.Len() == len(want) })
	for _, body := range want {
		d, _, ok := dead.Get(true)
		if !ok || string(d.Msg.Body) != body {
			t.Fatalf("dead letter %v %q, want %q (in order)", ok, d.Msg.Body, body)
		}
		deaths, _ := d.Msg.Properties.Headers["x-death"].([]any)
		if len(deaths) != 1 {
			t.Fatalf("x-death %#v", d.Msg.Properties.Headers["x-death"])
		}
		if x, _ := deaths[0].(message.Table); x["reason"] != "expired" || x["queue"] != "ttl" {
			t.Fatalf("x-death %#v", deaths[0])
		}
	}
	time.Sleep(200 * time.Millisecond)
	if n := dead.Len(); n != 0 {
		t.Fatalf("%d dead letters more than messages", n)
	}

	if _, err := v.DeclareQueue(meta.QueueDef{Name: "expiring", Durable: true, Args: message.Table{"x-expires": int32(300)}}, false); err != nil {
		t.Fatal(err)
	}
	eq, _ := v.LookupQueue("expiring")
	spreadWait(t, ctx, "expiring attached", func() bool { return eq.Host() != 0 })
	host := eq.Host()
	if eq.remote == nil || host == 1 {
		t.Fatalf("x-expires queue not spread (host %d)", host)
	}
	spreadWait(t, ctx, "the unused queue deleted", func() bool { _, ok := v.LookupQueue("expiring"); return !ok })
	spreadWait(t, ctx, "its host's queue gone", func() bool {
		return !slices.Contains(nodes[host].b.HostedGroups(), eq.group.ID())
	})
}
