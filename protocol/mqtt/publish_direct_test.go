package mqtt

import (
	"io"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestPublishDirect: plain QoS 0 and 1 publishes (conn.publishDirect) are acknowledged with
// mochi's PUBACK bytes and delivered at the right QoS, from one session's shared header tables;
// the publishes it leaves to mochi are answered as mochi answers them: a QoS 1 publish reusing
// the identifier of an open inbound QoS 2 flow gets PUBREC [MQTT-4.3.3-10], and one to a $SYS
// topic is dropped without an answer.
func TestPublishDirect(t *testing.T) {
	addr := startServer(t, DefaultConfig())
	for _, v := range []byte{4, 5} {
		sub := dialRaw(t, addr, v, connect(v, "pd-sub"), subscribe(1, "pd/#", 1))
		sub.expect(packets.Connack)
		sub.expect(packets.Suback)
		pub := dialRaw(t, addr, v, connect(v, "pd-pub"))
		pub.expect(packets.Connack)

		pub.send(publish(7, 1, "pd/a", "one"))
		var raw [4]byte
		if _, err := io.ReadFull(pub.c, raw[:]); err != nil {
			t.Fatalf("v%d: PUBACK: %v", v, err)
		}
		if raw != [4]byte{packets.Puback << 4, 2, 0, 7} {
			t.Fatalf("v%d: PUBACK bytes % x", v, raw)
		}
		pub.send(publish(0, 0, "pd/b", "two"), publish(8, 1, "pd/c", "three"), publish(0, 0, "pd/b", "four"))
		if ack := pub.expect(packets.Puback); ack.PacketID != 8 || ack.ReasonCode != 0 {
			t.Fatalf("v%d: PUBACK %+v", v, ack)
		}
		// An open inbound QoS 2 flow with identifier 9: a QoS 1 publish with the same
		// identifier goes to mochi, which answers it as a resend of the QoS 2 one.
		pub.send(publish(9, 2, "pd/d", "five"))
		pub.expect(packets.Pubrec)
		pub.send(publish(9, 1, "pd/e", "six"))
		if pk := pub.expect(packets.Pubrec); pk.PacketID != 9 {
			t.Fatalf("v%d: answer to a reused identifier %+v", v, pk)
		}
		pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 9})
		pub.expect(packets.Pubcomp)
		// Not a topic to publish to: no PUBACK (the PINGRESP comes first) and no delivery.
		pub.send(publish(10, 1, "$SYS/x", "seven"), pingreq)
		pub.expect(packets.Pingresp)

		want := []struct {
			topic, payload string
			qos            byte
		}{{"pd/a", "one", 1}, {"pd/b", "two", 0}, {"pd/c", "three", 1}, {"pd/b", "four", 0}, {"pd/d", "five", 1}}
		for i, w := range want {
			pk := sub.expect(packets.Publish)
			if pk.TopicName != w.topic || string(pk.Payload) != w.payload || pk.FixedHeader.Qos != w.qos {
				t.Fatalf("v%d: delivery %d: %s %q QoS %d, want %s %q QoS %d", v, i, pk.TopicName, pk.Payload,
					pk.FixedHeader.Qos, w.topic, w.payload, w.qos)
			}
			if v == 5 && len(pk.Properties.User) != 0 {
				t.Fatalf("v%d: delivery %d has user properties %+v: Parley's own headers leaked", v, i, pk.Properties.User)
			}
			if pk.FixedHeader.Qos > 0 {
				sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
			}
		}
		sub.send(pingreq)
		sub.expect(packets.Pingresp) // nothing else was delivered ("six" was not a new message, "seven" went nowhere)
		pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		pub.expectClosed()
		sub.expectClosed()
	}
}
