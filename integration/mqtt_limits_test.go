package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
)

// dialRaw5 opens an MQTT 5 connection by hand: CONNECT (clean start, guest) with the given
// properties, then the CONNACK, which must be a success.
func dialRaw5(t testing.TB, addr, id string, props []byte) *rawMQTT {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, mqttTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(mqttTimeout))
	r := &rawMQTT{c: c, br: bufio.NewReader(c)}
	body := append(mqttString("MQTT"), 5, 0xC2, 0, 0) // level 5, user+password+clean, keepalive 0
	body = binary.AppendUvarint(body, uint64(len(props)))
	body = append(body, props...)
	body = append(body, mqttString(id)...)
	body = append(body, mqttString("guest")...)
	body = append(body, mqttString("guest")...)
	if _, err := c.Write(mqttPacket(0x10, body)); err != nil {
		t.Fatal(err)
	}
	if typ, b, err := r.readPacket(); err != nil || typ != 0x20 || len(b) < 2 || b[1] != 0 {
		t.Fatalf("CONNACK %x % x %v", typ, b, err)
	}
	return r
}

// subscribeRaw5 subscribes (packet id 1, no properties) and waits for the SUBACK.
func (r *rawMQTT) subscribeRaw5(t testing.TB, filter string, qos byte) {
	t.Helper()
	body := append([]byte{0, 1, 0}, mqttString(filter)...)
	body = append(body, qos)
	if _, err := r.c.Write(mqttPacket(0x82, body)); err != nil {
		t.Fatal(err)
	}
	if typ, b, err := r.readPacket(); err != nil || typ != 0x90 || b[len(b)-1] != qos {
		t.Fatalf("SUBACK %x % x %v", typ, b, err)
	}
}

// A packet over the maximum packet size ends the connection: an MQTT 5 client first gets
// DISCONNECT with reason 0x95 [MQTT-3.1.2-24] [MQTT-4.13.1-1], an MQTT 3.1.1 client is just
// closed; other clients carry on.
func TestMQTTPacketOverMaximumSize(t *testing.T) {
	s, addr := StartParleyMQTT(t, "--config", writeConfig(t, "mqtt_options:\n  max_packet_size: 1024\n"))
	s.SkipIfExternal(t, "configures the maximum packet size")
	good := mqtt3(t, addr, "size-good", true)
	in := sub3(t, good, "size/ok", 1)
	big := append(mqttString("size/big"), 0) // MQTT 5: no properties
	big = append(big, make([]byte, 2000)...)

	r := dialRaw5(t, addr, "size-five", nil)
	if _, err := r.c.Write(mqttPacket(0x30, big)); err != nil {
		t.Fatal(err)
	}
	typ, b, err := r.readPacket()
	if err != nil || typ != 0xE0 || len(b) < 1 || b[0] != 0x95 {
		t.Fatalf("MQTT 5 over-size publish: got %x % x %v, want DISCONNECT 0x95", typ, b, err)
	}
	if _, _, err := r.readPacket(); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("after DISCONNECT: %v, want the connection closed", err)
	}

	r3, err := dialRawMQTT(addr, "size-three")
	if err != nil {
		t.Fatal(err)
	}
	defer r3.c.Close()
	_ = r3.c.SetDeadline(time.Now().Add(mqttTimeout))
	if _, err := r3.c.Write(mqttPacket(0x30, big)); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := r3.readPacket(); err == nil {
		t.Fatalf("MQTT 3.1.1 over-size publish: got packet %x, want the connection closed", typ)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("MQTT 3.1.1 over-size publish: connection still open")
	}
	wait3(t, "publish", good.Publish("size/ok", 1, false, "fine"))
	if m := next(t, in); m.payload != "fine" {
		t.Fatalf("got %+v", m)
	}
}

// With max_keep_alive configured, a client asking for more (or for none) is told the
// server's keep-alive in CONNACK [MQTT-3.2.2-21] and held to it: a silent client is closed.
func TestMQTT5ServerKeepAlive(t *testing.T) {
	s, addr := StartParleyMQTT(t, "--config", writeConfig(t, "mqtt_options:\n  max_keep_alive: 1s\n"))
	s.SkipIfExternal(t, "configures the keep-alive")
	c := mqtt5(t, addr, "ka-five", true, 0) // asks for 30 s
	if c.ack.Properties == nil || c.ack.Properties.ServerKeepAlive == nil || *c.ack.Properties.ServerKeepAlive != 1 {
		t.Fatalf("CONNACK server keep-alive %+v, want 1", c.ack.Properties)
	}
	r := dialRaw5(t, addr, "ka-silent", nil) // asks for none, then says nothing
	_ = r.c.SetDeadline(time.Now().Add(mqttTimeout))
	if _, _, err := r.readPacket(); err == nil {
		t.Fatal("a silent client got a packet instead of being closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a silent client is still connected long after 1.5 keep-alives")
	}
}

