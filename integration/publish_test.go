package integration

import (
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func recvReturn(t testing.TB, r <-chan amqp.Return) amqp.Return {
	t.Helper()
	select {
	case ret := <-r:
		return ret
	case <-time.After(waitTimeout):
		t.Fatalf("no basic.return within %v", waitTimeout)
	}
	return amqp.Return{}
}

func recvConfirm(t testing.TB, c <-chan amqp.Confirmation) amqp.Confirmation {
	t.Helper()
	select {
	case cf := <-c:
		return cf
	case <-time.After(waitTimeout):
		t.Fatalf("no publisher confirm within %v", waitTimeout)
	}
	return amqp.Confirmation{}
}

// A mandatory message that no queue takes comes back as basic.return 312 NO_ROUTE; a routed one
// and a non-mandatory unroutable one do not.
func TestMandatoryReturn(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	returns := ch.NotifyReturn(make(chan amqp.Return, 4))
	if err := ch.Publish("amq.direct", "nowhere", false, false, text("dropped")); err != nil {
		t.Fatal(err)
	}
	msg := amqp.Publishing{Body: []byte("back"), ContentType: "text/plain", CorrelationId: "c-1",
		Headers: amqp.Table{"h": "v"}}
	if err := ch.Publish("amq.direct", "nowhere", true, false, msg); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", q, true, false, text("routed")); err != nil {
		t.Fatal(err)
	}
	ret := recvReturn(t, returns)
	if ret.ReplyCode != 312 || ret.ReplyText != "NO_ROUTE" || ret.Exchange != "amq.direct" ||
		ret.RoutingKey != "nowhere" || string(ret.Body) != "back" || ret.ContentType != "text/plain" ||
		ret.CorrelationId != "c-1" || ret.Headers["h"] != "v" {
		t.Fatalf("basic.return %+v", ret)
	}
	waitMessageCount(t, ch, q, 1)
	select {
	case r := <-returns:
		t.Fatalf("unexpected second return %q", r.Body)
	case <-time.After(quietPeriod):
	}
}

// Publisher confirms: every publish is acked once, with sequence numbers 1, 2, 3..., returns
// come before the ack of an unroutable mandatory message.
func TestPublisherConfirms(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	durable := Name(t, "durable")
	cleanupQueue(t, s, durable)
	if _, err := ch.QueueDeclare(durable, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 100))
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	const n = 50
	for i := 1; i <= n; i++ {
		key := q
		if i%2 == 0 {
			key = durable
		}
		publish(t, ch, "", key, amqp.Publishing{Body: []byte(strconv.Itoa(i)), DeliveryMode: amqp.Persistent})
	}
	for i := 1; i <= n; i++ {
		cf := recvConfirm(t, confirms)
		if !cf.Ack || cf.DeliveryTag != uint64(i) {
			t.Fatalf("confirm %d: %+v", i, cf)
		}
	}
	if err := ch.Publish("amq.direct", "nowhere", true, false, text("unroutable")); err != nil {
		t.Fatal(err)
	}
	recvReturn(t, returns)
	if cf := recvConfirm(t, confirms); !cf.Ack || cf.DeliveryTag != n+1 {
		t.Fatalf("confirm of the returned message: %+v", cf)
	}
	// Deferred confirmations see the same.
	dc, err := ch.PublishWithDeferredConfirm("", q, false, false, text("deferred"))
	if err != nil {
		t.Fatal(err)
	}
	ok, err := dc.WaitContext(ctxTimeout(t))
	if err != nil || !ok || dc.DeliveryTag != n+2 {
		t.Fatalf("deferred confirm: ok=%v err=%v tag=%d", ok, err, dc.DeliveryTag)
	}
	recvConfirm(t, confirms)
	waitMessageCount(t, ch, q, n/2+1)
	waitMessageCount(t, ch, durable, n/2)
}

