package integration

import (
	"context"
	"fmt"
	"net"
	"sort"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	amqp "github.com/rabbitmq/amqp091-go"
)

// persistent3 connects a clean-session-false MQTT 3.1.1 client whose messages (including those
// that arrive before it subscribes again) go to the returned channel.
func persistent3(t testing.TB, addr, id string) (paho3.Client, <-chan received) {
	t.Helper()
	ch := make(chan received, 1024)
	c := mqtt3(t, addr, id, false, func(o *paho3.ClientOptions) {
		o.SetDefaultPublishHandler(func(_ paho3.Client, m paho3.Message) {
			ch <- received{topic: m.Topic(), payload: string(m.Payload()), qos: m.Qos(), dup: m.Duplicate()}
		})
	})
	return c, ch
}

func payloads(t testing.TB, ch <-chan received, n int) []string {
	t.Helper()
	var out []string
	for range n {
		out = append(out, next(t, ch).payload)
	}
	sort.Strings(out)
	return out
}

// A clean-session-false (3.1.1) session keeps its subscription and its QoS 1 messages across
// a disconnect, a graceful restart and a kill -9.
func TestMQTTPersistentSessionSurvivesRestartAndKill(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	s.SkipIfExternal(t, "restarts the broker")
	c, _ := persistent3(t, addr, "keeper")
	wait3(t, "subscribe", c.Subscribe("keep/#", 1, nil))
	c.Disconnect(100)

	pub := func(msgs ...string) {
		p := mqtt3(t, addr, fmt.Sprintf("pub-%s", msgs[0]), true)
		for _, m := range msgs {
			wait3(t, "publish "+m, p.Publish("keep/it", 1, false, m))
		}
		p.Disconnect(100)
	}
	pub("a1", "a2")
	s.Restart()
	c2, in := persistent3(t, addr, "keeper")
	if got := payloads(t, in, 2); fmt.Sprint(got) != "[a1 a2]" {
		t.Fatalf("after restart got %v, want [a1 a2]", got)
	}
	// The subscription itself survived: new publishes arrive without subscribing again.
	pub("b1")
	if m := next(t, in); m.payload != "b1" {
		t.Fatalf("got %+v", m)
	}
	c2.Disconnect(100)
	pub("c1", "c2", "c3")
	s.Kill()
	s.Restart()
	_, in = persistent3(t, addr, "keeper")
	// QoS 1 is at least once: an acknowledgement the crash caught before it was written
	// brings that message again, flagged DUP. Nothing else may come twice, nothing be lost.
	want := map[string]bool{"c1": true, "c2": true, "c3": true}
	for len(want) > 0 {
		m := next(t, in)
		switch {
		case want[m.payload]:
			delete(want, m.payload)
		case m.payload == "b1" || m.payload == "a1" || m.payload == "a2":
			if !m.dup {
				t.Fatalf("%s came again after kill -9 without DUP", m.payload)
			}
		default:
			t.Fatalf("after kill -9 got unexpected %+v", m)
		}
	}
}

// MQTT 5: a session expiry > 0 keeps the session (CONNACK session present), clean start
// discards it; the session is the durable queue mqtt.s.<client-id>, visible to AMQP.
func TestMQTT5SessionExpiryAndCleanStart(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	c := mqtt5(t, addr, "five-keeper", true, 3600)
	if c.ack.SessionPresent {
		t.Fatal("first connection reports a session present")
	}
	c.sub(t, paho.SubscribeOptions{Topic: "five/keep", QoS: 1})
	_ = c.Disconnect(&paho.Disconnect{})
	p := mqtt5(t, addr, "five-pub", true, 0)
	p.pub(t, &paho.Publish{Topic: "five/keep", QoS: 1, Payload: []byte("kept")})

	_, _, ch := setupWith(t, s)
	if n := messageCount(t, ch, "mqtt.s.five-keeper"); n != 1 {
		t.Fatalf("session queue holds %d messages, want 1", n)
	}
	c = mqtt5(t, addr, "five-keeper", false, 3600)
	if !c.ack.SessionPresent {
		t.Fatal("reconnect: session present false")
	}
	if m := next(t, c.msgs); m.payload != "kept" {
		t.Fatalf("got %+v", m)
	}
	_ = c.Disconnect(&paho.Disconnect{})
	p.pub(t, &paho.Publish{Topic: "five/keep", QoS: 1, Payload: []byte("dropped")})
	c = mqtt5(t, addr, "five-keeper", true, 0)
	if c.ack.SessionPresent {
		t.Fatal("clean start: session present true")
	}
	nothing(t, c.msgs)
}

// A second connection with the same client id takes the session over: the first gets
// DISCONNECT 0x8E (MQTT 5) and the messages go to the second.
func TestMQTTSessionTakeover(t *testing.T) {
	_, addr := StartParleyMQTT(t)
	first := mqtt5(t, addr, "twin", true, 3600)
	first.sub(t, paho.SubscribeOptions{Topic: "twin/t", QoS: 1})
	second, err := dial5(addr, "twin", false, 3600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Disconnect(&paho.Disconnect{}) })
	if !second.ack.SessionPresent {
		t.Fatal("takeover: session present false")
	}
	select {
	case <-first.Done():
	case <-ctxTimeout(t).Done():
		t.Fatal("first connection still open after the takeover")
	}
	p := mqtt5(t, addr, "twin-pub", true, 0)
	p.pub(t, &paho.Publish{Topic: "twin/t", QoS: 1, Payload: []byte("to the new one")})
	if m := next(t, second.msgs); m.payload != "to the new one" {
		t.Fatalf("got %+v", m)
	}
}

// A will goes through the core: an AMQP queue bound to amq.topic and an MQTT subscriber both
// get it when the client's connection drops; a clean DISCONNECT sends none.
func TestMQTTWillThroughTheCore(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	_, _, ch := setupWith(t, s)
	q := declareQueue(t, s, ch, "wills", nil)
	if err := ch.QueueBind(q, "status.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	d := consume(t, ch, q, "", true, nil)
	watcher := mqtt3(t, addr, "watcher", true)
	in := sub3(t, watcher, "status/+", 1)

	conn, err := net.DialTimeout("tcp", addr, mqttTimeout)
	if err != nil {
		t.Fatal(err)
	}
	cl := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	if _, err := cl.Connect(ctx, &paho.Connect{ClientID: "mortal", CleanStart: true, KeepAlive: 30,
		Username: "guest", UsernameFlag: true, Password: []byte("guest"), PasswordFlag: true,
		WillMessage: &paho.WillMessage{Topic: "status/mortal", QoS: 1, Payload: []byte("gone")}}); err != nil {
		t.Fatal(err)
	}
	conn.Close() // no DISCONNECT: the will must be published
	if m := recv(t, d); string(m.Body) != "gone" || m.RoutingKey != "status.mortal" || m.DeliveryMode != amqp.Persistent {
		t.Fatalf("AMQP got will %q key %q mode %d", m.Body, m.RoutingKey, m.DeliveryMode)
	}
	if m := next(t, in); m.payload != "gone" || m.topic != "status/mortal" {
		t.Fatalf("MQTT got will %+v", m)
	}

	polite := mqtt3(t, addr, "polite", true, func(o *paho3.ClientOptions) { o.SetWill("status/polite", "gone", 1, false) })
	polite.Disconnect(100)
	nothing(t, in)
	expectNoDelivery(t, d)
}
