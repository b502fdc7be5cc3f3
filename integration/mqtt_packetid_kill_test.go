package integration

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Unacknowledged QoS 1 and 2 deliveries to a persistent session come again after a kill -9 of
// the broker under the packet identifiers they first had, with DUP set [MQTT-4.4.0-1]
// [MQTT-3.3.1-1]: a QoS 2 subscriber whose PUBREC the crash lost knows the message for the one
// it has and does not deliver it twice [MQTT-4.3.3-10]. MQTT 3.1.1 and 5.
func TestMQTTPacketIdentifiersSurviveKill(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	s.SkipIfExternal(t, "kills the broker")
	type sent struct {
		id  uint16
		qos byte
	}
	readPublish := func(r *rawMQTT) (topic string, id uint16, first byte) {
		t.Helper()
		_ = r.c.SetDeadline(time.Now().Add(mqttTimeout))
		typ, b, err := r.readPacket()
		if err != nil || typ&0xF0 != 0x30 {
			t.Fatalf("want PUBLISH, got %x % x %v", typ, b, err)
		}
		n := int(binary.BigEndian.Uint16(b))
		return string(b[2 : 2+n]), binary.BigEndian.Uint16(b[2+n:]), typ
	}
	for _, level := range []byte{4, 5} {
		id := fmt.Sprintf("kill-ids-%d", level)
		topic := fmt.Sprintf("killids/%d/", level)
		var props []byte
		if level == 5 {
			props = sessionExpiry(3600)
		}
		r, _ := connectRaw(t, addr, level, id, false, props)
		sub := []byte{0, 1} // packet id
		if level == 5 {
			sub = append(sub, 0) // no properties
		}
		r.send(t, mqttPacket(0x82, append(append(sub, mqttString(topic+"+")...), 2)))
		r.expect(t, 0x90)
		p := mqtt5(t, addr, id+"-pub", true, 0)
		// Acknowledged ones first, so the unacknowledged ones are not under the identifiers
		// a fresh connection hands out first.
		for i := range 3 {
			p.pub(t, &paho.Publish{Topic: topic + "acked", QoS: 1, Payload: []byte{byte(i)}})
			_, pid, _ := readPublish(r)
			r.send(t, ack(0x40, pid))
		}
		p.pub(t, &paho.Publish{Topic: topic + "one", QoS: 1, Payload: []byte("one")})
		p.pub(t, &paho.Publish{Topic: topic + "two", QoS: 2, Payload: []byte("two")})
		first := map[string]sent{}
		for range 2 {
			tp, pid, typ := readPublish(r)
			first[tp] = sent{pid, (typ >> 1) & 3}
		}
		if first[topic+"one"].qos != 1 || first[topic+"two"].qos != 2 {
			t.Fatalf("level %d: first deliveries %v", level, first)
		}
		// No PUBACK, no PUBREC (or one the crash lost): the broker dies with both open. (A
		// QoS 1 delivery's identifier is stored without waiting; the QoS 2 one, sent after
		// it, waited for its own record, which the log commits after the first.)
		s.Kill()
		s.Restart()
		r, present := connectRaw(t, addr, level, id, false, props)
		if !present {
			t.Fatalf("level %d: session not present after the restart", level)
		}
		// An acknowledgement is written with the next write of its queue's log or within
		// 10 ms (README, "Data and durability"), so one of the acknowledged messages may come again,
		// with DUP, if the kill came first: QoS 1 allows it. Each of the two open ones must come
		// again under its identifier.
		for again := 0; again < 2; {
			tp, pid, typ := readPublish(r)
			if typ&0x08 == 0 {
				t.Fatalf("level %d: %s sent again without DUP", level, tp)
			}
			if tp == topic+"acked" {
				t.Logf("level %d: an acknowledged message (id %d) came again after the kill", level, pid)
				r.send(t, ack(0x40, pid))
				continue
			}
			again++
			if pid != first[tp].id {
				t.Fatalf("level %d: %s sent again under packet id %d after the kill, first under %d", level, tp, pid, first[tp].id)
			}
			if (typ>>1)&3 == 2 {
				r.send(t, ack(0x50, pid)) // PUBREC
				r.expect(t, 0x62)
				r.send(t, ack(0x70, pid))
			} else {
				r.send(t, ack(0x40, pid))
			}
		}
		_ = r.c.SetReadDeadline(time.Now().Add(quietPeriod))
		if typ, b, err := r.readPacket(); err == nil {
			t.Fatalf("level %d: after the acknowledgements got %x % x", level, typ, b)
		}
	}
}