// With x-overflow reject-publish, a publish to a full queue is nacked.
func TestConfirmNackRejectPublish(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", amqp.Table{"x-max-length": int32(2), "x-overflow": "reject-publish"})
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 10))
	publishN(t, ch, "", q, 4)
	for i, want := range []bool{true, true, false, false} {
		cf := recvConfirm(t, confirms)
		if cf.Ack != want || cf.DeliveryTag != uint64(i+1) {
			t.Fatalf("confirm %d: %+v, want ack=%v", i+1, cf, want)
		}
	}
	if got := drain(t, ch, q); !equalStrings(got, []string{"1", "2"}) {
		t.Fatalf("queue holds %v", got)
	}
	publish(t, ch, "", q, text("room again"))
	if cf := recvConfirm(t, confirms); !cf.Ack || cf.DeliveryTag != 5 {
		t.Fatalf("confirm after draining: %+v", cf)
	}
}

func TestConfirmAndTxExclusive(t *testing.T) {
	t.Parallel()
	_, c, ch := setup(t)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	expectChannelClosed(t, c, ch, ch.Tx(), amqp.PreconditionFailed,
		"PRECONDITION_FAILED - cannot switch from confirm to tx mode")
	ch = channel(t, c)
	if err := ch.Tx(); err != nil {
		t.Fatal(err)
	}
	expectChannelClosed(t, c, ch, ch.Confirm(false), amqp.PreconditionFailed,
		"PRECONDITION_FAILED - cannot switch from tx to confirm mode")
	ch = channel(t, c)
	expectChannelClosed(t, c, ch, ch.TxCommit(), amqp.PreconditionFailed,
		"PRECONDITION_FAILED - channel is not transactional")
	ch = channel(t, c)
	expectChannelClosed(t, c, ch, ch.TxRollback(), amqp.PreconditionFailed,
		"PRECONDITION_FAILED - channel is not transactional")
}

// tx.select: publishes and acks take effect at commit and are discarded at rollback.
func TestTransactions(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	obs := channel(t, c)
	if err := ch.Tx(); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", q, text("1"))
	publish(t, ch, "", q, text("2"))
	quiet()
	if n := messageCount(t, obs, q); n != 0 {
		t.Fatalf("%d messages visible before commit", n)
	}
	if err := ch.TxCommit(); err != nil {
		t.Fatal(err)
	}
	if n := messageCount(t, obs, q); n != 2 {
		t.Fatalf("%d messages after commit, want 2", n)
	}
	publish(t, ch, "", q, text("rolled back"))
	if err := ch.TxRollback(); err != nil {
		t.Fatal(err)
	}
	if err := ch.TxCommit(); err != nil { // nothing pending
		t.Fatal(err)
	}
	if n := messageCount(t, obs, q); n != 2 {
		t.Fatalf("%d messages after rollback, want 2", n)
	}

	// Acks inside the transaction.
	d := consume(t, ch, q, "c", false, nil)
	ms := recvN(t, d, 2)
	if err := ch.Ack(ms[1].DeliveryTag, true); err != nil {
		t.Fatal(err)
	}
	if err := ch.TxRollback(); err != nil {
		t.Fatal(err)
	}
	// Rolled-back acks leave the messages unacked on the channel: not requeued, not redelivered.
	expectNoDelivery(t, d)
	if err := ch.Ack(ms[0].DeliveryTag, false); err != nil {
		t.Fatal(err)
	}
	if err := ch.TxCommit(); err != nil {
		t.Fatal(err)
	}
	// Closing the channel requeues only the one still unacked.
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	waitMessageCount(t, obs, q, 1)
	if got := drain(t, obs, q); !equalStrings(got, []string{"2"}) {
		t.Fatalf("left after commit of one ack: %v", got)
	}
}

