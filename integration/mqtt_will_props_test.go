package integration

import (
	"bufio"
	"encoding/binary"
	"net"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"
)

// An MQTT 5 will keeps every will property on its way through the core [MQTT-3.1.3-10]: an
// AMQP consumer sees its content type, correlation id, reply-to, expiration and user properties
// as headers, and an MQTT 5 subscriber the MQTT properties again. A delayed will of a
// persistent session whose connection died with the broker (kill -9) keeps them too: it was
// stored with the session and is published after the restart.
func TestMQTT5WillProperties(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	_, _, ch := setupWith(t, s)
	q := Name(t, "will-props")
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	cleanupQueue(t, s, q)
	if err := ch.QueueBind(q, "props.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	watcher := mqtt5(t, addr, "props-watcher", true, 0)
	watcher.sub(t, paho.SubscribeOptions{Topic: "props/#", QoS: 1})

	// paho.golang (v0.23) encodes only the will delay and user properties of a will (it packs
	// them as a CONNECT's), so this CONNECT is written by hand.
	connectWithWill := func(id, topic string, expiry, delay uint32) net.Conn {
		t.Helper()
		props := []byte{0x01, 1}                                         // payload format: UTF-8
		props = binary.BigEndian.AppendUint32(append(props, 0x02), 3600) // message expiry
		props = append(append(props, 0x03), mqttString("application/json")...)
		props = append(append(props, 0x08), mqttString("replies/"+topic)...)
		props = append(append(props, 0x09), mqttString("corr-"+topic)...)
		props = binary.BigEndian.AppendUint32(append(props, 0x18), delay)
		props = append(append(append(props, 0x26), mqttString("site")...), mqttString("north")...)
		flags := byte(0xC0 | 0x08 | 0x04) // user, password, will QoS 1, will
		if expiry == 0 {
			flags |= 0x02
		}
		connProps := sessionExpiry(expiry)
		body := append(mqttString("MQTT"), 5, flags, 0, 30)
		body = append(binary.AppendUvarint(body, uint64(len(connProps))), connProps...)
		body = append(body, mqttString(id)...)
		body = append(binary.AppendUvarint(body, uint64(len(props))), props...)
		body = append(body, mqttString("props/"+topic)...)
		body = append(body, mqttString("{\"gone\":true}")...)
		body = append(body, mqttString("guest")...)
		body = append(body, mqttString("guest")...)
		c, err := net.DialTimeout("tcp", addr, mqttTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		r := &rawMQTT{c: c, br: bufio.NewReader(c)}
		r.send(t, mqttPacket(0x10, body))
		if _, b := r.expect(t, 0x20); len(b) < 2 || b[1] != 0 {
			t.Fatalf("CONNACK % x", b)
		}
		return c
	}
	check := func(topic string, d <-chan amqp.Delivery) {
		t.Helper()
		m := recv(t, d)
		if m.RoutingKey != "props."+topic || m.ContentType != "application/json" ||
			m.CorrelationId != "corr-"+topic || m.ReplyTo != "replies."+topic || m.Expiration != "3600000" ||
			m.Headers["site"] != "north" {
			t.Fatalf("AMQP will: key %q content-type %q correlation-id %q reply-to %q expiration %q headers %v",
				m.RoutingKey, m.ContentType, m.CorrelationId, m.ReplyTo, m.Expiration, m.Headers)
		}
		w := next(t, watcher.msgs)
		p := w.p5
		if w.topic != "props/"+topic || p.Properties == nil || p.Properties.ContentType != "application/json" ||
			string(p.Properties.CorrelationData) != "corr-"+topic || p.Properties.ResponseTopic != "replies/"+topic ||
			p.Properties.PayloadFormat == nil || *p.Properties.PayloadFormat != 1 ||
			p.Properties.MessageExpiry == nil || *p.Properties.MessageExpiry == 0 || *p.Properties.MessageExpiry > 3600 ||
			p.Properties.User.Get("site") != "north" {
			t.Fatalf("MQTT 5 will on %q: %+v", w.topic, p.Properties)
		}
	}

	d := consume(t, ch, q, "", true, nil)
	connectWithWill("props-mortal", "now", 0, 0).Close() // no DISCONNECT: the will goes
	check("now", d)

	s.SkipIfExternal(t, "kills the broker")
	connectWithWill("props-delayed", "later", 3600, 1)
	s.Kill()
	s.Restart()
	watcher = mqtt5(t, addr, "props-watcher", true, 0)
	watcher.sub(t, paho.SubscribeOptions{Topic: "props/#", QoS: 1})
	_, _, ch = setupWith(t, s)
	check("later", consume(t, ch, q, "", true, nil))
}
