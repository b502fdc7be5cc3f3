package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// waitTimeout bounds every wait for something the broker should send.
const waitTimeout = 10 * time.Second

// quietPeriod is how long a test listens to conclude that nothing (more) arrives.
const quietPeriod = 300 * time.Millisecond

// dial opens a connection closed at t.Cleanup.
func dial(t testing.TB, s *Server) *amqp.Connection {
	t.Helper()
	return dialConfig(t, s, amqp.Config{})
}

func dialConfig(t testing.TB, s *Server, cfg amqp.Config) *amqp.Connection {
	t.Helper()
	if cfg.Dial == nil {
		cfg.Dial = amqp.DefaultDial(waitTimeout)
	}
	c, err := amqp.DialConfig(s.URL, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", s.URL, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// channel opens a channel on c.
func channel(t testing.TB, c *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := c.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	return ch
}

// setup starts a broker and returns it with one connection and one channel on it.
func setup(t testing.TB) (*Server, *amqp.Connection, *amqp.Channel) {
	t.Helper()
	s := StartParley(t)
	c := dial(t, s)
	return s, c, channel(t, c)
}

// cleanupQueue deletes q at the end of the test over a connection of its own, so a test against
// a shared external broker leaves nothing behind even when its channels were closed by errors.
func cleanupQueue(t testing.TB, s *Server, q string) {
	t.Cleanup(func() {
		c, err := amqp.DialConfig(s.URL, amqp.Config{Dial: amqp.DefaultDial(waitTimeout)})
		if err != nil {
			return
		}
		defer c.Close()
		if ch, err := c.Channel(); err == nil {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
	})
}

func cleanupExchange(t testing.TB, s *Server, x string) {
	t.Cleanup(func() {
		c, err := amqp.DialConfig(s.URL, amqp.Config{Dial: amqp.DefaultDial(waitTimeout)})
		if err != nil {
			return
		}
		defer c.Close()
		if ch, err := c.Channel(); err == nil {
			_ = ch.ExchangeDelete(x, false, false)
		}
	})
}

// declareQueue declares a non-durable queue with a unique name, deleted at cleanup.
func declareQueue(t testing.TB, s *Server, ch *amqp.Channel, what string, args amqp.Table) string {
	t.Helper()
	name := Name(t, what)
	if _, err := ch.QueueDeclare(name, false, false, false, false, args); err != nil {
		t.Fatalf("queue.declare %s: %v", name, err)
	}
	cleanupQueue(t, s, name)
	return name
}

// declareExchange declares a non-durable exchange of kind with a unique name, deleted at cleanup.
func declareExchange(t testing.TB, s *Server, ch *amqp.Channel, what, kind string, args amqp.Table) string {
	t.Helper()
	name := Name(t, what)
	if err := ch.ExchangeDeclare(name, kind, false, false, false, false, args); err != nil {
		t.Fatalf("exchange.declare %s (%s): %v", name, kind, err)
	}
	cleanupExchange(t, s, name)
	return name
}

func publish(t testing.TB, ch *amqp.Channel, exchange, key string, msg amqp.Publishing) {
	t.Helper()
	if err := ch.Publish(exchange, key, false, false, msg); err != nil {
		t.Fatalf("publish to %q/%q: %v", exchange, key, err)
	}
}

func text(body string) amqp.Publishing {
	return amqp.Publishing{Body: []byte(body)}
}

// consume starts a consumer (manual ack unless autoAck) and returns its deliveries.
func consume(t testing.TB, ch *amqp.Channel, q, tag string, autoAck bool, args amqp.Table) <-chan amqp.Delivery {
	t.Helper()
	d, err := ch.Consume(q, tag, autoAck, false, false, false, args)
	if err != nil {
		t.Fatalf("basic.consume %s: %v", q, err)
	}
	return d
}

// recv waits (bounded) for the next delivery.
func recv(t testing.TB, d <-chan amqp.Delivery) amqp.Delivery {
	t.Helper()
	select {
	case m, ok := <-d:
		if !ok {
			t.Fatalf("delivery channel closed while waiting for a message")
		}
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("no delivery within %v", waitTimeout)
	}
	return amqp.Delivery{}
}

// recvBodies receives n deliveries and returns their bodies in arrival order.
func recvBodies(t testing.TB, d <-chan amqp.Delivery, n int) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, string(recv(t, d).Body))
	}
	return out
}

// expectNoDelivery fails when a delivery arrives within quietPeriod.
func expectNoDelivery(t testing.TB, d <-chan amqp.Delivery) {
	t.Helper()
	select {
	case m, ok := <-d:
		if ok {
			t.Fatalf("unexpected delivery %q (tag %d, redelivered %v)", m.Body, m.DeliveryTag, m.Redelivered)
		}
	case <-time.After(quietPeriod):
	}
}

// get does basic.get and fails on error.
func get(t testing.TB, ch *amqp.Channel, q string, autoAck bool) (amqp.Delivery, bool) {
	t.Helper()
	m, ok, err := ch.Get(q, autoAck)
	if err != nil {
		t.Fatalf("basic.get %s: %v", q, err)
	}
	return m, ok
}

