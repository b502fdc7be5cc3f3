package integration

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
	amqp "github.com/rabbitmq/amqp091-go"
)

// TestClusterNetnsPartitionServingNode runs three nodes in network namespaces and cuts the
// serving node off from the two others by dropping its packets (no connection is closed: the
// nodes find out from silence). A client connected to the cut-off node keeps publishing: none
// of those publishes may be confirmed (the node has no majority), the client is blocked or gets
// an error. The majority elects a new serving node and confirms publishes made through both of
// its nodes (one of them forwards over the same network). After healing, the three nodes'
// groups converge (same leader, term and commit, all applied), every confirmed message is in
// the queue, nothing unpublished is, and duplicates carry the redelivered flag.
func TestClusterNetnsPartitionServingNode(t *testing.T) {
	c := StartNetnsCluster(t, 3)
	nodes := c.Nodes
	q := Name(t, "netns-partition")
	confirmed := map[string]bool{}
	published := map[string]bool{}
	publish := func(n *Node, prefix string, count int) {
		t.Helper()
		conn := dialRetry(t, n)
		defer conn.Close()
		ch := channel(t, conn)
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		ctx := ctxTimeout(t)
		for i := range count {
			body := prefix + strconv.Itoa(i)
			published[body] = true
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
				amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
			if err != nil {
				t.Fatalf("publish %s through node %d: %v", body, n.ID, err)
			}
			if ok, err := dc.WaitContext(ctx); err != nil || !ok {
				t.Fatalf("confirm %s through node %d: %v %v", body, n.ID, ok, err)
			}
			confirmed[body] = true
		}
	}
	old := WaitServing(t, nodes)
	publish(old, "before-", 100)

	// A client of the serving node, connected before the cut, keeps publishing through it.
	oc := dialRetry(t, old)
	och := channel(t, oc)
	if err := och.Confirm(false); err != nil {
		t.Fatal(err)
	}
	acks := och.NotifyPublish(make(chan amqp.Confirmation, 1024))
	closed := oc.NotifyClose(make(chan *amqp.Error, 1))
	c.Isolate(old.ID, true)
	cutAt := time.Now()
	var minoritySent int
	var minorityErr error
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	for ctx.Err() == nil && minoritySent < 200 {
		body := "minority-" + strconv.Itoa(minoritySent)
		published[body] = true
		if minorityErr = och.PublishWithContext(ctx, "", q, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)}); minorityErr != nil {
			break
		}
		minoritySent++
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	// Every publish above came after the cut: a confirm for any of them, however late, would be
	// a write the majority never saw. Watch until the node drops the connection (it stops
	// serving) or a while after.
	var minorityAcked, minorityNacked int
	watch := time.After(20 * time.Second)
watching:
	for {
		select {
		case cf, ok := <-acks:
			if !ok {
				break watching
			}
			if cf.Ack {
				minorityAcked++
			} else {
				minorityNacked++
			}
		case e := <-closed:
			t.Logf("the cut-off node closed the publisher's connection: %v", e)
			break watching
		case <-watch:
			break watching
		}
	}
	oc.Close()
	if minorityAcked > 0 {
		t.Errorf("the cut-off node %d confirmed %d of %d publishes made after the cut", old.ID, minorityAcked, minoritySent)
	}
	t.Logf("minority: %d publishes after the cut, %d confirmed, %d nacked, publish error %v", minoritySent, minorityAcked, minorityNacked, minorityErr)

	var rest []*Node
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	next := WaitServing(t, rest)
	t.Logf("node %d cut off; node %d serves %v after the cut", old.ID, next.ID, time.Since(cutAt).Round(time.Millisecond))
	for _, n := range rest {
		publish(n, "majority-via-"+strconv.Itoa(n.ID)+"-", 50)
	}

	// The cut-off node stops serving on its own.
	waitNotServing(t, old)

	c.Isolate(old.ID, false)
	WaitConverged(t, nodes, 60*time.Second)

	got := drainQueue(t, old, q)
	for b := range got {
		if !published[b] {
			t.Errorf("message %q was never published", b)
		}
	}
	for b := range confirmed {
		if got[b] == 0 {
			t.Errorf("confirmed message %s lost", b)
		}
	}
	if len(confirmed) < 200 {
		t.Fatalf("only %d messages confirmed: the test proved little", len(confirmed))
	}
	WaitConverged(t, nodes, 60*time.Second)
}

// drainQueue gets every message of q through node n (retrying the connection while the
// cluster settles), acking each, and returns how often each body came. A body that comes twice
// must carry the redelivered flag the second time.
func drainQueue(t testing.TB, n *Node, q string) map[string]int {
	t.Helper()
	got := map[string]int{}
	drainQueueFunc(t, n, q, func(body []byte, redelivered bool) {
		b := string(body)
		got[b]++
		if got[b] > 1 && !redelivered {
			t.Errorf("message %s delivered again without the redelivered flag", b)
		}
	})
	return got
}

