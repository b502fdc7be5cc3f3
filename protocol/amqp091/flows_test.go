package amqp091

import (
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func wantAMQPError(t *testing.T, err error, code int, text string) {
	t.Helper()
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		t.Fatalf("got %v, want AMQP error %d", err, code)
	}
	if ae.Code != code || (text != "" && ae.Reason != text) {
		t.Fatalf("got %d %q, want %d %q", ae.Code, ae.Reason, code, text)
	}
}

func TestConfirmsAndMandatoryReturn(t *testing.T) {
	url, _ := testServer(t)
	_, ch := dial(t, url)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 100))
	returns := ch.NotifyReturn(make(chan amqp.Return, 10))
	q, err := ch.QueueDeclare("confirmed", false, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := ch.PublishWithContext(ctx(t), "", q.Name, false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.PublishWithContext(ctx(t), "", "nowhere", true, false, amqp.Publishing{Body: []byte("lost")}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 51; i++ {
		select {
		case c := <-confirms:
			if c.DeliveryTag != uint64(i) || !c.Ack {
				t.Fatalf("confirm %d: %+v", i, c)
			}
			if i == 51 {
				// basic.return precedes the ack of the same publish.
				select {
				case r := <-returns:
					if r.ReplyCode != 312 || r.ReplyText != "NO_ROUTE" || string(r.Body) != "lost" {
						t.Fatalf("return %+v", r)
					}
				default:
					t.Fatal("ack arrived before basic.return")
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("confirm %d missing", i)
		}
	}
}

func TestChannelErrors(t *testing.T) {
	url, _ := testServer(t)
	conn, ch := dial(t, url)
	_, err := ch.QueueDeclarePassive("missing", false, false, false, false, nil)
	wantAMQPError(t, err, 404, "NOT_FOUND - no queue 'missing' in vhost '/'")

	ch, _ = conn.Channel()
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	_ = ch.PublishWithContext(ctx(t), "no-such-exchange", "k", false, false, amqp.Publishing{})
	select {
	case e := <-closed:
		wantAMQPError(t, e, 404, "NOT_FOUND - no exchange 'no-such-exchange' in vhost '/'")
	case <-time.After(10 * time.Second):
		t.Fatal("channel not closed")
	}

	ch, _ = conn.Channel()
	closed = ch.NotifyClose(make(chan *amqp.Error, 1))
	_ = ch.Ack(5, false)
	select {
	case e := <-closed:
		wantAMQPError(t, e, 406, "PRECONDITION_FAILED - unknown delivery tag 5")
	case <-time.After(10 * time.Second):
		t.Fatal("channel not closed")
	}
	// The connection survives channel errors.
	ch, err = conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("", false, true, true, false, nil); err != nil {
		t.Fatal(err)
	}
}

func TestConnectionErrorDuplicateConsumerTag(t *testing.T) {
	url, _ := testServer(t)
	conn, ch := dial(t, url)
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	q, _ := ch.QueueDeclare("", false, true, true, false, nil)
	if _, err := ch.Consume(q.Name, "tag", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	_, err := ch.Consume(q.Name, "tag", false, false, false, false, nil)
	wantAMQPError(t, err, 530, "NOT_ALLOWED - attempt to reuse consumer tag 'tag'")
	select {
	case e := <-closed:
		wantAMQPError(t, e, 530, "NOT_ALLOWED - attempt to reuse consumer tag 'tag'")
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed")
	}
}

func TestPrefetchAndRequeueOnClose(t *testing.T) {
	url, _ := testServer(t)
	conn, ch := dial(t, url)
	q, _ := ch.QueueDeclare("pf", false, false, false, false, nil)
	for i := 0; i < 5; i++ {
		_ = ch.PublishWithContext(ctx(t), "", q.Name, false, false, amqp.Publishing{Body: []byte{byte('0' + i)}})
	}
	c2, _ := conn.Channel()
	if err := c2.Qos(2, 0, false); err != nil {
		t.Fatal(err)
	}
	ds, err := c2.Consume(q.Name, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ds)
	recv(t, ds)
	select {
	case d := <-ds:
		t.Fatalf("prefetch 2 exceeded: %q", d.Body)
	case <-time.After(100 * time.Millisecond):
	}
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	// Both unacked deliveries are back, redelivered.
	c3, _ := conn.Channel()
	d, ok, err := c3.Get(q.Name, false)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if !d.Redelivered || string(d.Body) != "0" || d.MessageCount != 4 {
		t.Fatalf("get %+v", d)
	}
}

func TestGlobalQos(t *testing.T) {
	url, _ := testServer(t)
	_, ch := dial(t, url)
	for _, n := range []string{"g1", "g2"} {
		if _, err := ch.QueueDeclare(n, false, true, false, false, nil); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			_ = ch.PublishWithContext(ctx(t), "", n, false, false, amqp.Publishing{Body: []byte(n)})
		}
	}
	if err := ch.Qos(3, 0, true); err != nil {
		t.Fatal(err)
	}
	d1, _ := ch.Consume("g1", "", false, false, false, false, nil)
	d2, _ := ch.Consume("g2", "", false, false, false, false, nil)
	got := 0
	var last amqp.Delivery
	timeout := time.After(300 * time.Millisecond)
loop:
	for {
		select {
		case last = <-d1:
			got++
		case last = <-d2:
			got++
		case <-timeout:
			break loop
		}
	}
	if got != 3 {
		t.Fatalf("global prefetch 3: got %d deliveries", got)
	}
	if err := last.Ack(true); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		select {
		case <-d1:
		case <-d2:
		case <-time.After(10 * time.Second):
			t.Fatal("credit not returned after ack")
		}
	}
}

func TestTransactions(t *testing.T) {
	url, _ := testServer(t)
	_, ch := dial(t, url)
	q, _ := ch.QueueDeclare("", false, true, true, false, nil)
	if err := ch.Tx(); err != nil {
		t.Fatal(err)
	}
	_ = ch.PublishWithContext(ctx(t), "", q.Name, false, false, amqp.Publishing{Body: []byte("a")})
	if err := ch.TxRollback(); err != nil {
		t.Fatal(err)
	}
	_ = ch.PublishWithContext(ctx(t), "", q.Name, false, false, amqp.Publishing{Body: []byte("b")})
	st, _ := ch.QueueDeclarePassive(q.Name, false, true, true, false, nil)
	if st.Messages != 0 {
		t.Fatalf("uncommitted publish visible: %d", st.Messages)
	}
	if err := ch.TxCommit(); err != nil {
		t.Fatal(err)
	}
	st, _ = ch.QueueDeclarePassive(q.Name, false, true, true, false, nil)
	if st.Messages != 1 {
		t.Fatalf("after commit: %d messages", st.Messages)
	}
	err := ch.Confirm(false)
	wantAMQPError(t, err, 406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode")
}

func TestDirectReplyTo(t *testing.T) {
	url, _ := testServer(t)
	conn, client := dial(t, url)
	server, _ := conn.Channel()
	rq, _ := server.QueueDeclare("rpc", false, true, false, false, nil)
	reqs, _ := server.Consume(rq.Name, "", true, false, false, false, nil)
	replies, err := client.Consume("amq.rabbitmq.reply-to", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = client.PublishWithContext(ctx(t), "", "rpc", false, false, amqp.Publishing{ReplyTo: "amq.rabbitmq.reply-to", Body: []byte("ping")})
	req := recv(t, reqs)
	if !strings.HasPrefix(req.ReplyTo, "amq.rabbitmq.reply-to.") {
		t.Fatalf("reply-to not rewritten: %q", req.ReplyTo)
	}
	_ = server.PublishWithContext(ctx(t), "", req.ReplyTo, false, false, amqp.Publishing{Body: []byte("pong")})
	if r := recv(t, replies); string(r.Body) != "pong" {
		t.Fatalf("reply %q", r.Body)
	}
	c2, _ := conn.Channel()
	_, err = c2.Consume("amq.rabbitmq.reply-to", "", false, false, false, false, nil)
	wantAMQPError(t, err, 406, "PRECONDITION_FAILED - reply consumer cannot acknowledge")
}

func TestServerCloseForcesClients(t *testing.T) {
	url, s := testServer(t)
	conn, _ := dial(t, url)
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	go s.Close()
	select {
	case e := <-closed:
		wantAMQPError(t, e, 320, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")
	case <-time.After(10 * time.Second):
		t.Fatal("not closed")
	}
}

func TestBlocked(t *testing.T) {
	url, s := testServer(t)
	conn, _ := dial(t, url)
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 2))
	s.SetBlocked("low on memory", true)
	s.SetBlocked("", false)
	for _, want := range []amqp.Blocking{{Active: true, Reason: "low on memory"}, {Active: false}} {
		select {
		case b := <-blocked:
			if b != want {
				t.Fatalf("got %+v want %+v", b, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no blocked notification")
		}
	}
}

func TestBadCredentials(t *testing.T) {
	url, _ := testServer(t)
	_, err := amqp.Dial(strings.Replace(url, "guest:guest", "guest:wrong", 1))
	// amqp091-go reports its own text for any refusal during login; raw_test.go checks ours.
	wantAMQPError(t, err, 403, "")
}

func TestUnknownVHost(t *testing.T) {
	url, _ := testServer(t)
	_, err := amqp.Dial(url + "nope")
	wantAMQPError(t, err, 530, "NOT_ALLOWED - vhost nope not found")
}

func TestCancelNotifyOnQueueDelete(t *testing.T) {
	url, _ := testServer(t)
	conn, ch := dial(t, url)
	q, _ := ch.QueueDeclare("doomed", false, false, false, false, nil)
	cancels := ch.NotifyCancel(make(chan string, 1))
	if _, err := ch.Consume(q.Name, "ctag", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	other, _ := conn.Channel()
	if _, err := other.QueueDelete(q.Name, false, false, false); err != nil {
		t.Fatal(err)
	}
	select {
	case tag := <-cancels:
		if tag != "ctag" {
			t.Fatalf("cancel for %q", tag)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no basic.cancel")
	}
}

func TestBlockedStopsPublisher(t *testing.T) {
	url, s := testServer(t)
	_, ch := dial(t, url)
	_, other := dial(t, url)
	q, _ := other.QueueDeclare("blocked-q", false, true, false, false, nil)
	s.SetBlocked("disk", true)
	for _, b := range []string{"1", "2"} {
		_ = ch.PublishWithContext(ctx(t), "", q.Name, false, false, amqp.Publishing{Body: []byte(b)})
	}
	count := func() int {
		st, err := other.QueueDeclarePassive(q.Name, false, true, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return st.Messages
	}
	time.Sleep(100 * time.Millisecond)
	// The reader stops after the first publish it sees during the alarm.
	if n := count(); n > 1 {
		t.Fatalf("publisher not blocked: %d messages", n)
	}
	s.SetBlocked("", false)
	deadline := time.Now().Add(10 * time.Second)
	for count() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("publishes not resumed after unblock")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
