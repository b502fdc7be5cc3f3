package integration

import (
	"bufio"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"
)

// connectRaw opens an MQTT connection by hand (level 4 or 5) as guest, with clean session /
// clean start as asked and, for MQTT 5, the given CONNECT properties; it returns the
// connection and CONNACK's session-present flag.
func connectRaw(t testing.TB, addr string, level byte, id string, clean bool, props []byte) (*rawMQTT, bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, mqttTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(mqttTimeout))
	r := &rawMQTT{c: c, br: bufio.NewReader(c)}
	flags := byte(0xC0)
	if clean {
		flags |= 0x02
	}
	body := append(mqttString("MQTT"), level, flags, 0, 0)
	if level == 5 {
		body = binary.AppendUvarint(body, uint64(len(props)))
		body = append(body, props...)
	}
	body = append(body, mqttString(id)...)
	body = append(body, mqttString("guest")...)
	body = append(body, mqttString("guest")...)
	r.send(t, mqttPacket(0x10, body))
	typ, b := r.expect(t, 0x20)
	if len(b) < 2 || b[1] != 0 {
		t.Fatalf("CONNACK %x % x", typ, b)
	}
	return r, b[0]&1 == 1
}

func (r *rawMQTT) send(t testing.TB, pk []byte) {
	t.Helper()
	_ = r.c.SetDeadline(time.Now().Add(mqttTimeout))
	if _, err := r.c.Write(pk); err != nil {
		t.Fatal(err)
	}
}

// expect reads the next packet and fails unless its first byte is want.
func (r *rawMQTT) expect(t testing.TB, want byte) (byte, []byte) {
	t.Helper()
	_ = r.c.SetDeadline(time.Now().Add(mqttTimeout))
	typ, b, err := r.readPacket()
	if err != nil || typ != want {
		t.Fatalf("want packet %x, got %x % x %v", want, typ, b, err)
	}
	return typ, b
}

// sessionExpiry is the MQTT 5 CONNECT property Session Expiry Interval.
func sessionExpiry(s uint32) []byte { return binary.BigEndian.AppendUint32([]byte{0x11}, s) }

// ack is a PUBACK/PUBREC/PUBREL/PUBCOMP packet.
func ack(first byte, id uint16) []byte { return []byte{first, 2, byte(id >> 8), byte(id)} }

// successAck: an MQTT 5 acknowledgement without a reason code, or with 0.
func successAck(b []byte) bool { return len(b) == 2 || b[2] == 0 }

// Exactly once from an MQTT 5 client across a kill -9 of the broker: an inbound QoS 2
// publish answered with PUBREC is remembered with the persistent session, so after the restart
// the same PUBLISH sent again (DUP) is recognised and a PUBREL completes it with a successful
// PUBCOMP (not 0x92), and the message reaches its queue once [MQTT-4.3.3-10] [MQTT-4.4.0-1].
func TestMQTTQoS2InboundSurvivesKill(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	s.SkipIfExternal(t, "kills the broker")
	_, _, ch := setupWith(t, s)
	q := Name(t, "exactly-once")
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, "once.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	r, _ := connectRaw(t, addr, 5, "qos2-in", false, sessionExpiry(3600))
	publish := func(first byte, id uint16, payload string) []byte {
		b := append(mqttString("once/t"), byte(id>>8), byte(id), 0) // no properties
		return mqttPacket(first, append(b, payload...))
	}
	for id, payload := range map[uint16]string{7: "resent", 8: "released", 9: "old nine"} {
		r.send(t, publish(0x34, id, payload)) // QoS 2
		if _, b := r.expect(t, 0x50); !successAck(b) {
			t.Fatalf("PUBREC %d % x", id, b)
		}
	}
	s.Kill()
	s.Restart()

	r, present := connectRaw(t, addr, 5, "qos2-in", false, sessionExpiry(3600))
	if !present {
		t.Fatal("session not present after the restart")
	}
	r.send(t, publish(0x3C, 7, "resent")) // the same publish again, DUP: the PUBREC was "lost"
	if _, b := r.expect(t, 0x50); !successAck(b) {
		t.Fatalf("PUBREC for the resent publish % x", b)
	}
	for _, id := range []uint16{7, 8} {
		r.send(t, ack(0x62, id)) // PUBREL
		if _, b := r.expect(t, 0x70); !successAck(b) {
			t.Fatalf("PUBCOMP %d after the restart: % x, want success (the identifier was forgotten)", id, b)
		}
	}
	// The identifiers are free again: a new message under 7 is a new message. So is one
	// under 9 without DUP: a client reuses an identifier only once its flow is over, which is
	// how a record whose deletion a crash lost looks after the restart.
	for id, payload := range map[uint16]string{7: "new", 9: "new nine"} {
		r.send(t, publish(0x34, id, payload))
		if _, b := r.expect(t, 0x50); !successAck(b) {
			t.Fatalf("PUBREC for a new publish % x", b)
		}
		r.send(t, ack(0x62, id))
		r.expect(t, 0x70)
	}

	_, _, ch = setupWith(t, s)
	waitMessageCount(t, ch, q, 5)
	got := map[string]int{}
	for range 5 {
		m, ok := get(t, ch, q, true)
		if !ok {
			t.Fatal("queue emptied early")
		}
		got[string(m.Body)]++
	}
	if got["resent"] != 1 || got["released"] != 1 || got["new"] != 1 || got["old nine"] != 1 || got["new nine"] != 1 {
		t.Fatalf("queue got %v, want each message once", got)
	}
}

