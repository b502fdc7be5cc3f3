package integration

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Queue TTL (x-message-ttl): messages expire from the queue without being delivered.
func TestQueueMessageTTL(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", amqp.Table{"x-message-ttl": int32(100)})
	// Confirms make sure the messages were enqueued before the count is polled to zero.
	publishConfirmed(t, ch, "", q, text("1"), text("2"), text("3"))
	waitMessageCount(t, ch, q, 0)
	d := consume(t, ch, q, "c", true, nil)
	expectNoDelivery(t, d)
	// A consumer that is present gets messages before they expire.
	publish(t, ch, "", q, text("fresh"))
	if got := string(recv(t, d).Body); got != "fresh" {
		t.Fatalf("got %q", got)
	}
}

// Per-message TTL (expiration property), alone and combined with a queue TTL (the lower wins).
func TestPerMessageTTL(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	// Confirmed, so that all three are in the queue before its count is polled: a count of 2
	// read while "forever" was still on its way was taken for the head's expiry.
	publishConfirmed(t, ch, "", q, amqp.Publishing{Expiration: "100", Body: []byte("short")},
		amqp.Publishing{Expiration: "600000", Body: []byte("long")}, text("forever"))
	// The head expires; RabbitMQ drops expired messages at the head only, which is where it is.
	waitMessageCount(t, ch, q, 2)
	if got := drain(t, ch, q); !equalStrings(got, []string{"long", "forever"}) {
		t.Fatalf("left %v", got)
	}
	q2 := declareQueue(t, s, ch, "q2", amqp.Table{"x-message-ttl": int32(100)})
	publishConfirmed(t, ch, "", q2, amqp.Publishing{Expiration: "600000", Body: []byte("queue ttl wins")})
	waitMessageCount(t, ch, q2, 0)

	// An expiration that is not a non-negative integer string is refused.
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	publish(t, ch, "", q, amqp.Publishing{Expiration: "soon", Body: []byte("bad")})
	e := waitChannelClose(t, closed)
	if e.Code != amqp.PreconditionFailed || e.Reason != "PRECONDITION_FAILED - invalid expiration 'soon': no_integer" {
		t.Fatalf("bad expiration: %d %q", e.Code, e.Reason)
	}
}

// x-max-length with the default overflow (drop-head) drops from the head; with a dead-letter
// exchange the dropped messages are dead-lettered with reason maxlen.
func TestMaxLengthDropHead(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	dlq := declareQueue(t, s, ch, "dlq", nil)
	q := declareQueue(t, s, ch, "q", amqp.Table{
		"x-max-length":              int32(2),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": dlq,
	})
	publishN(t, ch, "", q, 5)
	waitMessageCount(t, ch, dlq, 3)
	if got := drain(t, ch, q); !equalStrings(got, []string{"4", "5"}) {
		t.Fatalf("queue kept %v, want [4 5]", got)
	}
	m, _ := get(t, ch, dlq, true)
	if string(m.Body) != "1" {
		t.Fatalf("first dead letter %q", m.Body)
	}
	checkXDeath(t, m, "maxlen", q, "", []string{q}, 1)
	q2 := declareQueue(t, s, ch, "bytes", amqp.Table{"x-max-length-bytes": int32(10)})
	publish(t, ch, "", q2, text("123456"))
	publish(t, ch, "", q2, text("abcdef")) // 12 bytes: the head goes
	waitMessageCount(t, ch, q2, 1)
	if got := drain(t, ch, q2); !equalStrings(got, []string{"abcdef"}) {
		t.Fatalf("max-length-bytes kept %v", got)
	}
}