// Messages no binding takes go to the alternate exchange (recursively), and are not returned.
func TestAlternateExchange(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	ae2 := declareExchange(t, s, ch, "ae2", "fanout", nil)
	ae := declareExchange(t, s, ch, "ae", "direct", amqp.Table{"alternate-exchange": ae2})
	x := declareExchange(t, s, ch, "x", "direct", amqp.Table{"alternate-exchange": ae})
	qx := declareQueue(t, s, ch, "qx", nil)
	qae := declareQueue(t, s, ch, "qae", nil)
	qae2 := declareQueue(t, s, ch, "qae2", nil)
	mustBind(t, ch, qx, "k", x, nil)
	mustBind(t, ch, qae, "other", ae, nil)
	mustBind(t, ch, qae2, "", ae2, nil)
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	for _, m := range []struct{ key, body string }{{"k", "routed"}, {"other", "to ae"}, {"zzz", "to ae2"}} {
		if err := ch.Publish(x, m.key, true, false, text(m.body)); err != nil {
			t.Fatal(err)
		}
	}
	waitMessageCount(t, ch, qae2, 1)
	if got := drain(t, ch, qx); !equalStrings(got, []string{"routed"}) {
		t.Fatalf("qx: %v", got)
	}
	if got := drain(t, ch, qae); !equalStrings(got, []string{"to ae"}) {
		t.Fatalf("qae: %v", got)
	}
	m, _ := get(t, ch, qae2, true)
	if string(m.Body) != "to ae2" || m.Exchange != x || m.RoutingKey != "zzz" {
		t.Fatalf("qae2: %q via %q/%q; want the original exchange and key", m.Body, m.Exchange, m.RoutingKey)
	}
	select {
	case r := <-returns:
		t.Fatalf("message routed by an alternate exchange was returned: %q", r.Body)
	case <-time.After(quietPeriod):
	}
	// An alternate exchange that does not exist makes the message unroutable.
	y := declareExchange(t, s, ch, "y", "direct", amqp.Table{"alternate-exchange": Name(t, "missing")})
	if err := ch.Publish(y, "k", true, false, text("lost")); err != nil {
		t.Fatal(err)
	}
	if r := recvReturn(t, returns); r.ReplyCode != 312 || string(r.Body) != "lost" {
		t.Fatalf("return %d %q", r.ReplyCode, r.Body)
	}
}

// Direct reply-to: an RPC round trip through the pseudo-queue amq.rabbitmq.reply-to.
func TestDirectReplyTo(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	rq := declareQueue(t, s, ch, "rpc", nil)
	server := channel(t, dial(t, s))
	requests := consume(t, server, rq, "srv", false, nil)

	client := channel(t, c)
	replies, err := client.Consume("amq.rabbitmq.reply-to", "cli", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		corr := fmt.Sprintf("corr-%d", i)
		publish(t, client, "", rq, amqp.Publishing{ReplyTo: "amq.rabbitmq.reply-to", CorrelationId: corr,
			Body: []byte("ping " + strconv.Itoa(i))})
		req := recv(t, requests)
		if len(req.ReplyTo) <= len("amq.rabbitmq.reply-to.") || req.ReplyTo[:len("amq.rabbitmq.reply-to.")] != "amq.rabbitmq.reply-to." {
			t.Fatalf("request reply-to %q, want amq.rabbitmq.reply-to.<token>", req.ReplyTo)
		}
		publish(t, server, "", req.ReplyTo, amqp.Publishing{CorrelationId: req.CorrelationId,
			Body: append([]byte("pong: "), req.Body...)})
		if err := server.Ack(req.DeliveryTag, false); err != nil {
			t.Fatal(err)
		}
		rep := recv(t, replies)
		if rep.CorrelationId != corr || string(rep.Body) != "pong: ping "+strconv.Itoa(i) {
			t.Fatalf("reply %q corr %q", rep.Body, rep.CorrelationId)
		}
	}
	// A reply to a token nobody holds is dropped, not an error for the replier.
	publish(t, server, "", "amq.rabbitmq.reply-to.bogus", text("nobody"))
	if _, err := server.QueueDeclarePassive(rq, false, false, false, false, nil); err != nil {
		t.Fatalf("replier channel after a reply to a bogus token: %v", err)
	}
}

