package integration

import (
	"context"
	"sort"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"
)

// A shared subscription lives as long as a session subscribed to it does (MQTT 5 §4.8.2): with
// every member disconnected but their sessions kept, the group's queue keeps what is published,
// also across a kill -9, and the first member to come back gets it. A group whose members
// were all clean sessions, or whose last persistent member unsubscribed, is gone with them.
func TestMQTT5SharedSubscriptionKeptWhileMembersAway(t *testing.T) {
	s, addr := StartParleyMQTT(t)
	s.SkipIfExternal(t, "kills the broker")
	const filter = "$share/keep/shared/kept"
	for _, id := range []string{"member-a", "member-b"} {
		c := mqtt5(t, addr, id, true, 3600)
		c.sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1})
		_ = c.Disconnect(&paho.Disconnect{})
	}
	p := mqtt5(t, addr, "share-keeper-pub", true, 0)
	publishAll := func(bodies ...string) {
		t.Helper()
		for _, b := range bodies {
			p.pub(t, &paho.Publish{Topic: "shared/kept", QoS: 1, Payload: []byte(b)})
		}
	}
	receiveAll := func(c *client5, n int) []string {
		t.Helper()
		var got []string
		for range n {
			m := next(t, c.msgs)
			if m.topic != "shared/kept" {
				t.Fatalf("got %+v", m)
			}
			got = append(got, m.payload)
		}
		sort.Strings(got)
		return got
	}
	publishAll("one", "two", "three")
	a := mqtt5(t, addr, "member-a", false, 3600)
	if got := receiveAll(a, 3); strings.Join(got, ",") != "one,three,two" {
		t.Fatalf("member-a got %v", got)
	}
	_ = a.Disconnect(&paho.Disconnect{})

	publishAll("four", "five")
	s.Kill()
	s.Restart()
	b := mqtt5(t, addr, "member-b", false, 3600)
	// member-a's acknowledgements are lazy log entries (cluster/lazy.go): one made in the last
	// few milliseconds before the kill may be forgotten, and its message comes again, once (at
	// least once). Anything else, or four and five missing, is a failure.
	got, again := map[string]int{}, 0
	for got["four"] == 0 || got["five"] == 0 {
		m := next(t, b.msgs)
		got[m.payload]++
		switch m.payload {
		case "four", "five":
		case "one", "two", "three":
			again++
		default:
			t.Fatalf("member-b after the restart got %+v", m)
		}
		if got[m.payload] > 1 {
			t.Fatalf("member-b after the restart got %q twice (%v)", m.payload, got)
		}
	}
	if again > 0 {
		t.Logf("%d messages acknowledged just before the kill came again: %v", again, got)
	}
	nothing(t, b.msgs)

	// The last persistent members unsubscribe: the group's queue goes.
	for _, c := range []*client5{b, mqtt5(t, addr, "member-a", false, 3600)} {
		ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
		if _, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filter}}); err != nil {
			t.Fatal(err)
		}
		cancel()
		_ = c.Disconnect(&paho.Disconnect{})
	}
	expectNoQueue(t, s, "mqtt.share.keep.shared/kept")

	// Clean sessions only: the group ends with its last connection.
	c := mqtt5(t, addr, "clean-member", true, 0)
	c.sub(t, paho.SubscribeOptions{Topic: "$share/fleeting/shared/kept", QoS: 1})
	_ = c.Disconnect(&paho.Disconnect{})
	expectNoQueue(t, s, "mqtt.share.fleeting.shared/kept")
}

// expectNoQueue fails unless the queue does not exist (waiting a little: deletions that follow
// a disconnect are not synchronous with it).
func expectNoQueue(t *testing.T, s *Server, q string) {
	t.Helper()
	_, conn, _ := setupWith(t, s)
	for range 50 {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		_, err = ch.QueueDeclarePassive(q, false, false, false, false, nil)
		if e, ok := err.(*amqp.Error); ok && e.Code == amqp.NotFound {
			return
		}
		_ = ch.Close()
		quiet()
	}
	t.Fatalf("queue %s still exists", q)
}