// getBody basic.gets with auto-ack and returns the body; it fails when the queue is empty.
func getBody(t testing.TB, ch *amqp.Channel, q string) string {
	t.Helper()
	m, ok := get(t, ch, q, true)
	if !ok {
		t.Fatalf("basic.get %s: get-empty, want a message", q)
	}
	return string(m.Body)
}

// expectEmpty fails unless basic.get answers get-empty.
func expectEmpty(t testing.TB, ch *amqp.Channel, q string) {
	t.Helper()
	if m, ok := get(t, ch, q, true); ok {
		t.Fatalf("basic.get %s: got %q, want get-empty", q, m.Body)
	}
}

// messageCount returns the queue's ready-message count by a passive declare.
func messageCount(t testing.TB, ch *amqp.Channel, q string) int {
	t.Helper()
	st, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
	if err != nil {
		t.Fatalf("passive queue.declare %s: %v", q, err)
	}
	return st.Messages
}

// waitMessageCount polls (bounded) until the queue holds want ready messages.
func waitMessageCount(t testing.TB, ch *amqp.Channel, q string, want int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		n := messageCount(t, ch, q)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s holds %d messages after %v, want %d", q, n, waitTimeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expectAMQPError checks that err is an *amqp.Error with the code and reply text.
func expectAMQPError(t testing.TB, err error, code int, reason string) *amqp.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %d %q", code, reason)
	}
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T), want *amqp.Error %d %q", err, err, code, reason)
	}
	if ae.Code != code || ae.Reason != reason {
		t.Fatalf("error %d %q, want %d %q", ae.Code, ae.Reason, code, reason)
	}
	return ae
}

// expectChannelClosed checks err is the given channel exception and that ch and its connection
// are in the states a channel-level error leaves them in: channel closed, connection open.
func expectChannelClosed(t testing.TB, c *amqp.Connection, ch *amqp.Channel, err error, code int, reason string) {
	t.Helper()
	expectAMQPError(t, err, code, reason)
	if !ch.IsClosed() {
		t.Fatalf("channel still open after a %d channel exception", code)
	}
	if c.IsClosed() {
		t.Fatalf("connection closed after a %d channel exception; want only the channel closed", code)
	}
	// The connection must still work.
	probe, err2 := c.Channel()
	if err2 != nil {
		t.Fatalf("connection unusable after channel exception: %v", err2)
	}
	_ = probe.Close()
}

// expectConnectionClosed waits (bounded) for the connection to close with code and reason.
func expectConnectionClosed(t testing.TB, closed <-chan *amqp.Error, code int, reason string) {
	t.Helper()
	select {
	case e, ok := <-closed:
		if !ok || e == nil {
			t.Fatalf("connection closed without an error, want %d %q", code, reason)
		}
		if e.Code != code || e.Reason != reason {
			t.Fatalf("connection closed with %d %q, want %d %q", e.Code, e.Reason, code, reason)
		}
		if !e.Server {
			t.Fatalf("connection close %d %q was not initiated by the server", e.Code, e.Reason)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("connection not closed within %v, want %d %q", waitTimeout, code, reason)
	}
}

// waitChannelClose waits (bounded) for a channel.close from the server.
func waitChannelClose(t testing.TB, closed <-chan *amqp.Error) *amqp.Error {
	t.Helper()
	select {
	case e := <-closed:
		if e == nil {
			t.Fatalf("channel closed without an error")
		}
		return e
	case <-time.After(waitTimeout):
		t.Fatalf("channel not closed within %v", waitTimeout)
	}
	return nil
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}

// quiet waits quietPeriod, to give something that should not happen the time to happen.
func quiet() { time.Sleep(quietPeriod) }

// ctxTimeout is a context bounded by waitTimeout, cancelled at cleanup.
func ctxTimeout(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// publishConfirmed publishes msgs on ch, which it puts into confirm mode, and waits for each ack,
// so the messages are
// in their queues when it returns.
func publishConfirmed(t testing.TB, ch *amqp.Channel, exchange, key string, msgs ...amqp.Publishing) {
	t.Helper()
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm.select: %v", err)
	}
	for _, m := range msgs {
		dc, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, m)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		ok, err := dc.WaitContext(ctxTimeout(t))
		if err != nil || !ok {
			t.Fatalf("publish confirm: ack=%v err=%v", ok, err)
		}
	}
}

// expectNothingLeft closes ch (so that anything it left unacked goes back to q) and checks,
// after quietPeriod, that q holds no message: every delivery on ch was really acked or dropped.
func expectNothingLeft(t testing.TB, s *Server, ch *amqp.Channel, q string) {
	t.Helper()
	if err := ch.Close(); err != nil {
		t.Fatalf("channel.close: %v", err)
	}
	quiet()
	ch2 := channel(t, dial(t, s))
	if n := messageCount(t, ch2, q); n != 0 {
		t.Fatalf("queue %s holds %d messages after the channel closed; acks or drops were lost", q, n)
	}
}

// getAll takes every ready message of q with basic.get (autoack) and returns their bodies as a
// set: what a drained queue held, for checking confirmed messages against.
func getAll(t testing.TB, ch *amqp.Channel, q string) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	for {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatalf("get %s: %v", q, err)
		}
		if !ok {
			return got
		}
		got[string(d.Body)] = true
	}
}