// Exactly once to an MQTT subscriber across a kill -9: a QoS 2 delivery whose PUBREC the
// broker received stays released in the persistent session, so after the restart the broker
// sends PUBREL for it again and never the message [MQTT-4.4.0-1].
func TestMQTTQoS2OutboundSurvivesKill(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	s.SkipIfExternal(t, "kills the broker")
	r, _ := connectRaw(t, addr, 4, "qos2-out", false, nil)
	r.send(t, mqttPacket(0x82, append(append([]byte{0, 1}, mqttString("deliver/t")...), 2)))
	r.expect(t, 0x90)
	p := mqtt5(t, addr, "qos2-out-pub", true, 0)
	p.pub(t, &paho.Publish{Topic: "deliver/t", QoS: 2, Payload: []byte("one")})
	_, b := r.expect(t, 0x34)
	id := binary.BigEndian.Uint16(b[2+len("deliver/t"):])
	r.send(t, ack(0x50, id)) // PUBREC
	if _, b := r.expect(t, 0x62); binary.BigEndian.Uint16(b) != id {
		t.Fatalf("PUBREL for %d: % x", id, b)
	}
	// No PUBCOMP: the broker dies with the flow open.
	s.Kill()
	s.Restart()
	r, present := connectRaw(t, addr, 4, "qos2-out", false, nil)
	if !present {
		t.Fatal("session not present after the restart")
	}
	_, b = r.expect(t, 0x62)
	if binary.BigEndian.Uint16(b) != id {
		t.Fatalf("PUBREL after the restart for % x, want %d", b, id)
	}
	r.send(t, ack(0x70, id)) // PUBCOMP
	_ = r.c.SetReadDeadline(time.Now().Add(quietPeriod))
	if typ, b, err := r.readPacket(); err == nil {
		t.Fatalf("after PUBCOMP got %x % x: the message came twice", typ, b)
	}
}

// The will of a persistent session whose connection died with the broker is published after
// the restart, after its will delay [MQTT-3.1.3-9], through the core; a client that comes
// back within the delay cancels it.
func TestMQTT5WillAfterBrokerKill(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	s.SkipIfExternal(t, "kills the broker")
	_, _, ch := setupWith(t, s)
	q := Name(t, "wills")
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, "lastwill.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	withWill := func(topic string, delay uint32) func(*paho.Connect) {
		return func(cp *paho.Connect) {
			cp.WillMessage = &paho.WillMessage{Topic: topic, QoS: 1, Payload: []byte(topic)}
			cp.WillProperties = &paho.WillProperties{WillDelayInterval: &delay}
		}
	}
	if _, err := dial5(addr, "dies-with-broker", false, 3600, withWill("lastwill/dead", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := dial5(addr, "comes-back", false, 3600, withWill("lastwill/back", 5)); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	s.Restart()
	back := mqtt5(t, addr, "comes-back", false, 3600)
	_, _, ch = setupWith(t, s)
	d := consume(t, ch, q, "", true, nil)
	if m := recv(t, d); string(m.Body) != "lastwill/dead" || m.RoutingKey != "lastwill.dead" {
		t.Fatalf("will %q with key %q, want lastwill/dead", m.Body, m.RoutingKey)
	}
	// The other will's delay (5 s) passes with its client connected: never sent.
	select {
	case m := <-d:
		t.Fatalf("will %q published for a client that came back", m.Body)
	case <-time.After(6 * time.Second):
	}
	_ = back.Disconnect(&paho.Disconnect{})
	expectNoDelivery(t, d)
}

// A persistent session's shared subscription is resumed with the session: on reconnect and
// after a restart the client gets the group's messages without subscribing again.
func TestMQTT5SharedSubscriptionResumed(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	s.SkipIfExternal(t, "restarts the broker")
	c := mqtt5(t, addr, "sharer", true, 3600)
	c.sub(t, paho.SubscribeOptions{Topic: "$share/grp/shared/t", QoS: 1})
	_ = c.Disconnect(&paho.Disconnect{})
	p := mqtt5(t, addr, "share-pub", true, 0)
	for round, restart := range []bool{false, true} {
		if restart {
			s.Restart()
			p = mqtt5(t, addr, "share-pub", true, 0)
		}
		c = mqtt5(t, addr, "sharer", false, 3600)
		if !c.ack.SessionPresent {
			t.Fatalf("round %d: session not present", round)
		}
		p.pub(t, &paho.Publish{Topic: "shared/t", QoS: 1, Payload: []byte("to the group")})
		if m := next(t, c.msgs); m.payload != "to the group" || m.topic != "shared/t" {
			t.Fatalf("round %d: got %+v", round, m)
		}
		_ = c.Disconnect(&paho.Disconnect{})
	}
	// Unsubscribing ends it for good.
	c = mqtt5(t, addr, "sharer", false, 3600)
	ctx := ctxTimeout(t)
	if _, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"$share/grp/shared/t"}}); err != nil {
		t.Fatal(err)
	}
	_ = c.Disconnect(&paho.Disconnect{})
	c = mqtt5(t, addr, "sharer", false, 3600)
	p.pub(t, &paho.Publish{Topic: "shared/t", QoS: 0, Payload: []byte("nobody")})
	nothing(t, c.msgs)
}