// Topic aliases from server to client: used only up to the client's Topic Alias Maximum
// [MQTT-3.3.2-9], the topic sent with an alias the first time and left empty after; a client
// that allows none gets none [MQTT-3.1.2-26]. Checked by resolving the aliases as the client
// must.
func TestMQTT5OutboundTopicAliases(t *testing.T) {
	_, addr := StartParleyMQTT(t)
	two := uint16(2)
	c := mqtt5(t, addr, "alias-two", true, 0, func(cp *paho.Connect) { cp.Properties.TopicAliasMaximum = &two })
	c.sub(t, paho.SubscribeOptions{Topic: "alias/#", QoS: 1})
	none := mqtt5(t, addr, "alias-none", true, 0)
	none.sub(t, paho.SubscribeOptions{Topic: "alias/#", QoS: 1})
	p := mqtt5(t, addr, "alias-pub", true, 0)
	topics := []string{"alias/a", "alias/b", "alias/c", "alias/a", "alias/b", "alias/c", "alias/a"}
	for i, tp := range topics {
		p.pub(t, &paho.Publish{Topic: tp, QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	table := map[uint16]string{}
	empty := 0
	for i := range topics {
		m := next(t, c.msgs)
		topic := m.topic
		if a := m.p5.Properties.TopicAlias; a != nil {
			if *a == 0 || *a > two {
				t.Fatalf("message %d: alias %d, client allows 1..%d", i, *a, two)
			}
			if topic == "" {
				topic = table[*a]
				empty++
			} else {
				table[*a] = topic
			}
		}
		if topic == "" || topic != topics[i] {
			t.Fatalf("message %d (%s): resolved topic %q, want %q", i, m.payload, topic, topics[i])
		}
	}
	if empty == 0 {
		t.Fatal("no message used an alias in place of its topic")
	}
	for i := range topics {
		if m := next(t, none.msgs); m.p5.Properties.TopicAlias != nil || m.topic != topics[i] {
			t.Fatalf("client without aliases: message %d %+v alias %v", i, m, m.p5.Properties.TopicAlias)
		}
	}
}

// The client's Receive Maximum is the consumer's credit: no more unacknowledged QoS 1
// deliveries than it allows [MQTT-3.3.4-9], and each PUBACK lets one more through.
func TestMQTT5ReceiveMaximumIsCredit(t *testing.T) {
	_, addr := StartParleyMQTT(t)
	r := dialRaw5(t, addr, "credit-two", []byte{0x21, 0, 2}) // Receive Maximum 2
	r.subscribeRaw5(t, "credit/t", 1)
	p := mqtt5(t, addr, "credit-pub", true, 0)
	for i := range 5 {
		p.pub(t, &paho.Publish{Topic: "credit/t", QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	readPublish := func() uint16 {
		t.Helper()
		_ = r.c.SetReadDeadline(time.Now().Add(mqttTimeout))
		typ, b, err := r.readPacket()
		if err != nil || typ&0xF0 != 0x30 {
			t.Fatalf("want PUBLISH, got %x %v", typ, err)
		}
		n := int(binary.BigEndian.Uint16(b))
		return binary.BigEndian.Uint16(b[2+n:])
	}
	silent := func() {
		t.Helper()
		_ = r.c.SetReadDeadline(time.Now().Add(quietPeriod))
		if typ, _, err := r.readPacket(); err == nil {
			t.Fatalf("packet %x beyond the receive maximum", typ)
		} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatal(err)
		}
	}
	ids := []uint16{readPublish(), readPublish()}
	silent()
	for round := range 3 {
		if _, err := r.c.Write([]byte{0x40, 2, byte(ids[0] >> 8), byte(ids[0])}); err != nil { // PUBACK
			t.Fatal(err)
		}
		ids = append(ids[1:], readPublish())
		if round < 2 {
			silent()
		}
	}
}

// mqtts: with a certificate configured, the TLS listener serves MQTT (3.1.1 and 5).
func TestMQTTOverTLS(t *testing.T) {
	certFile, keyFile, pool := selfSignedCert(t)
	mqtts := freeAddr(t)
	cfg := writeConfig(t, "tls:\n  cert_file: "+certFile+"\n  key_file: "+keyFile+"\n")
	s, addr := StartParleyMQTT(t, "--config", cfg, "--mqtts", mqtts)
	s.SkipIfExternal(t, "configures TLS listeners")
	waitListening(t, mqtts)
	tc := &tls.Config{RootCAs: pool}
	c3 := mqtt3(t, mqtts, "tls-three", true, func(o *paho3.ClientOptions) {
		o.Servers = nil
		o.AddBroker("ssl://" + mqtts).SetTLSConfig(tc)
	})
	in := sub3(t, c3, "tls/t", 1)
	conn, err := tls.Dial("tcp", mqtts, tc)
	if err != nil {
		t.Fatal(err)
	}
	c5 := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	if _, err := c5.Connect(ctx, &paho.Connect{ClientID: "tls-five", CleanStart: true, KeepAlive: 30,
		Username: "guest", UsernameFlag: true, Password: []byte("guest"), PasswordFlag: true}); err != nil {
		t.Fatalf("MQTT 5 over TLS: %v", err)
	}
	defer func() { _ = c5.Disconnect(&paho.Disconnect{}) }()
	if _, err := c5.Publish(ctx, &paho.Publish{Topic: "tls/t", QoS: 1, Payload: []byte("sealed")}); err != nil {
		t.Fatal(err)
	}
	if m := next(t, in); m.payload != "sealed" {
		t.Fatalf("got %+v", m)
	}
	// The plain listener still serves alongside.
	plain := mqtt3(t, addr, "tls-plain", true)
	wait3(t, "plain publish", plain.Publish("tls/t", 1, false, "plain"))
	if m := next(t, in); m.payload != "plain" {
		t.Fatalf("got %+v", m)
	}
}