// drainQueueFunc is drainQueue handing each delivery to f.
func drainQueueFunc(t testing.TB, n *Node, q string, f func(body []byte, redelivered bool)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("draining %s through node %d: no clean pass within 60s", q, n.ID)
		}
		c := dialRetry(t, n)
		ch, err := c.Channel()
		if err != nil {
			c.Close()
			continue
		}
		done := false
		for {
			d, ok, err := ch.Get(q, false)
			if err != nil {
				t.Logf("draining through node %d: %v; again", n.ID, err)
				break
			}
			if !ok {
				done = true
				break
			}
			f(d.Body, d.Redelivered)
			if err := d.Ack(false); err != nil {
				t.Logf("ack through node %d: %v; again", n.ID, err)
				break
			}
		}
		c.Close()
		if done {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestClusterNetnsPartitionMQTT: an MQTT device's persistent session (clean session false)
// holds what QoS 1 publishers send it. A publisher connected to the serving node keeps
// publishing QoS 1 after that node is cut off: no PUBACK may come for those (the node has no
// majority). Publishes through the majority are acknowledged. After healing and convergence the
// device, reconnecting through the node that was cut off, gets every acknowledged message and
// nothing that was never published.
func TestClusterNetnsPartitionMQTT(t *testing.T) {
	c := StartNetnsCluster(t, 3)
	nodes := c.Nodes
	const topic = "np/dev/cmd"
	dev, _, _ := connect3(t, nodes[0].MQTTAddr, "np-dev", false)
	wait3(t, "subscribe", dev.Subscribe(topic, 1, nil))
	dev.Disconnect(100)

	acked := map[string]bool{}
	published := map[string]bool{}
	old := WaitServing(t, nodes)
	pub, _, _ := connect3(t, old.MQTTAddr, "np-pub-old", true)
	for i := range 20 {
		m := "before-" + strconv.Itoa(i)
		published[m] = true
		wait3(t, "publish "+m, pub.Publish(topic, 1, false, m))
		acked[m] = true
	}

	c.Isolate(old.ID, true)
	var tokens []paho3.Token
	var sent []string
	for i := 0; i < 100 && pub.IsConnectionOpen(); i++ {
		m := "minority-" + strconv.Itoa(i)
		published[m] = true
		tokens = append(tokens, pub.Publish(topic, 1, false, m))
		sent = append(sent, m)
		time.Sleep(30 * time.Millisecond)
	}
	minorityAcked := 0
	for i, tok := range tokens {
		if tok.WaitTimeout(20*time.Second) && tok.Error() == nil {
			minorityAcked++
			t.Errorf("PUBACK for %s, published to node %d after it was cut off", sent[i], old.ID)
			acked[sent[i]] = true // acknowledged: it must not be lost either
		}
	}
	t.Logf("minority: %d QoS 1 publishes after the cut, %d acknowledged", len(sent), minorityAcked)
	pub.Disconnect(100)

	var rest []*Node
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	next := WaitServing(t, rest)
	p2, _, _ := connect3(t, next.MQTTAddr, "np-pub-new", true)
	for i := range 20 {
		m := "majority-" + strconv.Itoa(i)
		published[m] = true
		wait3(t, "publish "+m, p2.Publish(topic, 1, false, m))
		acked[m] = true
	}
	p2.Disconnect(100)
	// The majority's serving node holds every acknowledged message in the session's queue.
	{
		conn := dialRetry(t, next)
		n := messageCount(t, channel(t, conn), "mqtt.s.np-dev")
		conn.Close()
		if n < len(acked) {
			t.Errorf("node %d: the device's session queue holds %d messages; %d were acknowledged", next.ID, n, len(acked))
		}
	}

	waitNotServing(t, old)
	c.Isolate(old.ID, false)
	WaitConverged(t, nodes, 60*time.Second)
	// The device reconnects through the node that was cut off. Its connection may still end
	// once more (a node stepping down closes its clients; the device then reconnects, as
	// devices do): it collects until it has every acknowledged message.
	missing := maps.Clone(acked)
	deadline := time.Now().Add(60 * time.Second)
	for len(missing) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("acknowledged messages never delivered to the device: %v", slices.Sorted(maps.Keys(missing)))
		}
		dev, in, present := connect3(t, old.MQTTAddr, "np-dev", false)
		if !present {
			t.Error("the device's session is not present after the partition healed")
		}
		for len(missing) > 0 && dev.IsConnectionOpen() && time.Now().Before(deadline) {
			select {
			case m := <-in:
				if !published[m.payload] {
					t.Errorf("the device got %q, never published", m.payload)
				}
				delete(missing, m.payload)
			case <-time.After(200 * time.Millisecond):
			}
		}
		dev.Disconnect(100)
	}
}

// waitNotServing waits (bounded) until node n, cut off from the majority, says it no longer
// serves: it must step down on its own.
func waitNotServing(t testing.TB, n *Node) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := n.Status(ctx)
		cancel()
		if err == nil && !st.Serving {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cut-off node %d still serves: %+v %v", n.ID, st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