// Session expiry deletes the session and its queue: MQTT 5's own interval, also when the
// broker restarted meanwhile, and the configured persistent_session_expiry for MQTT 3.1.1.
func TestMQTTSessionExpiryDeletesSession(t *testing.T) {
	s, addr := StartParleyMQTT(t, "--config", writeConfig(t, "mqtt_options:\n  persistent_session_expiry: 2s\n"))
	s.SkipIfExternal(t, "configures session expiry")
	c5 := mqtt5(t, addr, "short-five", true, 2)
	c5.sub(t, paho.SubscribeOptions{Topic: "expire/t", QoS: 1})
	_ = c5.Disconnect(&paho.Disconnect{})
	c3 := mqtt3(t, addr, "short-three", false)
	wait3(t, "subscribe", c3.Subscribe("expire/t", 1, nil))
	c3.Disconnect(100)
	s.Restart()
	_, conn, _ := setupWith(t, s)
	// A passive declare is a use of the queue, which restarts its x-expires clock (as in
	// RabbitMQ), so the check looks less often than the expiry.
	for _, q := range []string{"mqtt.s.short-five", "mqtt.s.short-three"} {
		deadline := time.Now().Add(3 * waitTimeout)
		for {
			time.Sleep(3 * time.Second)
			ch, err := conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			_, err = ch.QueueDeclarePassive(q, false, false, false, false, nil)
			if e, ok := err.(*amqp.Error); ok && e.Code == amqp.NotFound {
				break
			}
			_ = ch.Close()
			if time.Now().After(deadline) {
				t.Fatalf("session queue %s still there %v after its expiry (err %v)", q, 3*waitTimeout, err)
			}
		}
	}
	c5 = mqtt5(t, addr, "short-five", false, 2)
	if c5.ack.SessionPresent {
		t.Fatal("an expired session is present")
	}
}

// A QoS 1 or 2 message sent to a persistent session and not acknowledged when the connection
// drops comes again to the next connection with DUP set and under the same packet identifier
// [MQTT-4.4.0-1] [MQTT-3.3.1-1], so a QoS 2 receiver that has it already knows it for the same
// message.
func TestMQTTRedeliveryKeepsPacketIdentifier(t *testing.T) {
	_, addr := StartParleyMQTT(t)
	r, _ := connectRaw(t, addr, 4, "same-ids", false, nil)
	r.send(t, mqttPacket(0x82, append(append([]byte{0, 1}, mqttString("ids/+")...), 2)))
	r.expect(t, 0x90)
	p := mqtt5(t, addr, "same-ids-pub", true, 0)
	readPublish := func(r *rawMQTT) (string, uint16, byte) {
		t.Helper()
		_ = r.c.SetDeadline(time.Now().Add(mqttTimeout))
		typ, b, err := r.readPacket()
		if err != nil || typ&0xF0 != 0x30 {
			t.Fatalf("want PUBLISH, got %x %v", typ, err)
		}
		n := int(binary.BigEndian.Uint16(b))
		return string(b[2 : 2+n]), binary.BigEndian.Uint16(b[2+n:]), typ
	}
	// A first message, acknowledged, so the unacknowledged ones are not under the
	// identifiers a fresh connection would hand out first.
	p.pub(t, &paho.Publish{Topic: "ids/zero", QoS: 1, Payload: []byte("zero")})
	_, id0, _ := readPublish(r)
	r.send(t, ack(0x40, id0))
	p.pub(t, &paho.Publish{Topic: "ids/one", QoS: 1, Payload: []byte("one")})
	p.pub(t, &paho.Publish{Topic: "ids/two", QoS: 2, Payload: []byte("two")})
	first := map[string]uint16{}
	for range 2 {
		topic, id, _ := readPublish(r)
		first[topic] = id
	}
	r.c.Close() // no acknowledgement
	r, present := connectRaw(t, addr, 4, "same-ids", false, nil)
	if !present {
		t.Fatal("session not present")
	}
	for range 2 {
		topic, id, typ := readPublish(r)
		if typ&0x08 == 0 {
			t.Fatalf("%s sent again without DUP", topic)
		}
		if id != first[topic] {
			t.Fatalf("%s sent again under packet id %d, first under %d", topic, id, first[topic])
		}
		if typ&0x06 == 0x04 { // QoS 2
			r.send(t, ack(0x50, id))
			r.expect(t, 0x62)
			r.send(t, ack(0x70, id))
		} else {
			r.send(t, ack(0x40, id))
		}
	}
}
