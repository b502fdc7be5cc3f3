package integration

import (
	"os"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// Exactly once for an inbound QoS 2 publish across a crash at the worst moments: the broker
// kills itself (test fault hook PARLEYTEST_MQTT_QOS2_CRASH) after recording the publish and
// before storing the message ("before-publish"), or after storing the message in every queue
// and before the PUBREC ("after-publish"). Either way the client, which got no PUBREC, sends
// the PUBLISH again with DUP after the restart, gets PUBREC and PUBCOMP, and the message is in
// each of its two queues (an AMQP queue and an MQTT subscriber's session) exactly once
// [MQTT-4.3.3-10].
func TestMQTTQoS2InboundCrashWindow(t *testing.T) {
	for _, point := range []string{"before-publish", "after-publish"} {
		t.Run(point, func(t *testing.T) {
			t.Setenv("PARLEYTEST_MQTT_QOS2_CRASH", point)
			s, addr := StartParleyMQTT(t)
			s.SkipIfExternal(t, "crashes the broker")
			_ = os.Unsetenv("PARLEYTEST_MQTT_QOS2_CRASH") // for the restart (t.Setenv restores it)
			_, _, ch := setupWith(t, s)
			q := Name(t, "qos2-crash")
			if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
			if err := ch.QueueBind(q, "crash2.#", "amq.topic", false, nil); err != nil {
				t.Fatal(err)
			}
			sub := mqtt5(t, addr, "crash2-sub", true, 3600)
			sub.sub(t, paho.SubscribeOptions{Topic: "crash2/#", QoS: 2})
			_ = sub.Disconnect(&paho.Disconnect{})

			r, _ := connectRaw(t, addr, 5, "crash2-pub", false, sessionExpiry(3600))
			publish := func(first byte) []byte {
				b := append(mqttString("crash2/t"), 0, 7, 0) // packet id 7, no properties
				return mqttPacket(first, append(b, "exactly once"...))
			}
			r.send(t, publish(0x34)) // QoS 2
			if typ, b, err := r.readPacket(); err == nil {
				t.Fatalf("the broker answered %x % x instead of dying at %s", typ, b, point)
			}
			s.Restart()

			r, present := connectRaw(t, addr, 5, "crash2-pub", false, sessionExpiry(3600))
			if !present {
				t.Fatal("publisher session not present after the restart")
			}
			r.send(t, publish(0x3C)) // the same PUBLISH again, DUP
			if _, b := r.expect(t, 0x50); !successAck(b) {
				t.Fatalf("PUBREC for the resent publish % x", b)
			}
			r.send(t, ack(0x62, 7)) // PUBREL
			if _, b := r.expect(t, 0x70); !successAck(b) {
				t.Fatalf("PUBCOMP % x", b)
			}

			_, _, ch = setupWith(t, s)
			waitMessageCount(t, ch, q, 1)
			if n := messageCount(t, ch, q); n != 1 {
				t.Fatalf("AMQP queue holds %d copies, want 1", n)
			}
			sub = mqtt5(t, addr, "crash2-sub", false, 3600)
			if m := next(t, sub.msgs); m.payload != "exactly once" {
				t.Fatalf("subscriber got %+v", m)
			}
			nothing(t, sub.msgs)
		})
	}
}
