package integration

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Retained messages are kept durably (they survive a restart), matched against wildcard
// filters on subscribe, sent with the retain flag after SUBACK, and cleared by an empty
// retained publish; live subscribers get retained publishes as ordinary messages.
func TestMQTTRetainedMessages(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	s.SkipIfExternal(t, "restarts the broker")
	live := mqtt3(t, addr, "ret-live", true)
	liveIn := sub3(t, live, "ret/#", 1)
	pub := mqtt3(t, addr, "ret-pub", true)
	wait3(t, "retain a", pub.Publish("ret/a", 1, true, "A"))
	wait3(t, "retain b", pub.Publish("ret/b/deep", 0, true, "B"))
	wait3(t, "retain other", pub.Publish("other/x", 1, true, "X"))
	for range 2 {
		if m := next(t, liveIn); m.retain {
			t.Fatalf("live subscriber got %+v with the retain flag [MQTT-3.3.1-9]", m)
		}
	}
	live.Disconnect(100)
	pub.Disconnect(100)
	s.Restart()

	c := mqtt3(t, addr, "ret-new", true)
	in := sub3(t, c, "ret/#", 1)
	got := map[string]received{}
	for range 2 {
		m := next(t, in)
		got[m.topic] = m
	}
	if a := got["ret/a"]; a.payload != "A" || !a.retain || a.qos != 1 {
		t.Fatalf("ret/a after restart: %+v", a)
	}
	if b := got["ret/b/deep"]; b.payload != "B" || !b.retain || b.qos != 0 {
		t.Fatalf("ret/b/deep after restart: %+v", b)
	}
	nothing(t, in)

	p2 := mqtt3(t, addr, "ret-clear", true)
	wait3(t, "clear", p2.Publish("ret/a", 1, true, ""))
	if m := next(t, in); m.topic != "ret/a" || m.payload != "" {
		t.Fatalf("the clearing publish reached the live subscriber as %+v", m)
	}
	c2 := mqtt3(t, addr, "ret-after-clear", true)
	in2 := sub3(t, c2, "ret/+", 1)
	nothing(t, in2) // ret/a cleared; ret/b/deep does not match ret/+

	// MQTT 5 retain handling 2: no retained messages on subscribe.
	c5 := mqtt5(t, addr, "ret-five", true, 0)
	c5.sub(t, paho.SubscribeOptions{Topic: "other/#", QoS: 1, RetainHandling: 2})
	nothing(t, c5.msgs)
	c5.sub(t, paho.SubscribeOptions{Topic: "other/+", QoS: 1})
	if m := next(t, c5.msgs); m.payload != "X" || !m.retain {
		t.Fatalf("MQTT 5 retained: %+v", m)
	}
}

// QoS 2 end to end: delivered exactly once at QoS 2 (3.1.1 and 5), never downgraded.
func TestMQTTQoS2ExactlyOnce(t *testing.T) {
	_, addr := StartParleyMQTT(t)
	sub5 := mqtt5(t, addr, "q2-sub5", true, 0)
	sub5.sub(t, paho.SubscribeOptions{Topic: "q2/#", QoS: 2})
	sub311 := mqtt3(t, addr, "q2-sub311", true)
	in311 := sub3(t, sub311, "q2/#", 2)
	pub5 := mqtt5(t, addr, "q2-pub5", true, 0)
	pub311 := mqtt3(t, addr, "q2-pub311", true)
	const n = 50
	for i := range n {
		pub5.pub(t, &paho.Publish{Topic: "q2/five", QoS: 2, Payload: []byte(fmt.Sprint("f", i))})
		wait3(t, "publish", pub311.Publish("q2/three", 2, false, fmt.Sprint("t", i)))
	}
	for name, ch := range map[string]<-chan received{"MQTT 5": sub5.msgs, "3.1.1": in311} {
		seen := map[string]bool{}
		for range 2 * n {
			m := next(t, ch)
			if m.qos != 2 {
				t.Fatalf("%s subscriber got %q at QoS %d, want 2", name, m.payload, m.qos)
			}
			if seen[m.payload] {
				t.Fatalf("%s subscriber got %q twice", name, m.payload)
			}
			seen[m.payload] = true
		}
		nothing(t, ch)
	}
}

// A QoS 2 PUBLISH sent again (DUP) before PUBREL is acknowledged with a successful PUBREC and
// delivered once [MQTT-4.3.3-10]; raw MQTT 5 packets, so the duplicate is on the wire for sure.
func TestMQTT5QoS2DuplicatePublish(t *testing.T) {
	_, addr := StartParleyMQTT(t)
	sub := mqtt5(t, addr, "dup-sub", true, 0)
	sub.sub(t, paho.SubscribeOptions{Topic: "dup/t", QoS: 2})
	c, err := net.DialTimeout("tcp", addr, mqttTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(mqttTimeout))
	r := &rawMQTT{c: c, br: bufio.NewReader(c)}
	body := append(mqttString("MQTT"), 5, 0xC2, 0, 0, 0) // level 5, user+password+clean, keepalive 0, no properties
	body = append(body, mqttString("dup-raw")...)
	body = append(body, mqttString("guest")...)
	body = append(body, mqttString("guest")...)
	if _, err := c.Write(mqttPacket(0x10, body)); err != nil {
		t.Fatal(err)
	}
	if typ, b, err := r.readPacket(); err != nil || typ != 0x20 || b[1] != 0 {
		t.Fatalf("CONNACK %x % x %v", typ, b, err)
	}
	pub := append(mqttString("dup/t"), 0, 7, 0) // packet id 7, no properties
	pub = append(pub, "once"...)
	for i, first := range []byte{0x34, 0x3C} { // QoS 2, then QoS 2 with DUP
		if _, err := c.Write(mqttPacket(first, pub)); err != nil {
			t.Fatal(err)
		}
		typ, b, err := r.readPacket()
		if err != nil || typ != 0x50 || b[0] != 0 || b[1] != 7 || (len(b) > 2 && b[2] != 0) {
			t.Fatalf("PUBREC for copy %d: %x % x %v, want success", i, typ, b, err)
		}
	}
	if _, err := c.Write([]byte{0x62, 2, 0, 7}); err != nil { // PUBREL
		t.Fatal(err)
	}
	if typ, _, err := r.readPacket(); err != nil || typ != 0x70 {
		t.Fatalf("PUBCOMP %x %v", typ, err)
	}
	if m := next(t, sub.msgs); m.payload != "once" {
		t.Fatalf("got %+v", m)
	}
	nothing(t, sub.msgs)
}
