package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
)

// MQTT across the cluster (issue 7 item 6): sessions, takeover and retained messages seen from
// every node, before and after the serving node is killed.

// clusterMQTTWait bounds how long a client retries connecting while the cluster fails over.
const clusterMQTTWait = 30 * time.Second

// connect3 connects an MQTT 3.1.1 client to addr, retrying while no node serves, and reports
// whether the broker said a session was present. Its messages go to the returned channel.
func connect3(t testing.TB, addr, id string, clean bool) (paho3.Client, <-chan received, bool) {
	t.Helper()
	deadline := time.Now().Add(clusterMQTTWait)
	for {
		ch := make(chan received, 1024)
		o := paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
			SetUsername("guest").SetPassword("guest").SetCleanSession(clean).
			SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
			SetConnectTimeout(mqttTimeout).SetWriteTimeout(mqttTimeout).SetOrderMatters(false).
			SetDefaultPublishHandler(func(_ paho3.Client, m paho3.Message) {
				ch <- received{topic: m.Topic(), payload: string(m.Payload()), qos: m.Qos(), retain: m.Retained(), dup: m.Duplicate()}
			})
		c := paho3.NewClient(o)
		tok := c.Connect()
		if tok.WaitTimeout(mqttTimeout) && tok.Error() == nil {
			t.Cleanup(func() { c.Disconnect(100) })
			return c, ch, tok.(*paho3.ConnectToken).SessionPresent()
		}
		if time.Now().After(deadline) {
			t.Fatalf("mqtt3 connect %s to %s: %v", id, addr, tok.Error())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// connect5 is connect3 for an MQTT 5 client with a session expiry interval.
func connect5(t testing.TB, addr, id string, clean bool, expiry uint32) *client5 {
	t.Helper()
	deadline := time.Now().Add(clusterMQTTWait)
	for {
		c, err := dial5(addr, id, clean, expiry)
		if err == nil {
			t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("mqtt5 connect %s to %s: %v", id, addr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// publish3 publishes QoS 1 messages (waiting for each PUBACK) through a fresh client on addr.
func publish3(t testing.TB, addr, topic string, retain bool, msgs ...string) {
	t.Helper()
	p, _, _ := connect3(t, addr, fmt.Sprintf("pub-%d", time.Now().UnixNano()), true)
	for _, m := range msgs {
		wait3(t, "publish "+m, p.Publish(topic, 1, retain, m))
	}
	p.Disconnect(100)
}

// expectPayloads waits for every payload of want on ch. Anything else may come only as a QoS 1
// redelivery of an earlier message (in again), flagged DUP.
func expectPayloads(t testing.TB, who string, ch <-chan received, again map[string]bool, want ...string) {
	t.Helper()
	missing := map[string]bool{}
	for _, w := range want {
		missing[w] = true
	}
	for len(missing) > 0 {
		var m received
		select {
		case m = <-ch:
		case <-time.After(mqttTimeout):
			t.Fatalf("%s: still missing %v after %v", who, missing, mqttTimeout)
		}
		switch {
		case missing[m.payload]:
			delete(missing, m.payload)
		case again[m.payload] && m.dup:
		default:
			t.Fatalf("%s: unexpected %+v", who, m)
		}
	}
}

// killServing kills the serving node and returns it and the nodes left.
func killServing(t testing.TB, nodes []*Node) (*Node, []*Node) {
	t.Helper()
	serving := WaitServing(t, nodes)
	serving.Kill()
	var rest []*Node
	for _, n := range nodes {
		if n != serving {
			rest = append(rest, n)
		}
	}
	WaitServing(t, rest)
	return serving, rest
}

// TestClusterMQTTSessionMovesBetweenNodes: a 3.1.1 device (clean session false) and an MQTT 5
// device (session expiry) subscribe through node 1 and go away; QoS 1 messages for them are
// published through node 2; each reconnects through node 3 and finds its session (session
// present) and its messages. They go away again, more messages are queued, the serving node is
// killed, and each reconnects to a surviving node: session, queued messages and subscription
// are all there.
func TestClusterMQTTSessionMovesBetweenNodes(t *testing.T) {
	nodes := StartCluster(t, 3)
	topic3, topic5 := "cl/dev3/cmd", "cl/dev5/cmd"

	d3, _, _ := connect3(t, nodes[0].MQTTAddr, "dev3", false)
	wait3(t, "subscribe", d3.Subscribe(topic3, 1, nil))
	d3.Disconnect(100)
	d5 := connect5(t, nodes[0].MQTTAddr, "dev5", false, 600)
	d5.sub(t, paho.SubscribeOptions{Topic: topic5, QoS: 1})
	_ = d5.Disconnect(&paho.Disconnect{})

	publish3(t, nodes[1].MQTTAddr, topic3, false, "a1", "a2", "a3")
	publish3(t, nodes[1].MQTTAddr, topic5, false, "a1", "a2", "a3")

	d3, in3, present := connect3(t, nodes[2].MQTTAddr, "dev3", false)
	if !present {
		t.Error("dev3 through node 3: session present false")
	}
	expectPayloads(t, "dev3 through node 3", in3, nil, "a1", "a2", "a3")
	d5 = connect5(t, nodes[2].MQTTAddr, "dev5", false, 600)
	if !d5.ack.SessionPresent {
		t.Error("dev5 through node 3: session present false")
	}
	expectPayloads(t, "dev5 through node 3", d5.msgs, nil, "a1", "a2", "a3")
	d3.Disconnect(100)
	_ = d5.Disconnect(&paho.Disconnect{})

	publish3(t, nodes[1].MQTTAddr, topic3, false, "b1", "b2", "b3")
	publish3(t, nodes[1].MQTTAddr, topic5, false, "b1", "b2", "b3")
	killed, rest := killServing(t, nodes)
	t.Logf("node %d killed", killed.ID)
	acked := map[string]bool{"a1": true, "a2": true, "a3": true} // may come again, with DUP

	_, in3, present = connect3(t, rest[0].MQTTAddr, "dev3", false)
	if !present {
		t.Errorf("dev3 through node %d after the kill: session present false", rest[0].ID)
	}
	expectPayloads(t, fmt.Sprintf("dev3 through node %d after the kill", rest[0].ID), in3, acked, "b1", "b2", "b3")
	d5 = connect5(t, rest[1].MQTTAddr, "dev5", false, 600)
	if !d5.ack.SessionPresent {
		t.Errorf("dev5 through node %d after the kill: session present false", rest[1].ID)
	}
	expectPayloads(t, fmt.Sprintf("dev5 through node %d after the kill", rest[1].ID), d5.msgs, acked, "b1", "b2", "b3")

	// The subscriptions came back with the sessions: new messages arrive without subscribing.
	publish3(t, rest[1].MQTTAddr, topic3, false, "c1")
	publish3(t, rest[0].MQTTAddr, topic5, false, "c1")
	acked["b1"], acked["b2"], acked["b3"] = true, true, true
	expectPayloads(t, "dev3 live after the kill", in3, acked, "c1")
	expectPayloads(t, "dev5 live after the kill", d5.msgs, acked, "c1")
}

// TestClusterMQTTTakeoverAcrossNodes: a client id connected through node 1 is taken over by a
// connection with the same id through node 2 (the first is disconnected, the second finds the
// session), and messages published through node 3 reach the second. After the serving node is
// killed, a third connection of the same id through a surviving node finds the session again.
func TestClusterMQTTTakeoverAcrossNodes(t *testing.T) {
	nodes := StartCluster(t, 3)
	first := connect5(t, nodes[0].MQTTAddr, "twin", true, 600)
	first.sub(t, paho.SubscribeOptions{Topic: "cl/twin", QoS: 1})
	second := connect5(t, nodes[1].MQTTAddr, "twin", false, 600)
	if !second.ack.SessionPresent {
		t.Fatal("takeover through node 2: session present false")
	}
	select {
	case <-first.Done():
	case <-time.After(mqttTimeout):
		t.Fatal("the connection through node 1 still open after the takeover through node 2")
	}
	publish3(t, nodes[2].MQTTAddr, "cl/twin", false, "to-second")
	expectPayloads(t, "second", second.msgs, nil, "to-second")

	_, rest := killServing(t, nodes)
	third := connect5(t, rest[0].MQTTAddr, "twin", false, 600)
	if !third.ack.SessionPresent {
		t.Fatal("after the kill: session present false")
	}
	publish3(t, rest[1].MQTTAddr, "cl/twin", false, "to-third")
	expectPayloads(t, "third", third.msgs, map[string]bool{"to-second": true}, "to-third")
}

// TestClusterMQTTRetainedOnEveryNode: a retained message published through one node is what a
// subscriber gets through every node; after the serving node is killed the survivors still
// have it; a retained message replaced after the kill is the new one on all three nodes once
// the killed node is back and its replica of the metadata has caught up.
func TestClusterMQTTRetainedOnEveryNode(t *testing.T) {
	nodes := StartCluster(t, 3)
	const topic = "cl/state/lamp"
	check := func(when string, ns []*Node, want string) {
		t.Helper()
		for _, n := range ns {
			c, _, _ := connect3(t, n.MQTTAddr, fmt.Sprintf("reader-%d-%d", n.ID, time.Now().UnixNano()), true)
			in := sub3(t, c, "cl/state/#", 1)
			m := next(t, in)
			if m.payload != want || !m.retain || m.topic != topic {
				t.Errorf("%s, through node %d: got %+v, want retained %q on %s", when, n.ID, m, want, topic)
			}
			c.Disconnect(100)
		}
	}
	publish3(t, nodes[0].MQTTAddr, topic, true, "on")
	check("published through node 1", nodes, "on")

	killed, rest := killServing(t, nodes)
	check(fmt.Sprintf("node %d killed", killed.ID), rest, "on")
	publish3(t, rest[0].MQTTAddr, topic, true, "off")
	killed.Restart()
	// The retained messages are metadata (group 0): the restarted node's copy must catch up,
	// whichever node a client asks.
	WaitConverged(t, nodes, 60*time.Second)
	check(fmt.Sprintf("replaced, node %d back", killed.ID), nodes, "off")
}
