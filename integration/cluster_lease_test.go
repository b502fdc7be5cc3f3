package integration

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestClusterNetnsLeaseQuiescedServingNode: the leader lease (cluster/lease.go) stops a cut-off
// serving node from delivering even while its group 0 is quiesced (a quiesced leader runs no
// CheckQuorum and hears of no newer term: without the lease it would deliver for seconds after
// the majority's new serving node began delivering the same messages).
//
// Three nodes in network namespaces; a consumer connected straight to the serving node takes
// messages one at a time (prefetch 1, acking each), so there is always something for the node
// to deliver. Once group 0 is quiesced on the serving node, the node is cut off by dropping its
// packets. The consumer must get nothing after the majority's new serving node was seen
// serving: by then the old node's lease has run out (the majority elects only after it can).
// After healing every confirmed message is consumed, and a message that comes again carries
// the redelivered flag.
func TestClusterNetnsLeaseQuiescedServingNode(t *testing.T) {
	c := StartNetnsCluster(t, 3)
	nodes := c.Nodes
	q := Name(t, "lease")
	old := WaitServing(t, nodes)
	confirmed := map[string]bool{}
	{
		conn := dialRetry(t, old)
		ch := channel(t, conn)
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		ctx := ctxTimeout(t)
		for i := range 400 {
			body := "m-" + strconv.Itoa(i)
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
				amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
			if err != nil {
				t.Fatalf("publish %s: %v", body, err)
			}
			if ok, err := dc.WaitContext(ctx); err != nil || !ok {
				t.Fatalf("confirm %s: %v %v", body, ok, err)
			}
			confirmed[body] = true
		}
		conn.Close()
	}

	// The consumer, on the serving node itself (not forwarded by a standby).
	type delivery struct {
		body        string
		redelivered bool
		at          time.Time
	}
	var mu sync.Mutex
	var got []delivery
	conn := dialRetry(t, old)
	defer conn.Close()
	ch := channel(t, conn)
	if err := ch.Qos(1, 0, false); err != nil {
		t.Fatal(err)
	}
	msgs, err := ch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for d := range msgs {
			mu.Lock()
			got = append(got, delivery{string(d.Body), d.Redelivered, time.Now()})
			mu.Unlock()
			time.Sleep(20 * time.Millisecond) // a slow consumer: the queue always has more for it
			if d.Ack(false) != nil {
				return
			}
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	deadline := time.Now().Add(30 * time.Second)
	for count() < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("the consumer on node %d got %d messages in 30s", old.ID, count())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Group 0 idles (no metadata changes) while the queue's group is busy with the acks.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := old.Status(ctx)
		cancel()
		quiesced := false
		for _, g := range st.Groups {
			if g.ID == 0 {
				quiesced = g.Quiesced && g.Lease && g.Leader == uint64(old.ID)
			}
		}
		if err == nil && quiesced {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group 0 never quiesced with its lease on serving node %d: %+v %v", old.ID, st.Groups, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := count()
	c.Isolate(old.ID, true)
	cutAt := time.Now()

	var rest []*Node
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	next := WaitServing(t, rest)
	servingSeen := time.Now()
	// Anything the consumer still gets from here on was delivered by the cut-off node while
	// the majority's serving node may already deliver the same message.
	waitNotServing(t, old)
	mu.Lock()
	var late []delivery
	var last time.Time
	for _, d := range got[before:] {
		if d.at.After(servingSeen) {
			late = append(late, d)
		}
		last = d.at
	}
	afterCut := len(got) - before
	mu.Unlock()
	t.Logf("node %d cut off with group 0 quiesced; node %d seen serving %v later; the cut-off node's consumer got %d messages after the cut, the last %v after it",
		old.ID, next.ID, servingSeen.Sub(cutAt).Round(time.Millisecond), afterCut, last.Sub(cutAt).Round(time.Millisecond))
	for _, d := range late {
		t.Errorf("the cut-off node %d delivered %s (redelivered %v) %v after the cut, after node %d was seen serving",
			old.ID, d.body, d.redelivered, d.at.Sub(cutAt).Round(time.Millisecond), next.ID)
	}
	conn.Close()
	<-consumed

	c.Isolate(old.ID, false)
	WaitConverged(t, nodes, 60*time.Second)
	seen := map[string]int{}
	mu.Lock()
	for _, d := range got {
		seen[d.body]++
		if seen[d.body] > 1 && !d.redelivered {
			t.Errorf("message %s delivered again without the redelivered flag", d.body)
		}
	}
	mu.Unlock()
	drainQueueFunc(t, next, q, func(body []byte, redelivered bool) {
		b := string(body)
		seen[b]++
		if seen[b] > 1 && !redelivered {
			t.Errorf("message %s delivered again without the redelivered flag", b)
		}
	})
	for b := range confirmed {
		if seen[b] == 0 {
			t.Errorf("confirmed message %s never consumed", b)
		}
	}
	for b := range seen {
		if !confirmed[b] {
			t.Errorf("message %q was never published", b)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("%s: %d confirmed messages, every one consumed (%d deliveries in all)", fmt.Sprint(q), len(confirmed), func() int {
		n := 0
		for _, v := range seen {
			n += v
		}
		return n
	}())
}
