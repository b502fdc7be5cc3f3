package integration

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// MQTT 5 message expiry is counted down while a message waits for an offline persistent
// session, also across a kill -9: it arrives with the interval less the time it waited
// [MQTT-3.3.2-6], and one that expired meanwhile never arrives [MQTT-3.3.2-5]. A retained
// message's interval counts down too.
func TestMQTT5MessageExpiryCountsDown(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	s.SkipIfExternal(t, "kills the broker")
	c := mqtt5(t, addr, "expiring", true, 3600)
	c.sub(t, paho.SubscribeOptions{Topic: "exp/#", QoS: 1})
	_ = c.Disconnect(&paho.Disconnect{})

	p := mqtt5(t, addr, "exp-pub", true, 0)
	interval := func(n uint32) *paho.PublishProperties { return &paho.PublishProperties{MessageExpiry: &n} }
	p.pub(t, &paho.Publish{Topic: "exp/short", QoS: 1, Payload: []byte("short"), Properties: interval(1)})
	p.pub(t, &paho.Publish{Topic: "exp/long", QoS: 1, Payload: []byte("long"), Properties: interval(600)})
	p.pub(t, &paho.Publish{Topic: "exp/none", QoS: 1, Payload: []byte("none")})
	p.pub(t, &paho.Publish{Topic: "expr/retained", QoS: 1, Retain: true, Payload: []byte("kept"), Properties: interval(600)})
	_ = p.Disconnect(&paho.Disconnect{})
	// Long enough for the 1 s message to expire and the 600 s one to lose at least 2 s,
	// whatever the rounding up to whole seconds.
	time.Sleep(2500 * time.Millisecond)
	s.Kill()
	s.Restart()

	c = mqtt5(t, addr, "expiring", false, 3600)
	got := map[string]received{}
	for range 2 {
		m := next(t, c.msgs)
		got[m.payload] = m
	}
	nothing(t, c.msgs)
	if _, ok := got["short"]; ok {
		t.Fatal("a message delivered after its expiry interval had passed")
	}
	long, ok := got["long"]
	if !ok {
		t.Fatalf("got %v, want long and none", got)
	}
	if e := long.p5.Properties.MessageExpiry; e == nil || *e >= 599 || *e == 0 {
		t.Fatalf("message expiry interval %v after waiting over 2 s, want below 599 and above 0", e)
	}
	if none, ok := got["none"]; !ok || none.p5.Properties.MessageExpiry != nil {
		t.Fatalf("message without expiry: %+v", none)
	}
	r := mqtt5(t, addr, "exp-retained", true, 0)
	r.sub(t, paho.SubscribeOptions{Topic: "expr/retained", QoS: 1})
	m := next(t, r.msgs)
	if e := m.p5.Properties.MessageExpiry; !m.retain || e == nil || *e >= 599 {
		t.Fatalf("retained message %+v expiry %v, want retained with under 599 s left", m, e)
	}
}
