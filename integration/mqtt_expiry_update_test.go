package integration

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// The session expiry of the newest CONNECT applies to a resumed session [MQTT-3.1.2-23], and a
// DISCONNECT may change it (MQTT 5 §3.14.2.2.2): longer or shorter, kept across a restart, 0
// ending the session with the connection; from 0 to non-zero is a protocol error (0x82).
func TestMQTT5SessionExpiryUpdates(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	s.SkipIfExternal(t, "restarts the broker")
	subscribed := func(id string, expiry uint32) {
		t.Helper()
		c := mqtt5(t, addr, id, true, expiry)
		c.sub(t, paho.SubscribeOptions{Topic: "expiry/" + id, QoS: 1})
		_ = c.Disconnect(&paho.Disconnect{})
	}
	present := func(id string, expiry uint32) bool {
		t.Helper()
		c := mqtt5(t, addr, id, false, expiry)
		_ = c.Disconnect(&paho.Disconnect{})
		return c.ack.SessionPresent
	}
	disconnectWith := func(id string, expiry uint32) {
		t.Helper()
		c := mqtt5(t, addr, id, false, 3600)
		if err := c.Disconnect(&paho.Disconnect{Properties: &paho.DisconnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
			t.Fatal(err)
		}
	}
	// Longer than the session expiry the test waits out below (3 s), which never passes
	// for a session whose expiry grew and always for one whose expiry shrank to 1 s.
	const outlive = 3 * time.Second

	subscribed("grows", 1)
	if !present("grows", 3600) {
		t.Fatal("grows: session gone before its first expiry")
	}
	subscribed("shrinks", 3600)
	if !present("shrinks", 1) {
		t.Fatal("shrinks: session not present")
	}
	subscribed("disconnect-shrinks", 3600)
	disconnectWith("disconnect-shrinks", 1)
	subscribed("disconnect-ends", 3600)
	disconnectWith("disconnect-ends", 0)
	expectNoQueue(t, s, "mqtt.s.disconnect-ends") // DISCONNECT with session expiry 0 ends the session
	// The longer expiry is kept with the session, so a restart does not bring back the
	// one the session was first declared with.
	s.Restart()
	time.Sleep(outlive)
	if !present("grows", 3600) {
		t.Fatal("grows: the session expired after the expiry of its first CONNECT, not its last")
	}
	if present("shrinks", 3600) {
		t.Fatal("shrinks: the session outlived the expiry of its last CONNECT")
	}
	if present("disconnect-shrinks", 3600) {
		t.Fatal("disconnect-shrinks: the session outlived the expiry its DISCONNECT set")
	}

	// Clean start 0 with expiry 0 resumes the session [MQTT-3.1.2-6], which then ends with
	// the connection.
	subscribed("resumed-once", 3600)
	p := mqtt5(t, addr, "expiry-pub", true, 0)
	p.pub(t, &paho.Publish{Topic: "expiry/resumed-once", QoS: 1, Payload: []byte("queued")})
	c := mqtt5(t, addr, "resumed-once", false, 0)
	if !c.ack.SessionPresent {
		t.Fatal("resumed-once: the session was not resumed by a CONNECT with expiry 0")
	}
	if m := next(t, c.msgs); m.payload != "queued" {
		t.Fatalf("resumed-once got %+v", m)
	}
	_ = c.Disconnect(&paho.Disconnect{})
	expectNoQueue(t, s, "mqtt.s.resumed-once") // the session ends with a connection with expiry 0
	if present("resumed-once", 3600) {
		t.Fatal("resumed-once: the session outlived a connection with expiry 0")
	}

	// From 0 to non-zero at DISCONNECT: DISCONNECT 0x82 from the server.
	r, _ := connectRaw(t, addr, 5, "zero-to-more", true, sessionExpiry(0))
	props := sessionExpiry(60)
	r.send(t, mqttPacket(0xE0, append([]byte{0, byte(len(props))}, props...)))
	_, b := r.expect(t, 0xE0)
	if len(b) < 1 || b[0] != 0x82 {
		t.Fatalf("DISCONNECT from the server % x, want reason 0x82", b)
	}
}
