package integration

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func publishN(t testing.TB, ch *amqp.Channel, x, key string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		publish(t, ch, x, key, text(strconv.Itoa(i)))
	}
}

// recvN receives n deliveries.
func recvN(t testing.TB, d <-chan amqp.Delivery, n int) []amqp.Delivery {
	t.Helper()
	out := make([]amqp.Delivery, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, recv(t, d))
	}
	return out
}

func bodies(ms []amqp.Delivery) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Body))
	}
	return out
}

// Messages reach a consumer in queue order with delivery tags 1, 2, 3... per channel.
func TestConsumeOrderAndTags(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	publishN(t, ch, "", q, 5)
	d := consume(t, ch, q, "ctag-1", false, nil)
	for i := 1; i <= 5; i++ {
		m := recv(t, d)
		if string(m.Body) != strconv.Itoa(i) || m.DeliveryTag != uint64(i) || m.Redelivered ||
			m.ConsumerTag != "ctag-1" || m.Exchange != "" || m.RoutingKey != q {
			t.Fatalf("delivery %d: body %q tag %d redelivered %v ctag %q exchange %q key %q", i, m.Body,
				m.DeliveryTag, m.Redelivered, m.ConsumerTag, m.Exchange, m.RoutingKey)
		}
	}
	if err := ch.Ack(5, true); err != nil {
		t.Fatal(err)
	}
	expectNothingLeft(t, s, ch, q)
}

// Consumers of equal priority on one queue take turns.
func TestRoundRobin(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	ch1, ch2 := channel(t, c), channel(t, c)
	d1 := consume(t, ch1, q, "a", true, nil)
	d2 := consume(t, ch2, q, "b", true, nil)
	publishN(t, ch, "", q, 6)
	got1 := recvBodies(t, d1, 3)
	got2 := recvBodies(t, d2, 3)
	if !equalStrings(got1, []string{"1", "3", "5"}) || !equalStrings(got2, []string{"2", "4", "6"}) {
		t.Fatalf("round robin: a got %v, b got %v", got1, got2)
	}
}

// basic.qos global=false limits each consumer of the channel on its own (RabbitMQ semantics).
func TestPrefetchPerConsumer(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q1 := declareQueue(t, s, ch, "q1", nil)
	q2 := declareQueue(t, s, ch, "q2", nil)
	if err := ch.Qos(2, 0, false); err != nil {
		t.Fatal(err)
	}
	publishN(t, ch, "", q1, 5)
	publishN(t, ch, "", q2, 5)
	d1 := consume(t, ch, q1, "c1", false, nil)
	d2 := consume(t, ch, q2, "c2", false, nil)
	m1 := recvN(t, d1, 2)
	recvN(t, d2, 2) // the second consumer has its own 2
	expectNoDelivery(t, d1)
	expectNoDelivery(t, d2)
	// Acking one of c1's releases exactly one more to c1, none to c2.
	if err := ch.Ack(m1[0].DeliveryTag, false); err != nil {
		t.Fatal(err)
	}
	if got := string(recv(t, d1).Body); got != "3" {
		t.Fatalf("after ack c1 got %q, want 3", got)
	}
	expectNoDelivery(t, d1)
	expectNoDelivery(t, d2)
}

// basic.qos global=true limits all consumers of the channel together.
func TestPrefetchPerChannel(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q1 := declareQueue(t, s, ch, "q1", nil)
	q2 := declareQueue(t, s, ch, "q2", nil)
	if err := ch.Qos(3, 0, true); err != nil {
		t.Fatal(err)
	}
	publishN(t, ch, "", q1, 5)
	publishN(t, ch, "", q2, 5)
	d1 := consume(t, ch, q1, "c1", false, nil)
	d2 := consume(t, ch, q2, "c2", false, nil)
	var got []amqp.Delivery
	deadline := time.After(waitTimeout)
	for len(got) < 3 {
		select {
		case m := <-d1:
			got = append(got, m)
		case m := <-d2:
			got = append(got, m)
		case <-deadline:
			t.Fatalf("got %d deliveries, want 3 (the channel's prefetch)", len(got))
		}
	}
	expectNoDelivery(t, d1)
	expectNoDelivery(t, d2)
	if err := ch.Ack(got[2].DeliveryTag, true); err != nil {
		t.Fatal(err)
	}
	// Three more fit in the channel now.
	more := 0
	quietAt := time.After(waitTimeout)
	for more < 3 {
		select {
		case <-d1:
			more++
		case <-d2:
			more++
		case <-quietAt:
			t.Fatalf("after acking 3, got %d more deliveries, want 3", more)
		}
	}
	expectNoDelivery(t, d1)
	expectNoDelivery(t, d2)
}

