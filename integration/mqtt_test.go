package integration

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	packets3 "github.com/eclipse/paho.mqtt.golang/packets"
	amqp "github.com/rabbitmq/amqp091-go"
)

// MQTT 3.1.1 publish/subscribe through the core: QoS 0 and 1, wildcards, the delivered QoS is
// the lower of the publish and subscription QoS.
func TestMQTT311PublishSubscribe(t *testing.T) {
	_, addr := StartParleyMQTT(t)
	sub := mqtt3(t, addr, "sub311", true)
	exact := sub3(t, sub, "a/b/c", 1)
	sub2 := mqtt3(t, addr, "sub311-plus", true)
	plus := sub3(t, sub2, "a/+/c", 0)
	sub3c := mqtt3(t, addr, "sub311-hash", true)
	hash := sub3(t, sub3c, "a/#", 1)

	pub := mqtt3(t, addr, "pub311", true)
	wait3(t, "publish qos1", pub.Publish("a/b/c", 1, false, "one"))
	wait3(t, "publish qos0", pub.Publish("a/b/c", 0, false, "zero"))
	wait3(t, "publish other", pub.Publish("a/x/y", 1, false, "other"))

	got := map[string]byte{}
	for range 2 {
		m := next(t, exact)
		if m.topic != "a/b/c" {
			t.Fatalf("exact subscriber got topic %q", m.topic)
		}
		got[m.payload] = m.qos
	}
	if got["one"] != 1 || got["zero"] != 0 || len(got) != 2 {
		t.Fatalf("a/b/c QoS 1 subscriber got %v, want one at QoS 1 and zero at QoS 0", got)
	}
	for range 2 {
		if m := next(t, plus); m.qos != 0 || m.topic != "a/b/c" {
			t.Fatalf("a/+/c QoS 0 subscriber got %+v", m)
		}
	}
	nothing(t, plus)
	seen := map[string]bool{}
	for range 3 {
		seen[next(t, hash).payload] = true
	}
	if !seen["one"] || !seen["zero"] || !seen["other"] {
		t.Fatalf("a/# subscriber got %v", seen)
	}
}

// An AMQP publish to amq.topic with routing key a.b.c reaches MQTT subscribers of a/b/c, a/+/c
// and a/# (3.1.1 and 5), with its properties as MQTT 5 properties.
func TestMQTTReceivesAMQPPublish(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	c311 := mqtt3(t, addr, "amqp-to-mqtt-311", true)
	exact := sub3(t, c311, "a/b/c", 1)
	c5 := mqtt5(t, addr, "amqp-to-mqtt-5", true, 0)
	c5.sub(t, paho.SubscribeOptions{Topic: "a/+/c", QoS: 1})
	c5h := mqtt5(t, addr, "amqp-to-mqtt-5h", true, 0)
	c5h.sub(t, paho.SubscribeOptions{Topic: "a/#", QoS: 0})

	_, _, ch := setupWith(t, s)
	publishConfirmed(t, ch, "amq.topic", "a.b.c", amqp.Publishing{
		Body: []byte("from amqp"), DeliveryMode: amqp.Persistent, ContentType: "text/plain",
		CorrelationId: "corr-1", ReplyTo: "replies.here", Expiration: "60000",
		Headers: amqp.Table{"colour": "blue", "n": int32(7)},
	})
	if m := next(t, exact); m.payload != "from amqp" || m.topic != "a/b/c" || m.qos != 1 {
		t.Fatalf("3.1.1 subscriber got %+v", m)
	}
	m := next(t, c5.msgs)
	if m.payload != "from amqp" || m.qos != 1 {
		t.Fatalf("MQTT 5 subscriber got %+v", m)
	}
	p := m.p5.Properties
	if p == nil || p.ContentType != "text/plain" || string(p.CorrelationData) != "corr-1" ||
		p.ResponseTopic != "replies/here" || p.User.Get("colour") != "blue" || p.User.Get("n") != "7" {
		t.Fatalf("MQTT 5 properties %+v", p)
	}
	if p.MessageExpiry == nil || *p.MessageExpiry == 0 || *p.MessageExpiry > 60 {
		t.Fatalf("message expiry %v, want at most 60 s", p.MessageExpiry)
	}
	if m := next(t, c5h.msgs); m.qos != 0 {
		t.Fatalf("QoS 0 subscription got QoS %d", m.qos)
	}
	// A transient AMQP message is QoS 0 for MQTT.
	publish(t, ch, "amq.topic", "a.b.c", amqp.Publishing{Body: []byte("transient")})
	if m := next(t, exact); m.payload != "transient" || m.qos != 0 {
		t.Fatalf("transient AMQP message arrived as %+v, want QoS 0", m)
	}
}

