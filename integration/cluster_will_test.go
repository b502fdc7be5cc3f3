package integration

import (
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
)

// clusterWillDelay is the MQTT 5 will delay of TestClusterWillOfDeadServingNode, in seconds.
const clusterWillDelay = 2

// TestClusterWillOfDeadServingNode: two persistent MQTT sessions with wills are connected
// (through two nodes, so to the serving node) when the serving node is killed: an MQTT 3.1.1
// one (published at once) and an MQTT 5 one with a will delay. The node that takes over serving
// publishes both, once, which an AMQP consumer of a durable queue bound to amq.topic gets
// through a surviving node. Then the killed node comes back and the serving node is killed
// again, until the node killed first is the one that serves (a few rounds at most): no node
// that serves later, the old one included, publishes a will again.
func TestClusterWillOfDeadServingNode(t *testing.T) {
	nodes := StartCluster(t, 3)
	q := Name(t, "wills")
	c := dialRetry(t, nodes[0])
	ch := channel(t, c)
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, "clwill.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	c.Close()

	mqtt3(t, nodes[1].MQTTAddr, "cl-will-3", false, func(o *paho3.ClientOptions) {
		o.SetWill("clwill/three", "clwill/three", 1, false)
	})
	delay := uint32(clusterWillDelay)
	if _, err := dial5(nodes[2].MQTTAddr, "cl-will-5", false, 600, func(cp *paho.Connect) {
		cp.WillMessage = &paho.WillMessage{Topic: "clwill/five", QoS: 1, Payload: []byte("clwill/five")}
		cp.WillProperties = &paho.WillProperties{WillDelayInterval: &delay}
	}); err != nil {
		t.Fatal(err)
	}

	first, rest := killServing(t, nodes)
	t.Logf("node %d killed", first.ID)
	cc := dialRetry(t, rest[0])
	cch := channel(t, cc)
	d := consume(t, cch, q, "", false, nil)
	var got []string
	for len(got) < 2 {
		m := recv(t, d)
		got = append(got, string(m.Body))
		if m.RoutingKey != "clwill.three" && m.RoutingKey != "clwill.five" {
			t.Errorf("will %q with routing key %q", m.Body, m.RoutingKey)
		}
		if err := m.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"clwill/five", "clwill/three"}) {
		t.Fatalf("wills %v, want each of clwill/five and clwill/three once", got)
	}
	cc.Close()

	// The killed node comes back (a standby) and nodes serve in turn: none publishes a will
	// again, whatever its delay.
	killed := first
	for round := 1; ; round++ {
		killed.Restart()
		WaitConverged(t, nodes, 60*time.Second)
		var serving *Node
		killed, serving = killServingNode(t, nodes)
		t.Logf("round %d: node %d killed, node %d serves", round, killed.ID, serving.ID)
		time.Sleep((clusterWillDelay + 1) * time.Second) // a delayed will would be out by now
		cc := dialRetry(t, serving)
		cch := channel(t, cc)
		if n := messageCount(t, cch, q); n != 0 {
			for range n {
				if m, ok := get(t, cch, q, true); ok {
					t.Errorf("will %q published again by node %d", m.Body, serving.ID)
				}
			}
			t.FailNow()
		}
		cc.Close()
		if serving == first {
			return
		}
		if round == 4 {
			t.Logf("node %d, killed first, never served again in %d rounds: the others' takeovers were checked", first.ID, round)
			return
		}
	}
}

// killServingNode kills the serving node among nodes and returns it and the node that serves
// after it.
func killServingNode(t testing.TB, nodes []*Node) (killed, serving *Node) {
	t.Helper()
	killed, rest := killServing(t, nodes)
	return killed, WaitServing(t, rest)
}
