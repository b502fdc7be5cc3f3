package broker

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestDeposedServingNodeDeliversNothing: a serving node that another node has taken group 0's
// lead from (it was cut off, and the others elected a new serving node) runs its broker until
// it notices and restarts as a standby. Meanwhile its queues' own proposals still commit
// through the new leader of their groups, and the new serving node's queue takes those
// entries as ones another node proposed, marked redelivered. The deposed node's queue must
// not deliver them (unflagged) as well: a client would get the message twice, the second
// time without the redelivered flag (TestClusterRandomFaults saw this after a heal). Three
// hosts over real Pebble, as cmd/parley runs them.
func TestDeposedServingNodeDeliversNothing(t *testing.T) {
	tr := newTrio(t, 0)
	v1, _ := tr.serveQueue("deposed")
	b1 := tr.nodes[1].b
	again := map[string]bool{}
	publishConfirmed(t, v1, "deposed", 0, 3, again)
	getAllOf(t, v1, "deposed", bodies(0, 3), again)

	// Node 2 takes over serving (group 0's lead and the queue's group's) while node 1's broker
	// still runs.
	v2 := tr.serve(2)
	if b1.metaGroup.IsLeader() {
		t.Fatal("node 2 serves but node 1 still leads group 0")
	}
	// A publish through the deposed node is refused (Broker.fenced)...
	if _, err := v1.Publish(persistent("refused"), nil, nil); !errors.Is(err, ErrNoMajority) {
		t.Fatalf("publish through the deposed node: %v, want ErrNoMajority", err)
	}
	// ...but publishes already in its queue's inbox go on: they commit through the group's new
	// leader on node 2.
	q1, err := v1.Queue("deposed", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 3; i < 6; {
		confirmed := make(chan bool, 1)
		m := persistent(fmt.Sprint(i))
		m.RoutingKey = "deposed"
		tr := &confirmTracker{fn: func(ok bool) { confirmed <- ok }}
		tr.pending.Store(1)
		q1.publish(m, tr, nil)
		select {
		case ok := <-confirmed:
			if ok {
				i++
			} else {
				again[fmt.Sprint(i)] = true
			}
		case <-time.After(trioTimeout):
			t.Fatalf("publish %d: no confirm within %v", i, trioTimeout)
		}
	}

	q2, err := v2.Queue("deposed", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for deadline := time.Now().Add(trioTimeout); len(got) < 3; {
		d, _, ok := q2.Get(true)
		if !ok {
			if time.Now().After(deadline) {
				t.Fatalf("node 2 got only %v of node 1's 3 committed messages", got)
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if !d.Redelivered {
			t.Errorf("node 2 delivered %q, another node's message, without the redelivered flag", d.Msg.Body)
		}
		got[string(d.Msg.Body)] = true
	}
	for range 40 {
		if d, _, ok := q1.Get(true); ok {
			t.Fatalf("deposed node 1 delivered %q (redelivered=%v), which node 2 delivered already", d.Msg.Body, d.Redelivered)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