func TestDirectReplyToErrors(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	// Publishing with reply-to amq.rabbitmq.reply-to before consuming from it.
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	publish(t, ch, "", q, amqp.Publishing{ReplyTo: "amq.rabbitmq.reply-to", Body: []byte("x")})
	e := waitChannelClose(t, closed)
	if e.Code != amqp.PreconditionFailed || e.Reason != "PRECONDITION_FAILED - fast reply consumer does not exist" {
		t.Fatalf("publish without a reply consumer: %d %q", e.Code, e.Reason)
	}
	// The reply consumer must be no-ack.
	ch = channel(t, c)
	_, err := ch.Consume("amq.rabbitmq.reply-to", "", false, false, false, false, nil)
	expectChannelClosed(t, c, ch, err, amqp.PreconditionFailed, "PRECONDITION_FAILED - reply consumer cannot acknowledge")
}

// Every basic property and a header table holding every field type come back unchanged.
func TestPropertiesRoundTrip(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	ts := time.Unix(1700000000, 0)
	headers := amqp.Table{
		"bool":    true,
		"int8":    int8(-8),
		"uint8":   uint8(200),
		"int16":   int16(-1600),
		"int32":   int32(-320000),
		"int64":   int64(-6400000000),
		"float32": float32(1.5),
		"float64": float64(2.25),
		"decimal": amqp.Decimal{Scale: 2, Value: 12345},
		"string":  "long string",
		"bytes":   []byte{0, 1, 2, 255},
		"array":   []interface{}{"a", int32(1), true},
		"time":    ts,
		"table":   amqp.Table{"nested": "yes", "n": int32(1)},
		"void":    nil,
	}
	msg := amqp.Publishing{
		Headers:         headers,
		ContentType:     "application/json",
		ContentEncoding: "gzip",
		DeliveryMode:    amqp.Persistent,
		Priority:        5,
		CorrelationId:   "corr",
		ReplyTo:         "reply",
		Expiration:      "600000",
		MessageId:       "mid",
		Timestamp:       ts,
		Type:            "type",
		UserId:          "guest",
		AppId:           "app",
		Body:            []byte("{}"),
	}
	publish(t, ch, "", q, msg)
	d := consume(t, ch, q, "c", true, nil)
	m := recv(t, d)
	check := func(name string, got, want interface{}) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %#v, want %#v", name, got, want)
		}
	}
	check("content-type", m.ContentType, msg.ContentType)
	check("content-encoding", m.ContentEncoding, msg.ContentEncoding)
	check("delivery-mode", m.DeliveryMode, msg.DeliveryMode)
	check("priority", m.Priority, msg.Priority)
	check("correlation-id", m.CorrelationId, msg.CorrelationId)
	check("reply-to", m.ReplyTo, msg.ReplyTo)
	check("expiration", m.Expiration, msg.Expiration)
	check("message-id", m.MessageId, msg.MessageId)
	check("timestamp", m.Timestamp.Unix(), msg.Timestamp.Unix())
	check("type", m.Type, msg.Type)
	check("user-id", m.UserId, msg.UserId)
	check("app-id", m.AppId, msg.AppId)
	check("body", string(m.Body), string(msg.Body))
	for k, want := range headers {
		got, ok := m.Headers[k]
		if !ok {
			t.Errorf("header %q missing", k)
			continue
		}
		if tv, isTime := want.(time.Time); isTime {
			if gt, ok := got.(time.Time); !ok || gt.Unix() != tv.Unix() {
				t.Errorf("header %q: got %#v, want %v", k, got, tv)
			}
			continue
		}
		check("header "+k, got, want)
	}
	if len(m.Headers) != len(headers) {
		t.Errorf("headers: got %d entries, want %d: %#v", len(m.Headers), len(headers), m.Headers)
	}
}

// A user-id that is not the connection's user is refused (RabbitMQ validates it).
func TestUserIDValidated(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	publish(t, ch, "", q, amqp.Publishing{UserId: "mallory", Body: []byte("x")})
	e := waitChannelClose(t, closed)
	if e.Code != amqp.PreconditionFailed || e.Reason != "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'" {
		t.Fatalf("publish with a foreign user-id: %d %q", e.Code, e.Reason)
	}
}