// A zero prefetch means unlimited; qos with a prefetch size is not supported by RabbitMQ.
func TestQosPrefetchSizeNotImplemented(t *testing.T) {
	t.Parallel()
	_, c, ch := setup(t)
	closed := c.NotifyClose(make(chan *amqp.Error, 1))
	err := ch.Qos(0, 1000, false)
	if err == nil {
		t.Fatalf("basic.qos prefetch_size=1000 accepted")
	}
	expectConnectionClosed(t, closed, amqp.NotImplemented, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)")
}

func TestAckMultipleAndRequeueOnClose(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	publishN(t, ch, "", q, 5)
	cch := channel(t, c)
	d := consume(t, cch, q, "c", false, nil)
	ms := recvN(t, d, 5)
	if err := cch.Ack(ms[2].DeliveryTag, true); err != nil { // acks 1, 2, 3
		t.Fatal(err)
	}
	if err := cch.Close(); err != nil { // 4 and 5 go back, marked redelivered
		t.Fatal(err)
	}
	waitMessageCount(t, ch, q, 2)
	for _, want := range []string{"4", "5"} {
		m, ok := get(t, ch, q, true)
		if !ok || string(m.Body) != want || !m.Redelivered {
			t.Fatalf("got %q ok=%v redelivered=%v, want %q redelivered", m.Body, ok, m.Redelivered, want)
		}
	}
}

func TestNackMultipleRequeue(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	publishN(t, ch, "", q, 4)
	d := consume(t, ch, q, "c", false, nil)
	ms := recvN(t, d, 4)
	if err := ch.Nack(ms[2].DeliveryTag, true, true); err != nil { // 1..3 back to the head
		t.Fatal(err)
	}
	re := recvN(t, d, 3)
	for i, m := range re {
		if string(m.Body) != strconv.Itoa(i+1) || !m.Redelivered || m.DeliveryTag != uint64(5+i) {
			t.Fatalf("redelivery %d: %q redelivered=%v tag=%d", i, m.Body, m.Redelivered, m.DeliveryTag)
		}
	}
	if err := ch.Ack(ms[3].DeliveryTag, false); err != nil {
		t.Fatal(err)
	}
	// nack without requeue drops (no dead-letter exchange configured).
	if err := ch.Nack(re[2].DeliveryTag, true, false); err != nil {
		t.Fatal(err)
	}
	expectNoDelivery(t, d)
	expectNothingLeft(t, s, ch, q)
}

func TestRejectRequeue(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	publishN(t, ch, "", q, 2)
	d := consume(t, ch, q, "c", false, nil)
	ms := recvN(t, d, 2)
	if err := ch.Reject(ms[0].DeliveryTag, true); err != nil {
		t.Fatal(err)
	}
	m := recv(t, d)
	if string(m.Body) != "1" || !m.Redelivered {
		t.Fatalf("after reject(requeue) got %q redelivered=%v", m.Body, m.Redelivered)
	}
	if err := ch.Reject(m.DeliveryTag, false); err != nil {
		t.Fatal(err)
	}
	if err := ch.Reject(ms[1].DeliveryTag, false); err != nil {
		t.Fatal(err)
	}
	expectNoDelivery(t, d)
	expectNothingLeft(t, s, ch, q)
}

// basic.recover(requeue=true) puts every unacked message of the channel back.
func TestRecoverRequeue(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	publishN(t, ch, "", q, 3)
	d := consume(t, ch, q, "c", false, nil)
	ms := recvN(t, d, 3)
	if err := ch.Ack(ms[0].DeliveryTag, false); err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 basic.recover is what this test checks; clients still send it
	if err := ch.Recover(true); err != nil {
		t.Fatal(err)
	}
	re := recvN(t, d, 2)
	if !equalStrings(bodies(re), []string{"2", "3"}) || !re[0].Redelivered || !re[1].Redelivered {
		t.Fatalf("after recover: %v redelivered %v %v", bodies(re), re[0].Redelivered, re[1].Redelivered)
	}
	if err := ch.Ack(re[1].DeliveryTag, true); err != nil {
		t.Fatal(err)
	}
	expectNothingLeft(t, s, ch, q)
}

// basic.get answers get-ok with the count of messages left, or get-empty.
func TestBasicGet(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	expectEmpty(t, ch, q)
	publishN(t, ch, "", q, 3)
	waitMessageCount(t, ch, q, 3)
	for i := 1; i <= 3; i++ {
		m, ok := get(t, ch, q, false)
		if !ok || string(m.Body) != strconv.Itoa(i) || m.MessageCount != uint32(3-i) || m.DeliveryTag != uint64(i) || m.Redelivered {
			t.Fatalf("get %d: ok=%v body %q count %d tag %d redelivered %v", i, ok, m.Body, m.MessageCount, m.DeliveryTag, m.Redelivered)
		}
	}
	expectEmpty(t, ch, q)
	// Unacked gets go back on nack and come out redelivered.
	if err := ch.Nack(3, true, true); err != nil {
		t.Fatal(err)
	}
	waitMessageCount(t, ch, q, 3)
	m, ok := get(t, ch, q, true)
	if !ok || string(m.Body) != "1" || !m.Redelivered || m.MessageCount != 2 {
		t.Fatalf("get after nack: ok=%v %q redelivered=%v count=%d", ok, m.Body, m.Redelivered, m.MessageCount)
	}
}