// Dead-lettering on reject, nack and expiry records its history in x-death.
func TestDeadLettering(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	dlx := declareExchange(t, s, ch, "dlx", "topic", nil)
	dlq := declareQueue(t, s, ch, "dlq", nil)
	mustBind(t, ch, dlq, "#", dlx, nil)
	q := declareQueue(t, s, ch, "q", amqp.Table{"x-dead-letter-exchange": dlx})
	x := declareExchange(t, s, ch, "x", "direct", nil)
	mustBind(t, ch, q, "orig.key", x, nil)

	checkDeadLettersOnRejectAndNack(t, ch, dlx, dlq, q, x)

	// Expiry with a dead-letter routing key, and the original expiration recorded.
	q3 := declareQueue(t, s, ch, "ttl", amqp.Table{"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "expired.key"})
	publish(t, ch, "", q3, amqp.Publishing{Expiration: "50", Body: []byte("expired")})
	dm := recvFromGet(t, ch, dlq)
	if dm.RoutingKey != "expired.key" || dm.Expiration != "" {
		t.Fatalf("expired dead letter key %q expiration %q", dm.RoutingKey, dm.Expiration)
	}
	checkXDeath(t, dm, "expired", q3, "", []string{q3}, 1)
	if oe := dm.Headers["x-death"].([]interface{})[0].(amqp.Table)["original-expiration"]; oe != "50" {
		t.Fatalf("original-expiration %#v, want \"50\"", oe)
	}
}

// recvFromGet polls the queue with basic.get until a message arrives (bounded).
func recvFromGet(t testing.TB, ch *amqp.Channel, q string) amqp.Delivery {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		if m, ok := get(t, ch, q, true); ok {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message in %s within %v", q, waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkXDeath checks the first x-death entry: exactly the fields RabbitMQ writes, with their types.
func checkXDeath(t testing.TB, m amqp.Delivery, reason, queue, exchange string, keys []string, count int64) {
	t.Helper()
	deaths, ok := m.Headers["x-death"].([]interface{})
	if !ok || len(deaths) == 0 {
		t.Fatalf("x-death header %#v", m.Headers["x-death"])
	}
	d, ok := deaths[0].(amqp.Table)
	if !ok {
		t.Fatalf("x-death[0] %#v", deaths[0])
	}
	var rk []interface{}
	for _, k := range keys {
		rk = append(rk, k)
	}
	for k, want := range map[string]interface{}{
		"reason": reason, "queue": queue, "exchange": exchange, "count": count, "routing-keys": rk,
	} {
		if !reflect.DeepEqual(d[k], want) {
			t.Errorf("x-death %s = %#v, want %#v", k, d[k], want)
		}
	}
	if ts, ok := d["time"].(time.Time); !ok || ts.IsZero() {
		t.Errorf("x-death time %#v, want a timestamp", d["time"])
	}
	for k := range d {
		switch k {
		case "reason", "queue", "exchange", "count", "routing-keys", "time", "original-expiration":
		default:
			t.Errorf("unexpected x-death field %q = %#v", k, d[k])
		}
	}
}

// x-max-priority queues deliver higher priorities first; equal priorities keep their order.
func TestQueuePriorities(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", amqp.Table{"x-max-priority": int32(10)})
	for i, p := range []uint8{1, 5, 0, 9, 5, 200} {
		publish(t, ch, "", q, amqp.Publishing{Priority: p, Body: []byte(fmt.Sprintf("p%d-%d", p, i))})
	}
	waitMessageCount(t, ch, q, 6)
	// Priorities above the maximum count as the maximum.
	want := []string{"p200-5", "p9-3", "p5-1", "p5-4", "p1-0", "p0-2"}
	if got := drain(t, ch, q); !equalStrings(got, want) {
		t.Fatalf("priority order %v, want %v", got, want)
	}
	// Without x-max-priority, priority is ignored.
	q2 := declareQueue(t, s, ch, "plain", nil)
	publish(t, ch, "", q2, amqp.Publishing{Priority: 1, Body: []byte("a")})
	publish(t, ch, "", q2, amqp.Publishing{Priority: 9, Body: []byte("b")})
	waitMessageCount(t, ch, q2, 2)
	if got := drain(t, ch, q2); !equalStrings(got, []string{"a", "b"}) {
		t.Fatalf("plain queue order %v", got)
	}
}

// x-expires deletes a queue that has had no consumers and no basic.get for that long.
func TestQueueExpires(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	name := Name(t, "exp")
	cleanupQueue(t, s, name)
	if _, err := ch.QueueDeclare(name, false, false, false, false, amqp.Table{"x-expires": int32(200)}); err != nil {
		t.Fatal(err)
	}
	// A passive declare counts as use and would restart the timer, so the test probes with
	// mandatory publishes, which do not, until one comes back unroutable.
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	deadline := time.Now().Add(waitTimeout)
	for {
		if err := ch.Publish("", name, true, false, text("probe")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-returns:
			_, err := ch.QueueDeclarePassive(name, false, false, false, false, nil)
			expectChannelClosed(t, c, ch, err, amqp.NotFound, fmt.Sprintf("NOT_FOUND - no queue '%s' in vhost '/'", name))
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue with x-expires 200 still exists after %v", waitTimeout)
		}
	}
}

// A consumer keeps an x-expires queue alive.
func TestQueueExpiresNotWhileConsumed(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", amqp.Table{"x-expires": int32(100)})
	consume(t, ch, q, "c", true, nil)
	time.Sleep(4 * 100 * time.Millisecond)
	messageCount(t, ch, q) // fails (404) if the queue went
}

// Invalid queue arguments are refused with RabbitMQ's texts.
func TestInvalidQueueArguments(t *testing.T) {
	t.Parallel()
	_, c, _ := setup(t)
	for _, tc := range []struct {
		args   amqp.Table
		reason string
	}{
		{amqp.Table{"x-expires": int32(0)}, "PRECONDITION_FAILED - invalid arg 'x-expires' for queue '%s' in vhost '/': {value_zero,0}"},
		{amqp.Table{"x-message-ttl": int32(-1)}, "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '%s' in vhost '/': {value_negative,-1}"},
		{amqp.Table{"x-max-length": "ten"}, "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue '%s' in vhost '/': \"expected integer, got longstr\""},
		{amqp.Table{"x-overflow": "explode"}, "PRECONDITION_FAILED - invalid arg 'x-overflow' for queue '%s' in vhost '/': invalid_overflow"},
	} {
		ch := channel(t, c)
		name := Name(t, "bad")
		_, err := ch.QueueDeclare(name, false, true, false, false, tc.args)
		expectChannelClosed(t, c, ch, err, amqp.PreconditionFailed, fmt.Sprintf(tc.reason, name))
	}
}

// checkDeadLettersOnRejectAndNack: q (bound to direct exchange x with key orig.key, dead
// letters to dlx, which routes everything to dlq) dead-letters a rejected message with its
// headers and an x-death entry, and a message dead-lettered twice from q for the same reason
// has one x-death entry with count 2; nothing is dead-lettered twice.
func checkDeadLettersOnRejectAndNack(t *testing.T, ch *amqp.Channel, dlx, dlq, q, x string) {
	t.Helper()
	publish(t, ch, x, "orig.key", amqp.Publishing{Body: []byte("rejected"), Headers: amqp.Table{"keep": "me"}})
	d := consume(t, ch, q, "c", false, nil)
	m := recv(t, d)
	if err := ch.Reject(m.DeliveryTag, false); err != nil {
		t.Fatal(err)
	}
	dm := recvFromGet(t, ch, dlq)
	if string(dm.Body) != "rejected" || dm.Exchange != dlx || dm.RoutingKey != "orig.key" || dm.Headers["keep"] != "me" {
		t.Fatalf("dead letter %q via %q/%q headers %v", dm.Body, dm.Exchange, dm.RoutingKey, dm.Headers)
	}
	checkXDeath(t, dm, "rejected", q, x, []string{"orig.key"}, 1)
	for k, want := range map[string]string{"x-first-death-reason": "rejected", "x-first-death-queue": q, "x-first-death-exchange": x} {
		if dm.Headers[k] != want {
			t.Errorf("%s = %#v, want %q", k, dm.Headers[k], want)
		}
	}

	// Dead-lettered twice from the same queue for the same reason: count 2, one entry.
	publish(t, ch, x, "orig.key", text("again"))
	m = recv(t, d)
	if err := ch.Nack(m.DeliveryTag, false, false); err != nil {
		t.Fatal(err)
	}
	dm = recvFromGet(t, ch, dlq)
	if err := ch.Publish("", q, false, false, amqp.Publishing{Headers: dm.Headers, Body: dm.Body}); err != nil {
		t.Fatal(err)
	}
	m = recv(t, d)
	if err := ch.Nack(m.DeliveryTag, false, false); err != nil {
		t.Fatal(err)
	}
	dm = recvFromGet(t, ch, dlq)
	deaths, _ := dm.Headers["x-death"].([]interface{})
	if len(deaths) != 1 {
		t.Fatalf("x-death has %d entries after two deaths in one queue, want 1: %#v", len(deaths), dm.Headers["x-death"])
	}
	if n := deaths[0].(amqp.Table)["count"]; n != int64(2) {
		t.Fatalf("x-death count %#v, want int64(2)", n)
	}
	if err := ch.Cancel("c", false); err != nil {
		t.Fatal(err)
	}
	if _, ok := get(t, ch, dlq, true); ok {
		t.Fatal("a dead letter came twice")
	}
}
