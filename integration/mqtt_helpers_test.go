package integration

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
)

// mqttTimeout bounds every MQTT client operation in the tests.
const mqttTimeout = 10 * time.Second

// mqtt3 connects an MQTT 3.1.1 client (Eclipse paho.mqtt.golang) as guest.
func mqtt3(t testing.TB, addr, clientID string, clean bool, configure ...func(*paho3.ClientOptions)) paho3.Client {
	t.Helper()
	o := paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetUsername("guest").SetPassword("guest").SetCleanSession(clean).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(mqttTimeout).SetWriteTimeout(mqttTimeout).SetOrderMatters(false)
	for _, f := range configure {
		f(o)
	}
	c := paho3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(mqttTimeout) {
		t.Fatalf("mqtt3 connect %s: timed out", clientID)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("mqtt3 connect %s: %v", clientID, err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// wait3 waits for a paho.mqtt.golang token and fails the test on error or timeout.
func wait3(t testing.TB, what string, tok paho3.Token) {
	t.Helper()
	if !tok.WaitTimeout(mqttTimeout) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// received is what an MQTT subscriber got.
type received struct {
	topic   string
	payload string
	qos     byte
	retain  bool
	dup     bool
	p5      *paho.Publish // MQTT 5 only
}

// sub3 subscribes an MQTT 3.1.1 client and returns the channel its messages arrive on.
func sub3(t testing.TB, c paho3.Client, filter string, qos byte) <-chan received {
	t.Helper()
	ch := make(chan received, 1024)
	wait3(t, "subscribe "+filter, c.Subscribe(filter, qos, func(_ paho3.Client, m paho3.Message) {
		ch <- received{topic: m.Topic(), payload: string(m.Payload()), qos: m.Qos(), retain: m.Retained(), dup: m.Duplicate()}
	}))
	return ch
}

// next returns the next message or fails after mqttTimeout.
func next(t testing.TB, ch <-chan received) received {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(mqttTimeout):
		t.Fatalf("no MQTT message within %v", mqttTimeout)
	}
	return received{}
}

// nothing checks that no message arrives for a short while.
func nothing(t testing.TB, ch <-chan received) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("unexpected MQTT message %q on %q", m.payload, m.topic)
	case <-time.After(quietPeriod):
	}
}

// client5 is an MQTT 5 client (Eclipse paho.golang) with its received messages.
type client5 struct {
	*paho.Client
	msgs chan received
	ack  *paho.Connack
}

// mqtt5 connects an MQTT 5 client as guest; expiry is the session expiry interval.
func mqtt5(t testing.TB, addr, clientID string, clean bool, expiry uint32, configure ...func(*paho.Connect)) *client5 {
	t.Helper()
	c, err := dial5(addr, clientID, clean, expiry, configure...)
	if err != nil {
		t.Fatalf("mqtt5 connect %s: %v", clientID, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
	return c
}

func dial5(addr, clientID string, clean bool, expiry uint32, configure ...func(*paho.Connect)) (*client5, error) {
	conn, err := net.DialTimeout("tcp", addr, mqttTimeout)
	if err != nil {
		return nil, err
	}
	cl := &client5{msgs: make(chan received, 1024)}
	cl.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			cl.msgs <- received{topic: p.Topic, payload: string(p.Payload), qos: p.QoS, retain: p.Retain, dup: p.Duplicate(), p5: p}
			return true, nil
		}},
	})
	cp := &paho.Connect{ClientID: clientID, CleanStart: clean, KeepAlive: 30,
		Username: "guest", UsernameFlag: true, Password: []byte("guest"), PasswordFlag: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, RequestProblemInfo: true}}
	for _, f := range configure {
		f(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	ack, err := cl.Connect(ctx, cp)
	cl.ack = ack
	if err != nil {
		conn.Close()
		return cl, err
	}
	return cl, nil
}

func (c *client5) sub(t testing.TB, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts})
	if err != nil {
		t.Fatalf("mqtt5 subscribe: %v", err)
	}
	return sa
}

func (c *client5) pub(t testing.TB, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil {
		t.Fatalf("mqtt5 publish %s: %v", p.Topic, err)
	}
	return r
}