// MQTT publishes reach AMQP queues bound to amq.topic, with the topic as routing key and the
// MQTT 5 properties as AMQP properties.
func TestMQTTPublishReachesAMQP(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	_, _, ch := setupWith(t, s)
	q := declareQueue(t, s, ch, "mqtt-in", nil)
	if err := ch.QueueBind(q, "sensors.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	d := consume(t, ch, q, "", true, nil)

	c5 := mqtt5(t, addr, "mqtt-to-amqp", true, 0)
	expiry := uint32(30)
	r := c5.pub(t, &paho.Publish{Topic: "sensors/room.1/temp", QoS: 1, Payload: []byte("21.5"),
		Properties: &paho.PublishProperties{ContentType: "text/plain", ResponseTopic: "replies/me",
			CorrelationData: []byte("abc"), MessageExpiry: &expiry,
			User: paho.UserProperties{{Key: "unit", Value: "C"}}}})
	if r.ReasonCode != 0 {
		t.Fatalf("PUBACK reason 0x%02x", r.ReasonCode)
	}
	m := recv(t, d)
	if m.RoutingKey != "sensors.room/1.temp" || string(m.Body) != "21.5" || m.Exchange != "amq.topic" {
		t.Fatalf("AMQP got key %q body %q exchange %q", m.RoutingKey, m.Body, m.Exchange)
	}
	if m.ContentType != "text/plain" || m.ReplyTo != "replies.me" || m.CorrelationId != "abc" ||
		m.Expiration != "30000" || m.DeliveryMode != amqp.Persistent || m.Headers["unit"] != "C" {
		t.Fatalf("AMQP properties: %+v", m)
	}
	c311 := mqtt3(t, addr, "mqtt311-to-amqp", true)
	wait3(t, "publish", c311.Publish("sensors/x", 0, false, "q0"))
	m = recv(t, d)
	if string(m.Body) != "q0" || m.DeliveryMode == amqp.Persistent {
		t.Fatalf("QoS 0 publish arrived as %q mode %d, want transient", m.Body, m.DeliveryMode)
	}
	// MQTT 5: a QoS 1 publish nobody subscribed to is acknowledged with 0x10.
	if r := c5.pub(t, &paho.Publish{Topic: "nobody/listens", QoS: 1, Payload: []byte("x")}); r.ReasonCode != 0x10 {
		t.Fatalf("unrouted publish: PUBACK reason 0x%02x, want 0x10 no matching subscribers", r.ReasonCode)
	}
}

// setupWith opens an AMQP connection and channel on s.
func setupWith(t testing.TB, s *Server) (*Server, *amqp.Connection, *amqp.Channel) {
	t.Helper()
	c := dial(t, s)
	return s, c, channel(t, c)
}

// The same users as AMQP: a bad password is CONNACK 4 (3.1.1) or 0x86 (5); no user name logs
// in as guest (allow_anonymous).
func TestMQTTAuthentication(t *testing.T) {
	_, addr := StartParleyMQTT(t)
	o := paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("bad").SetUsername("guest").
		SetPassword("wrong").SetProtocolVersion(4).SetConnectTimeout(mqttTimeout).SetAutoReconnect(false)
	c := paho3.NewClient(o)
	tok := c.Connect()
	tok.WaitTimeout(mqttTimeout)
	if !errors.Is(tok.Error(), packets3.ErrorRefusedBadUsernameOrPassword) {
		t.Fatalf("3.1.1 bad password: %v, want CONNACK 4 bad user name or password", tok.Error())
	}
	cl, err := dial5(addr, "bad5", true, 0, func(cp *paho.Connect) { cp.Password = []byte("wrong") })
	if err == nil {
		t.Fatal("MQTT 5 connect with a bad password succeeded")
	}
	if cl == nil || cl.ack == nil || cl.ack.ReasonCode != 0x86 {
		t.Fatalf("MQTT 5 bad password: %v (connack %+v), want reason 0x86", err, cl.ack)
	}
	anon := mqtt3(t, addr, "anon", true, func(o *paho3.ClientOptions) { o.SetUsername("").SetPassword("") })
	in := sub3(t, anon, "anon/t", 1)
	wait3(t, "publish", anon.Publish("anon/t", 1, false, "hi"))
	if m := next(t, in); m.payload != "hi" {
		t.Fatalf("anonymous got %+v", m)
	}
}

// A malformed packet closes only that connection; other clients carry on.
func TestMQTTMalformedPacketClosesOnlyThatConnection(t *testing.T) {
	_, addr := StartParleyMQTT(t)
	good := mqtt3(t, addr, "good", true)
	in := sub3(t, good, "still/here", 1)
	for _, raw := range [][]byte{
		{0x10, 0x02, 0xFF, 0xFF},             // CONNECT with garbage
		{0x30, 0x00},                         // PUBLISH before CONNECT
		{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, // remaining length beyond the maximum
	} {
		conn, err := net.DialTimeout("tcp", addr, mqttTimeout)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(raw)
		_ = conn.SetReadDeadline(time.Now().Add(mqttTimeout))
		buf := make([]byte, 64)
		for {
			if _, err := conn.Read(buf); err != nil {
				break // closed by the server (EOF or reset) rather than the deadline
			}
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("%x: connection not closed", raw)
		}
		conn.Close()
	}
	wait3(t, "publish", good.Publish("still/here", 1, false, "ok"))
	if m := next(t, in); m.payload != "ok" {
		t.Fatalf("got %+v", m)
	}
}

// MQTT 5 publish/subscribe: QoS 1 both ways, subscription identifiers, user properties between
// MQTT clients, and the reason codes of SUBACK.
func TestMQTT5PublishSubscribe(t *testing.T) {
	_, addr := StartParleyMQTT(t)
	sub := mqtt5(t, addr, "sub5", true, 0)
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	id := 42
	sa, err := sub.Subscribe(ctx, &paho.Subscribe{Properties: &paho.SubscribeProperties{SubscriptionIdentifier: &id},
		Subscriptions: []paho.SubscribeOptions{{Topic: "five/+", QoS: 1}, {Topic: "bad/#/x", QoS: 1}}})
	if err == nil && (len(sa.Reasons) != 2 || sa.Reasons[0] != 1 || sa.Reasons[1] < 0x80) {
		t.Fatalf("SUBACK reasons %v, want [1, >=0x80]", sa.Reasons)
	}
	pub := mqtt5(t, addr, "pub5", true, 0)
	pub.pub(t, &paho.Publish{Topic: "five/a", QoS: 1, Payload: []byte("p"),
		Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "k", Value: "v"}}}})
	m := next(t, sub.msgs)
	if m.payload != "p" || m.qos != 1 || m.p5.Properties.User.Get("k") != "v" {
		t.Fatalf("got %+v props %+v", m, m.p5.Properties)
	}
	if si := m.p5.Properties.SubscriptionIdentifier; si == nil || *si != 42 {
		t.Fatalf("subscription identifier %v, want 42", si)
	}
	if !bytes.Equal([]byte(m.topic), []byte("five/a")) {
		t.Fatalf("topic %q", m.topic)
	}
}

