package integration

import (
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestClusterKillServingNode: three parley processes on loopback. A client connected to node 1
// declares a durable queue and publishes persistent messages with confirms; then the serving
// node (the metadata leader, node 1 or the node that node 1 forwards to) is killed with
// SIGKILL. Another node must take over, and a client of a surviving node must consume every
// confirmed message (duplicates only as redeliveries), including one delivered but not acked
// before the kill.
func TestClusterKillServingNode(t *testing.T) {
	nodes := StartCluster(t, 3)
	q := Name(t, "cluster")
	const total = 300

	c := dialRetry(t, nodes[0])
	ch := channel(t, c)
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirmed := map[string]bool{}
	ctx := ctxTimeout(t)
	for i := range total {
		body := strconv.Itoa(i)
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		ok, err := dc.WaitContext(ctx)
		if err != nil || !ok {
			t.Fatalf("confirm %d: %v %v", i, ok, err)
		}
		confirmed[body] = true
	}
	// One message delivered and left unacked when the node dies: it must come back.
	d, ok, err := ch.Get(q, false)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	inflight := string(d.Body)

	serving := WaitServing(t, nodes)
	killedAt := time.Now()
	serving.Kill()
	c.Close()
	var rest []*Node
	for _, n := range nodes {
		if n != serving {
			rest = append(rest, n)
		}
	}
	next := WaitServing(t, rest)
	t.Logf("node %d killed; node %d serves %v later", serving.ID, next.ID, time.Since(killedAt).Round(time.Millisecond))

	// A client of a surviving node (whichever it is, it forwards or serves) consumes everything.
	consumer := rest[0]
	cc := dialRetry(t, consumer)
	defer cc.Close()
	cch := channel(t, cc)
	got := map[string]int{}
	redelivered := map[string]bool{}
	for {
		d, ok, err := cch.Get(q, true)
		if err != nil {
			t.Fatalf("get from node %d: %v", consumer.ID, err)
		}
		if !ok {
			break
		}
		b := string(d.Body)
		got[b]++
		if d.Redelivered {
			redelivered[b] = true
		}
	}
	for body := range confirmed {
		if got[body] == 0 {
			t.Errorf("confirmed message %s lost", body)
		}
	}
	for body, n := range got {
		if !confirmed[body] {
			t.Errorf("message %q was never published", body)
		}
		if n > 1 && !redelivered[body] {
			t.Errorf("message %s delivered %d times, not marked redelivered", body, n)
		}
	}
	if !redelivered[inflight] {
		t.Errorf("message %s, unacked when the node died, not redelivered (redelivered: %d)", inflight, len(redelivered))
	}
	if t.Failed() {
		t.Logf("consumed %d distinct of %d confirmed", len(got), len(confirmed))
	}

	// The killed node restarts as a replica and catches up with every group of the serving one.
	serving.Restart()
	ctx2 := ctxTimeout(t)
	for {
		lead, err1 := next.Status(ctx2)
		back, err2 := serving.Status(ctx2)
		if err1 == nil && err2 == nil && caughtUp(lead, back) {
			if back.Serving {
				t.Fatalf("restarted node %d serves while node %d does", serving.ID, next.ID)
			}
			break
		}
		select {
		case <-ctx2.Done():
			t.Fatalf("restarted node %d did not catch up: %v %v", serving.ID, err1, err2)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// caughtUp reports whether replica has every group the leader has, applied as far as the
// leader has committed it.
func caughtUp(leader, replica ClusterStatus) bool {
	applied := map[uint64]uint64{}
	for _, g := range replica.Groups {
		applied[g.ID] = g.Applied
	}
	for _, g := range leader.Groups {
		if a, ok := applied[g.ID]; !ok || a < g.Commit {
			return false
		}
	}
	return len(leader.Groups) >= 2 // group 0 and the queue's
}

// dialRetry connects to a node as a client of a cluster does: retrying while no node serves
// (an election, a node starting its broker), bounded.
func dialRetry(t testing.TB, n *Node) *amqp.Connection {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := amqp.Dial(n.URL)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial node %d: %v", n.ID, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterRedeclaredQueueAfterFailover: a durable queue deleted and declared again (in a
// raft group of its own, see meta.QueueDef.Group); after the serving node is killed, the new
// serving node must hold the new queue's messages and none of the deleted one's.
func TestClusterRedeclaredQueueAfterFailover(t *testing.T) {
	nodes := StartCluster(t, 3)
	q := Name(t, "redeclared")
	c := dialRetry(t, nodes[0])
	ch := channel(t, c)
	publishN := func(prefix string) {
		t.Helper()
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			publishConfirmed(t, ch, "", q, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(prefix + strconv.Itoa(i))})
		}
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	publishN("old-")
	if _, err := ch.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	publishN("new-")
	c.Close()

	serving := WaitServing(t, nodes)
	serving.Kill()
	var rest []*Node
	for _, n := range nodes {
		if n != serving {
			rest = append(rest, n)
		}
	}
	WaitServing(t, rest)
	cc := dialRetry(t, rest[0])
	defer cc.Close()
	cch := channel(t, cc)
	got := getAll(t, cch, q)
	for i := range 10 {
		if !got["new-"+strconv.Itoa(i)] {
			t.Errorf("new-%d lost", i)
		}
		if got["old-"+strconv.Itoa(i)] {
			t.Errorf("old-%d, published before the queue was deleted, came back", i)
		}
	}
}
