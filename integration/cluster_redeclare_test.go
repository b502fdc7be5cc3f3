package integration

import (
	"context"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// queueGroups is the set of raft groups (but group 0) a node runs.
func queueGroups(t *testing.T, n *Node) map[uint64]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := n.Status(ctx)
	if err != nil {
		t.Fatalf("status of node %d: %v", n.ID, err)
	}
	out := map[uint64]bool{}
	for _, g := range st.Groups {
		if g.ID != 0 {
			out[g.ID] = true
		}
	}
	return out
}

// groupApplied is what node n has applied of group id, and whether it runs it.
func groupApplied(n *Node, id uint64) (uint64, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := n.Status(ctx)
	if err != nil {
		return 0, false
	}
	for _, g := range st.Groups {
		if g.ID == id {
			return g.Applied, true
		}
	}
	return 0, false
}

// TestClusterRedeclareWhileReplicaCutOff deletes a durable queue and declares it again while one
// standby is cut off, so that standby misses the delete and still holds the old queue's log. The
// new queue must get a raft group of its own (not one derived from the name, which the stale
// replica would share), the standby, healed, must drop the old group and replicate the new one,
// and after the serving node is killed the queue holds the new messages and none of the old.
func TestClusterRedeclareWhileReplicaCutOff(t *testing.T) {
	nodes, links := startClusterWithLinks(t)
	srv := WaitServing(t, nodes)
	var standbys []*Node
	for _, n := range nodes {
		if n != srv {
			standbys = append(standbys, n)
		}
	}
	lagging := standbys[0]
	q := Name(t, "redeclare-cut")
	before := queueGroups(t, srv)

	c := dialRetry(t, srv)
	defer c.Close()
	ch := channel(t, c)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	publishN := func(prefix string) {
		t.Helper()
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			publishConfirmed(t, ch, "", q, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(prefix + strconv.Itoa(i))})
		}
	}
	publishN("old-")
	var oldGroup uint64
	for id := range queueGroups(t, srv) {
		if _, ok := before[id]; !ok {
			oldGroup = id
		}
	}
	if oldGroup == 0 {
		t.Fatal("the durable queue's group is not in the serving node's status")
	}
	// The lagging standby has the old queue's log before it is cut off.
	want, _ := groupApplied(srv, oldGroup)
	waitUntil(t, "the standby to replicate the old queue", func() bool {
		a, ok := groupApplied(lagging, oldGroup)
		return ok && a >= want
	})

	isolate(links, lagging.ID, true)
	if _, err := ch.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	publishN("new-")
	var newGroup uint64
	for id := range queueGroups(t, srv) {
		if _, ok := before[id]; !ok {
			newGroup = id
		}
	}
	if newGroup == 0 || newGroup == oldGroup {
		t.Fatalf("the redeclared queue is in group %d, the deleted one was in %d: it must get a group of its own", newGroup, oldGroup)
	}
	if _, ok := groupApplied(lagging, oldGroup); !ok {
		t.Fatal("the cut-off standby no longer runs the old queue's group: it did not miss the delete, the test tests nothing")
	}

	isolate(links, lagging.ID, false)
	want, _ = groupApplied(srv, newGroup)
	waitUntil(t, "the healed standby to drop the old group and replicate the new one", func() bool {
		a, ok := groupApplied(lagging, newGroup)
		_, stale := groupApplied(lagging, oldGroup)
		return ok && a >= want && !stale
	})
	if _, stale := queueGroups(t, lagging)[oldGroup]; stale {
		t.Fatalf("the healed standby still runs the deleted queue's group %d", oldGroup)
	}
	c.Close()

	srv.Kill()
	next := WaitServing(t, standbys)
	cc := dialRetry(t, next)
	defer cc.Close()
	cch := channel(t, cc)
	got := getAll(t, cch, q)
	for i := range 10 {
		if !got["new-"+strconv.Itoa(i)] {
			t.Errorf("new-%d lost (node %d serves)", i, next.ID)
		}
		if got["old-"+strconv.Itoa(i)] {
			t.Errorf("old-%d, published before the queue was deleted, came back (node %d serves)", i, next.ID)
		}
	}
}

// waitUntil polls cond (bounded by waitTimeout).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v", what, waitTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
