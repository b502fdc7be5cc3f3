package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestClusterSpreadDeadLetterTTLExpires (issue 7): dead-lettering, message TTLs and x-expires
// behave on a durable queue spread to another node as on a local one (the assertions of
// TestDeadLettering, TestQueueMessageTTL, TestPerMessageTTL, TestMaxLengthDropHead,
// TestQueueExpires and TestQueueExpiresNotWhileConsumed, with amqp091-go). Each queue under
// test is checked to run on a node that is not the serving one (its group's leader, as the
// cluster status shows), so its dead letters come back to the serving node to be routed and
// its expiry is decided there.
func TestClusterSpreadDeadLetterTTLExpires(t *testing.T) {
	_, serving := startSpreadCluster(t)
	c := dialRetry(t, serving)
	defer c.Close()
	ch := channel(t, c)
	s := serving.Server
	seq := 0
	// remoteQueue declares a durable queue with args that runs on another node than the
	// serving one: queues are placed round robin, so one of the next three does.
	// declared, if set, runs right after each declaration (before the placement is known).
	remoteQueueThen := func(what string, args amqp.Table, declared func(name string)) string {
		t.Helper()
		for range 6 {
			seq++
			name := Name(t, fmt.Sprintf("%s-%d", what, seq))
			before := newestQueueGroup(t, serving)
			if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
				t.Fatalf("declare %s: %v", name, err)
			}
			cleanupQueue(t, s, name)
			if declared != nil {
				declared(name)
			}
			if leader := stableLeader(t, serving, before); leader != uint64(serving.ID) {
				t.Logf("%s runs on node %d (node %d serves)", name, leader, serving.ID)
				return name
			}
			// Kept (deleting it would make the serving node the least loaded again).
		}
		t.Fatalf("no %s queue placed on another node than the serving one in six", what)
		return ""
	}
	remoteQueue := func(what string, args amqp.Table) string {
		t.Helper()
		return remoteQueueThen(what, args, nil)
	}
	durableQueue := func(what string) string {
		t.Helper()
		seq++
		name := Name(t, fmt.Sprintf("%s-%d", what, seq))
		if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		cleanupQueue(t, s, name)
		return name
	}

	t.Run("dead letters on reject and nack", func(t *testing.T) {
		dlx := declareExchange(t, s, ch, "dlx", "topic", nil)
		dlq := durableQueue("dlq")
		mustBind(t, ch, dlq, "#", dlx, nil)
		q := remoteQueue("dl", amqp.Table{"x-dead-letter-exchange": dlx})
		x := declareExchange(t, s, ch, "x", "direct", nil)
		mustBind(t, ch, q, "orig.key", x, nil)

		checkDeadLettersOnRejectAndNack(t, ch, dlx, dlq, q, x)
	})

	t.Run("dead letters on expiry", func(t *testing.T) {
		dlx := declareExchange(t, s, ch, "dlx", "topic", nil)
		dlq := durableQueue("dlq")
		mustBind(t, ch, dlq, "#", dlx, nil)
		q := remoteQueue("ttl-dl", amqp.Table{"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "expired.key"})
		publish(t, ch, "", q, amqp.Publishing{Expiration: "50", Body: []byte("expired")})
		dm := recvFromGet(t, ch, dlq)
		if dm.RoutingKey != "expired.key" || dm.Expiration != "" {
			t.Fatalf("expired dead letter key %q expiration %q", dm.RoutingKey, dm.Expiration)
		}
		checkXDeath(t, dm, "expired", q, "", []string{q}, 1)
		if oe := dm.Headers["x-death"].([]interface{})[0].(amqp.Table)["original-expiration"]; oe != "50" {
			t.Fatalf("original-expiration %#v, want \"50\"", oe)
		}
	})

	t.Run("max length dead letters", func(t *testing.T) {
		dlq := durableQueue("dlq")
		q := remoteQueue("maxlen", amqp.Table{
			"x-max-length":              int32(2),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": dlq,
		})
		for i := 1; i <= 5; i++ {
			publishConfirmed(t, ch, "", q, text(fmt.Sprint(i)))
		}
		waitMessageCount(t, ch, dlq, 3)
		if got := drain(t, ch, q); !equalStrings(got, []string{"4", "5"}) {
			t.Fatalf("queue kept %v, want [4 5]", got)
		}
		for _, want := range []string{"1", "2", "3"} {
			m, _ := get(t, ch, dlq, true)
			if string(m.Body) != want {
				t.Fatalf("dead letter %q, want %q (in order)", m.Body, want)
			}
			checkXDeath(t, m, "maxlen", q, "", []string{q}, 1)
		}
	})

	t.Run("message TTL", func(t *testing.T) {
		q := remoteQueue("ttl", amqp.Table{"x-message-ttl": int32(100)})
		publishConfirmed(t, ch, "", q, text("1"), text("2"), text("3"))
		waitMessageCount(t, ch, q, 0)
		q2 := remoteQueue("per-msg", nil)
		publishConfirmed(t, ch, "", q2, amqp.Publishing{Expiration: "100", Body: []byte("short")},
			amqp.Publishing{Expiration: "600000", Body: []byte("long")}, text("forever"))
		waitMessageCount(t, ch, q2, 2)
		if got := drain(t, ch, q2); !equalStrings(got, []string{"long", "forever"}) {
			t.Fatalf("left %v", got)
		}
		d := consume(t, ch, q, "c", true, nil)
		expectNoDelivery(t, d)
		publish(t, ch, "", q, text("fresh"))
		if got := string(recv(t, d).Body); got != "fresh" {
			t.Fatalf("got %q", got)
		}
		if err := ch.Cancel("c", false); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("x-expires", func(t *testing.T) {
		// Consumed from its declaration on (finding where it runs takes longer than 300 ms).
		var keepers []string
		kept := remoteQueueThen("kept", amqp.Table{"x-expires": int32(300)}, func(name string) {
			tag := fmt.Sprintf("keeper-%d", len(keepers))
			consume(t, ch, name, tag, true, nil)
			keepers = append(keepers, tag)
		})
		// Long enough to outlive the search for where it runs (two seconds and more).
		name := remoteQueue("exp", amqp.Table{"x-expires": int32(6000)})
		// A passive declare counts as use: probe with mandatory publishes until one comes
		// back unroutable (as TestQueueExpires).
		returns := ch.NotifyReturn(make(chan amqp.Return, 1))
		deadline := time.Now().Add(6*time.Second + waitTimeout)
	probe:
		for {
			if err := ch.Publish("", name, true, false, text("probe")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-returns:
				break probe
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("spread queue with x-expires 6000 still exists %v later", waitTimeout)
			}
		}
		pc := channel(t, c)
		_, err := pc.QueueDeclarePassive(name, true, false, false, false, nil)
		expectChannelClosed(t, c, pc, err, amqp.NotFound, fmt.Sprintf("NOT_FOUND - no queue '%s' in vhost '/'", name))
		// The consumed one is still there, several periods later.
		messageCount(t, ch, kept)
		for _, tag := range keepers {
			if err := ch.Cancel(tag, false); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// newestQueueGroup is the highest queue group id the node's status shows (0: none).
func newestQueueGroup(t *testing.T, n *Node) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := n.Status(ctx)
	if err != nil {
		t.Fatalf("cluster status: %v", err)
	}
	var newest uint64
	for _, g := range st.Groups {
		if g.ID >= 1<<62 && g.ID < 1<<63 && g.ID > newest { // a declared queue's own group
			newest = g.ID
		}
	}
	return newest
}

// stableLeader waits for a queue group newer than after to appear in the node's status and
// returns its leader once the same one has led it for two seconds (a queue placed on the
// serving node takes its group's lead a moment after the declaration).
func stableLeader(t *testing.T, n *Node, after uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var leader uint64
	var since time.Time
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := n.Status(ctx)
		cancel()
		if err == nil {
			var id, l uint64
			for _, g := range st.Groups {
				if g.ID > after && g.ID >= 1<<62 && g.ID < 1<<63 && g.ID > id {
					id, l = g.ID, g.Leader
				}
			}
			if l != leader {
				leader, since = l, time.Now()
			} else if l != 0 && time.Since(since) >= 2*time.Second {
				return l
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no stable leader for the new queue's group")
	return 0
}
