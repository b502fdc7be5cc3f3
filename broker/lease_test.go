package broker

import (
	"testing"
	"time"
)

// TestLeaseLostPausesDeliveries: a serving node cut off from the two others keeps leading
// group 0 for a while (its raft has not heard of anyone else), but once its lease has run out
// (cluster/lease.go) its queues deliver nothing, and a publish through it waits for the lease
// and is then refused with ErrNoMajority (here: the node is deposed meanwhile). Three hosts
// over real Pebble, as cmd/parley runs them.
func TestLeaseLostPausesDeliveries(t *testing.T) {
	tr := newTrio(t, 0)
	v1, _ := tr.serveQueue("lease")
	b1 := tr.nodes[1].b
	again := map[string]bool{}
	publishConfirmed(t, v1, "lease", 0, 6, again)
	deadline := time.Now().Add(trioTimeout)
	for !b1.metaGroup.HasLease() {
		if time.Now().After(deadline) {
			t.Fatal("the serving node never held group 0's lease")
		}
		time.Sleep(5 * time.Millisecond)
	}
	q1, err := v1.Queue("lease", 0)
	if err != nil {
		t.Fatal(err)
	}
	// With its leases (group 0's, and the queue group's, which needs an echo of a probe sent
	// since node 1 took that group's lead) the serving node delivers.
	for {
		d, _, ok := q1.Get(true)
		if ok {
			if string(d.Msg.Body) != "0" {
				t.Fatalf("first delivery %q, want 0", d.Msg.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the serving node with its lease delivered nothing")
		}
		time.Sleep(5 * time.Millisecond)
	}

	tr.net.Isolate(1, true)
	for b1.metaGroup.HasLease() {
		if time.Now().After(deadline) {
			t.Fatal("the cut-off node kept group 0's lease")
		}
		time.Sleep(time.Millisecond)
	}
	if !b1.fenced() {
		t.Fatal("the cut-off node without its lease is not fenced")
	}
	for range 20 {
		if d, _, ok := q1.Get(true); ok {
			t.Fatalf("the cut-off node delivered %q without its lease (leading group 0: %v)", d.Msg.Body, b1.metaGroup.IsLeader())
		}
		time.Sleep(5 * time.Millisecond)
	}
	m := persistent("minority")
	m.RoutingKey = "lease"
	if _, err := v1.Publish(m, nil, nil); err != ErrNoMajority {
		t.Fatalf("publish through the cut-off node: %v, want ErrNoMajority", err)
	}
}