// MQTT over WebSocket (Web-MQTT): paho.golang over a binary WebSocket with subprotocol "mqtt",
// on the ws_mqtt listener and on the --ws gateway, cross-protocol with a TCP MQTT client.
func TestMQTTOverWebSocket(t *testing.T) {
	wsPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	allPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	wsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(wsPort))
	allAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(allPort))
	s, addr := StartParleyMQTT(t, "--ws-mqtt", wsAddr, "--ws", allAddr)
	s.SkipIfExternal(t, "picks the WebSocket ports")
	tcp := mqtt3(t, addr, "tcp-side", true)
	in := sub3(t, tcp, "ws/+", 1)
	for i, a := range []string{wsAddr, allAddr} {
		ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
		wc, _, err := websocket.Dial(ctx, "ws://"+a+"/ws", &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
		if err != nil {
			cancel()
			t.Fatalf("dial %s: %v", a, err)
		}
		if wc.Subprotocol() != "mqtt" {
			t.Fatalf("subprotocol %q", wc.Subprotocol())
		}
		conn := websocket.NetConn(context.Background(), wc, websocket.MessageBinary)
		cl := paho.NewClient(paho.ClientConfig{Conn: conn})
		// KeepAlive 0: paho.golang writes a packet's header and body in separate Writes, which
		// over a WebSocket net.Conn are separate messages, and its pinger's PINGREQ can land
		// between them (seen as a malformed PUBLISH). Without pings nothing interleaves.
		if _, err := cl.Connect(ctx, &paho.Connect{ClientID: "over-ws-" + strconv.Itoa(i), CleanStart: true, KeepAlive: 0,
			Username: "guest", UsernameFlag: true, Password: []byte("guest"), PasswordFlag: true}); err != nil {
			cancel()
			t.Fatalf("connect over %s: %v", a, err)
		}
		if _, err := cl.Publish(ctx, &paho.Publish{Topic: "ws/" + strconv.Itoa(i), QoS: 1, Payload: []byte("via websocket")}); err != nil {
			t.Fatal(err)
		}
		if m := next(t, in); m.payload != "via websocket" || m.topic != "ws/"+strconv.Itoa(i) {
			t.Fatalf("got %+v", m)
		}
		_ = cl.Disconnect(&paho.Disconnect{})
		cancel()
	}
}