// A client-side basic.cancel stops deliveries; messages already delivered stay unacked and can
// still be acked.
func TestCancelByClient(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	if err := ch.Qos(1, 0, false); err != nil {
		t.Fatal(err)
	}
	publishN(t, ch, "", q, 3)
	d := consume(t, ch, q, "c", false, nil)
	m := recv(t, d)
	if err := ch.Cancel("c", false); err != nil {
		t.Fatal(err)
	}
	// amqp091-go closes the deliveries channel after cancel-ok.
	for range d {
	}
	if err := ch.Ack(m.DeliveryTag, false); err != nil {
		t.Fatal(err)
	}
	waitMessageCount(t, ch, q, 2)
	// Cancelling an unknown consumer tag is not an error.
	if err := ch.Cancel("no-such-consumer", false); err != nil {
		t.Fatalf("cancel of an unknown tag: %v", err)
	}
	if _, err := ch.QueueDeclarePassive(q, false, false, false, false, nil); err != nil {
		t.Fatalf("channel unusable after cancel of unknown tag: %v", err)
	}
}

// Deleting a queue cancels its consumers with a server-sent basic.cancel
// (consumer_cancel_notify).
func TestCancelByServerOnQueueDelete(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	cch := channel(t, c)
	cancels := cch.NotifyCancel(make(chan string, 1))
	d := consume(t, cch, q, "doomed", false, nil)
	if _, err := ch.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	select {
	case tag := <-cancels:
		if tag != "doomed" {
			t.Fatalf("server cancel for %q, want doomed", tag)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("no basic.cancel from the server within %v", waitTimeout)
	}
	for range d {
	}
	// The channel stays open.
	if _, err := cch.QueueDeclare("", false, true, true, false, nil); err != nil {
		t.Fatalf("channel unusable after server cancel: %v", err)
	}
}

// An exclusive consumer is the only one: others get 403, and it cannot start while others exist.
func TestExclusiveConsumer(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	if _, err := ch.Consume(q, "excl", true, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("ACCESS_REFUSED - queue '%s' in vhost '/' in exclusive use", q)
	ch2 := channel(t, c)
	_, err := ch2.Consume(q, "second", true, false, false, false, nil)
	expectChannelClosed(t, c, ch2, err, amqp.AccessRefused, want)

	q2 := declareQueue(t, s, ch, "q2", nil)
	consume(t, ch, q2, "first", true, nil)
	ch3 := channel(t, c)
	_, err = ch3.Consume(q2, "excl", true, true, false, false, nil)
	expectChannelClosed(t, c, ch3, err, amqp.AccessRefused, want2(q2))
}

func want2(q string) string {
	return fmt.Sprintf("ACCESS_REFUSED - queue '%s' in vhost '/' in exclusive use", q)
}

// Reusing a consumer tag on the same channel is a connection error (530).
func TestDuplicateConsumerTag(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	consume(t, ch, q, "dup", true, nil)
	closed := c.NotifyClose(make(chan *amqp.Error, 1))
	_, err := ch.Consume(q, "dup", true, false, false, false, nil)
	if err == nil {
		t.Fatal("second consumer with the same tag accepted")
	}
	expectConnectionClosed(t, closed, amqp.NotAllowed, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'")
}

// Consumers with a higher x-priority get messages while they have credit; lower ones get the rest.
func TestConsumerPriorities(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	hi, lo := channel(t, c), channel(t, c)
	if err := hi.Qos(2, 0, false); err != nil {
		t.Fatal(err)
	}
	dlo := consume(t, lo, q, "lo", false, amqp.Table{"x-priority": int32(1)})
	dhi := consume(t, hi, q, "hi", false, amqp.Table{"x-priority": int32(10)})
	publishN(t, ch, "", q, 2)
	if got := bodies(recvN(t, dhi, 2)); !equalStrings(got, []string{"1", "2"}) {
		t.Fatalf("high-priority consumer got %v", got)
	}
	expectNoDelivery(t, dlo)
	publish(t, ch, "", q, text("3")) // hi is full: lo gets it
	if got := string(recv(t, dlo).Body); got != "3" {
		t.Fatalf("low-priority consumer got %q", got)
	}
	expectNoDelivery(t, dhi)
}
