package integration

import (
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"
)

// $share/<group>/<filter> is one queue with competing consumers: each message goes to exactly
// one member of the group, every member gets some, and a plain subscriber still gets all.
func TestMQTT5SharedSubscription(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	a := mqtt5(t, addr, "share-a", true, 0)
	a.sub(t, paho.SubscribeOptions{Topic: "$share/workers/jobs/+", QoS: 1})
	b := mqtt5(t, addr, "share-b", true, 0)
	b.sub(t, paho.SubscribeOptions{Topic: "$share/workers/jobs/+", QoS: 1})
	all := mqtt5(t, addr, "share-all", true, 0)
	all.sub(t, paho.SubscribeOptions{Topic: "jobs/#", QoS: 1})
	_, _, ch := setupWith(t, s)
	if n := messageCount(t, ch, "mqtt.share.workers.jobs/+"); n != 0 {
		t.Fatalf("shared queue holds %d", n)
	}
	p := mqtt5(t, addr, "share-pub", true, 0)
	const n = 40
	for i := range n {
		p.pub(t, &paho.Publish{Topic: "jobs/x", QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	seen := map[string]string{}
	for len(seen) < n {
		select {
		case m := <-a.msgs:
			if prev, dup := seen[m.payload]; dup {
				t.Fatalf("%s went to %s and to a", m.payload, prev)
			}
			seen[m.payload] = "a"
		case m := <-b.msgs:
			if prev, dup := seen[m.payload]; dup {
				t.Fatalf("%s went to %s and to b", m.payload, prev)
			}
			seen[m.payload] = "b"
		case <-ctxTimeout(t).Done():
			t.Fatalf("only %d of %d shared deliveries", len(seen), n)
		}
	}
	count := map[string]int{}
	for _, who := range seen {
		count[who]++
	}
	if count["a"] == 0 || count["b"] == 0 {
		t.Fatalf("competing consumers did not share: %v", count)
	}
	for range n {
		next(t, all.msgs)
	}
	nothing(t, a.msgs)
	nothing(t, b.msgs)
}

// No-local: a client does not get its own publishes on a no-local subscription [MQTT-3.8.3-3];
// retain-as-published keeps the retain flag on forwarded messages [MQTT-3.3.1-12].
func TestMQTT5NoLocalAndRetainAsPublished(t *testing.T) {
	_, addr := StartParleyMQTT(t)
	c := mqtt5(t, addr, "nolocal", true, 0)
	c.sub(t, paho.SubscribeOptions{Topic: "nl/t", QoS: 1, NoLocal: true})
	other := mqtt5(t, addr, "nolocal-other", true, 0)
	c.pub(t, &paho.Publish{Topic: "nl/t", QoS: 1, Payload: []byte("mine")})
	other.pub(t, &paho.Publish{Topic: "nl/t", QoS: 1, Payload: []byte("theirs")})
	if m := next(t, c.msgs); m.payload != "theirs" {
		t.Fatalf("no-local subscriber got %q", m.payload)
	}
	nothing(t, c.msgs)

	rap := mqtt5(t, addr, "rap", true, 0)
	rap.sub(t, paho.SubscribeOptions{Topic: "rap/t", QoS: 1, RetainAsPublished: true, RetainHandling: 2})
	plain := mqtt5(t, addr, "plain", true, 0)
	plain.sub(t, paho.SubscribeOptions{Topic: "rap/t", QoS: 1, RetainHandling: 2})
	other.pub(t, &paho.Publish{Topic: "rap/t", QoS: 1, Retain: true, Payload: []byte("r")})
	if m := next(t, rap.msgs); !m.retain {
		t.Fatal("retain-as-published subscriber got the message without the retain flag")
	}
	if m := next(t, plain.msgs); m.retain {
		t.Fatal("plain subscriber got a live message with the retain flag [MQTT-3.3.1-12]")
	}
	other.pub(t, &paho.Publish{Topic: "rap/t", QoS: 1, Retain: true, Payload: nil})
}

// Topic aliases from the client are resolved (mochi keeps the inbound alias table), and an
// RPC between MQTT 5 (response topic + correlation data) and an AMQP responder works.
func TestMQTT5TopicAliasAndRPCWithAMQP(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	_, _, ch := setupWith(t, s)
	q := declareQueue(t, s, ch, "rpc-server", nil)
	if err := ch.QueueBind(q, "rpc.requests", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	reqs := consume(t, ch, q, "", true, nil)

	c := mqtt5(t, addr, "rpc-client", true, 0)
	if c.ack.Properties == nil || c.ack.Properties.TopicAliasMaximum == nil || *c.ack.Properties.TopicAliasMaximum == 0 {
		t.Fatal("CONNACK advertises no topic alias maximum")
	}
	c.sub(t, paho.SubscribeOptions{Topic: "rpc/replies/rpc-client", QoS: 1})
	alias := uint16(3)
	for i, topic := range []string{"rpc/requests", ""} { // the second publish uses the alias only
		c.pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(fmt.Sprint("req", i)),
			Properties: &paho.PublishProperties{TopicAlias: &alias, ResponseTopic: "rpc/replies/rpc-client",
				CorrelationData: []byte(fmt.Sprint("c", i))}})
	}
	for i := range 2 {
		d := recv(t, reqs)
		if d.RoutingKey != "rpc.requests" || string(d.Body) != fmt.Sprint("req", i) {
			t.Fatalf("request %d: key %q body %q", i, d.RoutingKey, d.Body)
		}
		publish(t, ch, "amq.topic", d.ReplyTo, amqp.Publishing{CorrelationId: d.CorrelationId,
			Body: []byte("answer to " + string(d.Body)), DeliveryMode: amqp.Persistent})
		m := next(t, c.msgs)
		if m.payload != "answer to req"+fmt.Sprint(i) || string(m.p5.Properties.CorrelationData) != fmt.Sprint("c", i) {
			t.Fatalf("reply %d: %q correlation %q", i, m.payload, m.p5.Properties.CorrelationData)
		}
	}
}
