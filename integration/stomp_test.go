package integration

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/go-stomp/stomp/v3"
	sframe "github.com/go-stomp/stomp/v3/frame"
	amqp "github.com/rabbitmq/amqp091-go"
)

// TestSTOMPVersions: each version negotiates, and SEND with a receipt, SUBSCRIBE and ACK work
// in each, including a body with NUL octets (content-length) and headers that need escaping.
func TestSTOMPVersions(t *testing.T) {
	t.Parallel()
	_, addr := startSTOMP(t)
	for _, v := range []stomp.Version{stomp.V10, stomp.V11, stomp.V12} {
		t.Run(string(v), func(t *testing.T) {
			c := stompDial(t, addr, stomp.ConnOpt.AcceptVersion(v))
			if c.Version() != v {
				t.Fatalf("negotiated %s, want %s", c.Version(), v)
			}
			dest := "/queue/" + Name(t, "q")
			sub, err := c.Subscribe(dest, stomp.AckClientIndividual)
			if err != nil {
				t.Fatal(err)
			}
			body := []byte("a\x00b\x00c")
			hv := "x"
			if v != stomp.V10 {
				hv = "colon:newline\nbackslash\\"
			}
			if err := c.Send(dest, "application/octet-stream", body, stomp.SendOpt.Receipt, stomp.SendOpt.Header("custom", hv)); err != nil {
				t.Fatalf("send: %v", err)
			}
			m := stompRecv(t, sub)
			if !bytes.Equal(m.Body, body) || m.ContentType != "application/octet-stream" || m.Header.Get("custom") != hv {
				t.Fatalf("got body %q type %q custom %q", m.Body, m.ContentType, m.Header.Get("custom"))
			}
			if m.Destination != dest || m.Header.Get(sframe.Subscription) != sub.Id() || m.Header.Get(sframe.MessageId) == "" {
				t.Fatalf("headers: %v", m.Header)
			}
			if err := c.Ack(m); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSTOMPToAMQP: a STOMP SEND to /queue/ reaches an AMQP consumer with its properties and
// custom headers; an AMQP publish to amq.topic reaches a STOMP /topic/ subscriber.
func TestSTOMPToAMQP(t *testing.T) {
	t.Parallel()
	s, addr := startSTOMP(t)
	c := stompDial(t, addr)
	q := Name(t, "q")
	cleanupQueue(t, s, q)
	if err := c.Send("/queue/"+q, "text/plain", []byte("from stomp"), stomp.SendOpt.Receipt,
		stomp.SendOpt.Header("persistent", "true"), stomp.SendOpt.Header("priority", "3"),
		stomp.SendOpt.Header("correlation-id", "c-1"), stomp.SendOpt.Header("reply-to", "/queue/replies"),
		stomp.SendOpt.Header("x-custom", "v")); err != nil {
		t.Fatal(err)
	}
	ac := dial(t, s)
	ch := channel(t, ac)
	d, ok := get(t, ch, q, true)
	if !ok {
		t.Fatalf("queue %s is empty after a receipted SEND", q)
	}
	if string(d.Body) != "from stomp" || d.ContentType != "text/plain" || d.DeliveryMode != 2 || d.Priority != 3 ||
		d.CorrelationId != "c-1" || d.ReplyTo != "/queue/replies" || d.Headers["x-custom"] != "v" {
		t.Fatalf("AMQP side got %+v", d)
	}
	if d.Exchange != "" || d.RoutingKey != q {
		t.Fatalf("routed via %q/%q, want the default exchange with key %q", d.Exchange, d.RoutingKey, q)
	}

	key := Name(t, "key")
	sub, err := c.Subscribe("/topic/"+key, stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	// SUBSCRIBE with a receipt: once it arrives the binding exists.
	syncReceipt(t, c)
	publishConfirmed(t, ch, "amq.topic", key, amqp.Publishing{ContentType: "text/plain", Body: []byte("from amqp"),
		Headers: amqp.Table{"h": "1", "n": int32(7)}, CorrelationId: "c-2"})
	m := stompRecv(t, sub)
	if string(m.Body) != "from amqp" || m.Header.Get("h") != "1" || m.Header.Get("n") != "7" || m.Header.Get("correlation-id") != "c-2" {
		t.Fatalf("STOMP side got %q %v", m.Body, m.Header)
	}
	if m.Destination != "/topic/"+key {
		t.Fatalf("destination %q", m.Destination)
	}
}

// syncReceipt sends a frame with a receipt to an unused /topic/ and waits for the RECEIPT:
// frames are handled in order, so everything sent before has been handled.
func syncReceipt(t testing.TB, c *stomp.Conn) {
	t.Helper()
	if err := c.Send("/topic/parley.sync", "text/plain", nil, stomp.SendOpt.Receipt); err != nil {
		t.Fatalf("receipt: %v", err)
	}
}

// TestSTOMPDestinations: /exchange/name/key and /amq/queue/ route as RabbitMQ's plugin does;
// a missing exchange or queue is an ERROR frame naming it.
func TestSTOMPDestinations(t *testing.T) {
	t.Parallel()
	s, addr := startSTOMP(t)
	ac := dial(t, s)
	ch := channel(t, ac)
	ex := declareExchange(t, s, ch, "direct", "direct", nil)
	q := declareQueue(t, s, ch, "q", nil)
	if err := ch.QueueBind(q, "k", ex, false, nil); err != nil {
		t.Fatal(err)
	}
	c := stompDial(t, addr)
	sub, err := c.Subscribe("/amq/queue/"+q, stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	exSub, err := c.Subscribe("/exchange/"+ex+"/k", stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	syncReceipt(t, c)
	if err := c.Send("/exchange/"+ex+"/k", "text/plain", []byte("via exchange"), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*stomp.Subscription{sub, exSub} {
		m := stompRecv(t, s)
		if string(m.Body) != "via exchange" || m.Destination != "/exchange/"+ex+"/k" {
			t.Fatalf("%s got %q from %q", s.Destination(), m.Body, m.Destination)
		}
	}

	raw := dialRaw(t, addr)
	raw.connect("1.2")
	raw.send("SEND\ndestination:/exchange/no-such-exchange/k\nreceipt:r1\n\nx\x00")
	f := raw.expectError("not_found", "no exchange 'no-such-exchange' in vhost '/'")
	if f.Header.Get(sframe.ReceiptId) != "r1" {
		t.Fatalf("ERROR without the receipt-id of the failed frame: %v", f.Header)
	}
	raw = dialRaw(t, addr)
	raw.connect("1.2")
	raw.send("SUBSCRIBE\nid:0\ndestination:/amq/queue/no-such-queue\n\n\x00")
	raw.expectError("not_found", "no queue 'no-such-queue' in vhost '/'")
	raw = dialRaw(t, addr)
	raw.connect("1.2")
	raw.send("SEND\ndestination:/nowhere/x\n\n\x00")
	raw.expectError("Unknown destination", "'/nowhere/x' is not a valid destination")
}

// TestSTOMPAckModes: client-individual acks one message, client acks everything up to the
// message, NACK requeues (redelivered), NACK requeue:false drops or dead-letters, and
// unacked messages come back when the connection closes.
func TestSTOMPAckModes(t *testing.T) {
	t.Parallel()
	s, addr := startSTOMP(t)
	ac := dial(t, s)
	ch := channel(t, ac)
	dlq := declareQueue(t, s, ch, "dlq", nil)
	q := Name(t, "q")
	cleanupQueue(t, s, q)
	c := stompDial(t, addr)
	dest := "/queue/" + q
	// The queue is declared by the first SEND, with its arguments from the headers.
	for i := 0; i < 4; i++ {
		if err := c.Send(dest, "text/plain", []byte(fmt.Sprint(i)), stomp.SendOpt.Receipt,
			stomp.SendOpt.Header("x-dead-letter-exchange", ""), stomp.SendOpt.Header("x-dead-letter-routing-key", dlq)); err != nil {
			t.Fatal(err)
		}
	}
	c2 := stompDial(t, addr)
	// Every declaration must carry the same arguments, or it is inequivalent (406), as in RabbitMQ.
	dlx := []func(*sframe.Frame) error{stomp.SubscribeOpt.Header("x-dead-letter-exchange", ""),
		stomp.SubscribeOpt.Header("x-dead-letter-routing-key", dlq)}
	sub, err := c2.Subscribe(dest, stomp.AckClientIndividual, dlx...)
	if err != nil {
		t.Fatal(err)
	}
	ms := []*stomp.Message{stompRecv(t, sub), stompRecv(t, sub), stompRecv(t, sub), stompRecv(t, sub)}
	for i, m := range ms {
		if string(m.Body) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, m.Body)
		}
	}
	if err := c2.Ack(ms[1]); err != nil { // individual: only "1"
		t.Fatal(err)
	}
	if err := c2.Nack(ms[2]); err != nil { // requeued by default
		t.Fatal(err)
	}
	re := stompRecv(t, sub)
	if string(re.Body) != "2" || re.Header.Get("redelivered") != "true" {
		t.Fatalf("after NACK got %q redelivered=%q", re.Body, re.Header.Get("redelivered"))
	}
	if err := c2.Ack(re); err != nil {
		t.Fatal(err)
	}
	// Disconnect: "0" and "3" are unacked and come back; "1" and "2" are gone.
	if err := c2.Disconnect(); err != nil {
		t.Fatal(err)
	}
	c3 := stompDial(t, addr)
	sub3, err := c3.Subscribe(dest, stomp.AckClient, append(dlx, stomp.SubscribeOpt.Header("prefetch-count", "1"))...)
	if err != nil {
		t.Fatal(err)
	}
	first := stompRecv(t, sub3)
	if string(first.Body) != "0" || first.Header.Get("redelivered") != "true" {
		t.Fatalf("after reconnect got %q redelivered=%q", first.Body, first.Header.Get("redelivered"))
	}
	// prefetch-count 1: nothing more until the ack.
	stompExpectNone(t, sub3)
	if err := c3.Ack(first); err != nil {
		t.Fatal(err)
	}
	second := stompRecv(t, sub3)
	if string(second.Body) != "3" {
		t.Fatalf("got %q, want 3", second.Body)
	}
	if err := c3.Ack(second); err != nil {
		t.Fatal(err)
	}
	if err := c3.Disconnect(); err != nil {
		t.Fatal(err)
	}
	expectEmpty(t, ch, q)

	// NACK requeue:false (go-stomp cannot send the header; a raw connection does):
	// dead-lettered through the queue's x-dead-letter-exchange, with the 1.2 ack header as id.
	r := dialRaw(t, addr)
	r.connect("1.2")
	r.send("SUBSCRIBE\nid:s1\ndestination:" + dest + "\nack:client-individual\nx-dead-letter-exchange:\nx-dead-letter-routing-key:" + dlq + "\n\n\x00")
	r.send("SEND\ndestination:" + dest + "\n\nto-dlq\x00")
	m := r.read()
	if m.Command != sframe.MESSAGE || string(m.Body) != "to-dlq" || m.Header.Get(sframe.Ack) == "" {
		t.Fatalf("got %s %v %q", m.Command, m.Header, m.Body)
	}
	r.send("NACK\nid:" + m.Header.Get(sframe.Ack) + "\nrequeue:false\nreceipt:n1\n\n\x00")
	if f := r.read(); f.Command != sframe.RECEIPT || f.Header.Get(sframe.ReceiptId) != "n1" {
		t.Fatalf("got %s %v", f.Command, f.Header)
	}
	waitMessageCount(t, ch, dlq, 1)
	if body := getBody(t, ch, dlq); body != "to-dlq" {
		t.Fatalf("dead-lettered %q", body)
	}
	// The same delivery cannot be settled twice.
	r.send("ACK\nid:" + m.Header.Get(sframe.Ack) + "\n\n\x00")
	r.expectError("Message not found", "unknown delivery tag")
}

// TestSTOMPClientAckIsCumulative: in ack:client mode an ACK settles every earlier message.
func TestSTOMPClientAckIsCumulative(t *testing.T) {
	t.Parallel()
	s, addr := startSTOMP(t)
	q := Name(t, "q")
	cleanupQueue(t, s, q)
	c := stompDial(t, addr)
	dest := "/queue/" + q
	sub, err := c.Subscribe(dest, stomp.AckClient)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := c.Send(dest, "text/plain", []byte(fmt.Sprint(i)), stomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	var last *stomp.Message
	for i := 0; i < 3; i++ {
		last = stompRecv(t, sub)
	}
	if err := c.Ack(last); err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	ch := channel(t, dial(t, s))
	expectEmpty(t, ch, q)
	if strings.TrimSpace(string(last.Body)) != "2" {
		t.Fatalf("last %q", last.Body)
	}
}
