package broker

import (
	"testing"
	"time"
)

// TestStoppedQueueConfirmsOnlyCommitted: a durable queue that stops (broker shutdown, or a
// queue host parking a queue whose group it no longer leads) while a publish waits for its
// log entry must not confirm that publish unless the entry commits. Here both other nodes are
// gone, so the entry never commits: the publisher must get a nack. The stop used to confirm
// every waiting publish at once, as a delete does, which confirmed a message that never
// reached the log.
func TestStoppedQueueConfirmsOnlyCommitted(t *testing.T) {
	tr := newTrio(t, 0)
	v1, _ := tr.serveQueue("stoplog")
	again := map[string]bool{}
	publishConfirmed(t, v1, "stoplog", 0, 3, again)
	q, err := v1.Queue("stoplog", 0)
	if err != nil {
		t.Fatal(err)
	}
	tr.down(2)
	tr.down(3)

	confirmed := make(chan bool, 1)
	m := persistent("never committed")
	m.RoutingKey = "stoplog"
	ct := &confirmTracker{fn: func(ok bool) { confirmed <- ok }}
	ct.pending.Store(1)
	q.publish(m, ct, nil)
	q.stop()
	select {
	case ok := <-confirmed:
		if ok {
			t.Fatal("a publish whose entry could not commit (no majority) was confirmed when its queue stopped")
		}
	case <-time.After(10*time.Second + trioTimeout):
		t.Fatalf("no answer for the publish within %v of its queue's stop", 10*time.Second+trioTimeout)
	}
}
