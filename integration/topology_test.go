package integration

import (
	"fmt"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// AMQP 0-9-1 §3.1.3: the server pre-declares the default exchange and amq.<type> for every
// type it supports; RabbitMQ adds amq.match (headers) and amq.rabbitmq.trace.
func TestStandardExchangesPresent(t *testing.T) {
	t.Parallel()
	_, c, _ := setup(t)
	for _, x := range []struct{ name, kind string }{
		{"amq.direct", "direct"},
		{"amq.fanout", "fanout"},
		{"amq.topic", "topic"},
		{"amq.headers", "headers"},
		{"amq.match", "headers"},
	} {
		ch := channel(t, c)
		if err := ch.ExchangeDeclarePassive(x.name, x.kind, true, false, false, false, nil); err != nil {
			t.Fatalf("passive exchange.declare %s: %v", x.name, err)
		}
		// A non-passive redeclare with the same properties is fine too.
		if err := ch.ExchangeDeclare(x.name, x.kind, true, false, false, false, nil); err != nil {
			t.Fatalf("exchange.declare %s (equivalent): %v", x.name, err)
		}
		_ = ch.Close()
	}
}

// The vhost "/" is where the default URL lands; "%2f" names it explicitly.
func TestDefaultVhost(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := dialConfig(t, s, amqp.Config{Vhost: "/"})
	if c.Config.Vhost != "/" {
		t.Fatalf("negotiated vhost %q, want /", c.Config.Vhost)
	}
	u := strings.TrimSuffix(s.URL, "/") + "/%2f"
	c2, err := amqp.Dial(u)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	defer c2.Close()
	if c2.Config.Vhost != "/" {
		t.Fatalf("%s: vhost %q, want /", u, c2.Config.Vhost)
	}
}

// The default exchange routes to the queue named by the routing key and cannot be bound to.
func TestDefaultExchange(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	publish(t, ch, "", q, text("via default"))
	waitMessageCount(t, ch, q, 1)
	if got := getBody(t, ch, q); got != "via default" {
		t.Fatalf("got %q", got)
	}
	err := ch.QueueBind(q, "k", "", false, nil)
	expectChannelClosed(t, c, ch, err, amqp.AccessRefused,
		"ACCESS_REFUSED - operation not permitted on the default exchange")
}

func TestDirectExchange(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	for _, x := range []string{"amq.direct", declareExchange(t, s, ch, "x", "direct", nil)} {
		q1 := declareQueue(t, s, ch, "q1", nil)
		q2 := declareQueue(t, s, ch, "q2", nil)
		mustBind(t, ch, q1, "red", x, nil)
		mustBind(t, ch, q2, "red", x, nil)
		mustBind(t, ch, q2, "green", x, nil)
		publish(t, ch, x, "red", text("r"))
		publish(t, ch, x, "green", text("g"))
		publish(t, ch, x, "blue", text("b"))
		publish(t, ch, x, "RED", text("R")) // routing keys are case sensitive
		waitMessageCount(t, ch, q2, 2)
		if got := drain(t, ch, q1); !equalStrings(got, []string{"r"}) {
			t.Fatalf("%s: q1 got %v", x, got)
		}
		if got := drain(t, ch, q2); !equalStrings(got, []string{"r", "g"}) {
			t.Fatalf("%s: q2 got %v", x, got)
		}
	}
}

func TestFanoutExchange(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	for _, x := range []string{"amq.fanout", declareExchange(t, s, ch, "x", "fanout", nil)} {
		q1 := declareQueue(t, s, ch, "q1", nil)
		q2 := declareQueue(t, s, ch, "q2", nil)
		mustBind(t, ch, q1, "", x, nil)
		mustBind(t, ch, q2, "ignored", x, nil)
		publish(t, ch, x, "anything", text("a"))
		publish(t, ch, x, "", text("b"))
		waitMessageCount(t, ch, q1, 2)
		waitMessageCount(t, ch, q2, 2)
		if got := drain(t, ch, q2); !equalStrings(got, []string{"a", "b"}) {
			t.Fatalf("%s: q2 got %v", x, got)
		}
	}
}

func TestTopicExchange(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	cases := []struct {
		pattern string
		match   []string
		noMatch []string
	}{
		{"a.b.c", []string{"a.b.c"}, []string{"a.b", "a.b.c.d", "a.x.c"}},
		{"a.*.c", []string{"a.b.c", "a.x.c", "a..c"}, []string{"a.c", "a.b.b.c", "b.b.c"}},
		{"a.#", []string{"a", "a.b", "a.b.c.d"}, []string{"b.a", "ab"}},
		{"#.z", []string{"z", "a.z", "a.b.z"}, []string{"z.a", "az"}},
		{"a.#.z", []string{"a.z", "a.b.z", "a.b.c.z"}, []string{"a.b", "z"}},
		{"*", []string{"a"}, []string{"a.b", ""}},
		{"#", []string{"", "a", "a.b.c"}, nil},
		{"*.*", []string{"a.b", "."}, []string{"a", "a.b.c"}},
		{"*.#", []string{"a", "a.b", "a.b.c"}, nil},
		{"", []string{""}, []string{"a"}},
	}
	for _, x := range []string{"amq.topic", declareExchange(t, s, ch, "x", "topic", nil)} {
		for i, tc := range cases {
			q := declareQueue(t, s, ch, fmt.Sprintf("q%d", i), nil)
			mustBind(t, ch, q, tc.pattern, x, nil)
			// Bodies are the keys prefixed by the queue, so messages for other cases (the same
			// exchange carries every case's traffic) are told apart.
			for _, k := range append(append([]string{}, tc.match...), tc.noMatch...) {
				publish(t, ch, x, k, text(q+"|"+k))
			}
			var want []string
			for _, k := range tc.match {
				want = append(want, q+"|"+k)
			}
			waitMessageCount(t, ch, q, len(want))
			got := drain(t, ch, q)
			var mine []string
			for _, g := range got {
				if strings.HasPrefix(g, q+"|") {
					mine = append(mine, g)
				}
			}
			if !equalStrings(mine, want) {
				t.Fatalf("%s pattern %q: got %v, want %v", x, tc.pattern, mine, want)
			}
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestHeadersExchange(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	x := declareExchange(t, s, ch, "x", "headers", nil)
	binds := []struct {
		name string
		args amqp.Table
	}{
		{"all", amqp.Table{"x-match": "all", "a": "1", "b": int32(2)}},
		{"any", amqp.Table{"x-match": "any", "a": "1", "b": int32(2)}},
		{"default", amqp.Table{"a": "1", "b": int32(2)}}, // no x-match means all
		{"allx", amqp.Table{"x-match": "all-with-x", "x-k": "v", "a": "1"}},
		{"anyx", amqp.Table{"x-match": "any-with-x", "x-k": "v"}},
		{"all-x-ignored", amqp.Table{"x-match": "all", "x-k": "v", "a": "1"}},
		{"empty", amqp.Table{}},
	}
	queues := map[string]string{}
	for _, b := range binds {
		q := declareQueue(t, s, ch, b.name, nil)
		queues[b.name] = q
		mustBind(t, ch, q, "", x, b.args)
		mustBind(t, ch, q, "", "amq.headers", b.args)
		mustBind(t, ch, q, "", "amq.match", b.args)
	}
	msgs := []struct {
		body    string
		headers amqp.Table
		want    []string
	}{
		{"ab", amqp.Table{"a": "1", "b": int32(2)}, []string{"all", "any", "default", "all-x-ignored", "empty"}},
		{"a", amqp.Table{"a": "1"}, []string{"any", "all-x-ignored", "empty"}},
		{"a-wrong", amqp.Table{"a": "2", "b": int32(2)}, []string{"any", "empty"}},
		{"none", nil, []string{"empty"}},
		{"xk", amqp.Table{"x-k": "v"}, []string{"anyx", "empty"}},
		{"xk-a", amqp.Table{"x-k": "v", "a": "1"}, []string{"any", "allx", "anyx", "all-x-ignored", "empty"}},
		{"b-string", amqp.Table{"b": "2"}, []string{"empty"}}, // types must match too
	}
	for _, ex := range []string{x, "amq.headers", "amq.match"} {
		for _, m := range msgs {
			publish(t, ch, ex, "ignored", amqp.Publishing{Headers: m.headers, Body: []byte(m.body)})
		}
		for name, q := range queues {
			var want []string
			for _, m := range msgs {
				for _, w := range m.want {
					if w == name {
						want = append(want, m.body)
					}
				}
			}
			waitMessageCount(t, ch, q, len(want))
			if got := drain(t, ch, q); !equalStrings(got, want) {
				t.Fatalf("%s binding %q: got %v, want %v", ex, name, got, want)
			}
		}
	}
}

// Exchange-to-exchange bindings (a RabbitMQ extension) route through chains; unbinding stops it.
func TestExchangeToExchangeBinding(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	src := declareExchange(t, s, ch, "src", "topic", nil)
	mid := declareExchange(t, s, ch, "mid", "direct", nil)
	hdr := declareExchange(t, s, ch, "hdr", "headers", nil)
	q1 := declareQueue(t, s, ch, "q1", nil)
	q2 := declareQueue(t, s, ch, "q2", nil)
	if err := ch.ExchangeBind(mid, "a.*", src, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeBind(hdr, "#", src, false, nil); err != nil {
		t.Fatal(err)
	}
	mustBind(t, ch, q1, "a.x", mid, nil)
	mustBind(t, ch, q2, "", hdr, amqp.Table{"x-match": "any", "color": "red"})
	publish(t, ch, src, "a.x", amqp.Publishing{Body: []byte("1"), Headers: amqp.Table{"color": "red"}})
	publish(t, ch, src, "a.y", amqp.Publishing{Body: []byte("2")})
	publish(t, ch, src, "b.x", amqp.Publishing{Body: []byte("3"), Headers: amqp.Table{"color": "red"}})
	waitMessageCount(t, ch, q2, 2)
	if got := drain(t, ch, q1); !equalStrings(got, []string{"1"}) {
		t.Fatalf("q1 got %v", got)
	}
	if got := drain(t, ch, q2); !equalStrings(got, []string{"1", "3"}) {
		t.Fatalf("q2 got %v", got)
	}
	// A cycle delivers each message at most once per queue.
	if err := ch.ExchangeBind(src, "#", mid, false, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, src, "a.x", text("cycle"))
	waitMessageCount(t, ch, q1, 1)
	if got := drain(t, ch, q1); !equalStrings(got, []string{"cycle"}) {
		t.Fatalf("q1 after cycle got %v", got)
	}
	if err := ch.ExchangeUnbind(mid, "a.*", src, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeUnbind(src, "#", mid, false, nil); err != nil {
		t.Fatal(err)
	}
	// Without a color header the message matches nothing through hdr, and mid is unbound.
	publish(t, ch, src, "a.x", text("after unbind"))
	expectEmptyAfterQuiet(t, ch, q1)
	expectEmptyAfterQuiet(t, ch, q2)
}

// Binding arguments are part of a binding's identity: the same key with other arguments is a
// second binding, and unbind removes only the one whose arguments match.
func TestBindingArgumentsAndUnbind(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	x := declareExchange(t, s, ch, "x", "direct", nil)
	q := declareQueue(t, s, ch, "q", nil)
	mustBind(t, ch, q, "k", x, amqp.Table{"v": int32(1)})
	mustBind(t, ch, q, "k", x, amqp.Table{"v": int32(2)})
	mustBind(t, ch, q, "k", x, amqp.Table{"v": int32(2)}) // idempotent
	publish(t, ch, x, "k", text("one copy"))
	waitMessageCount(t, ch, q, 1)
	drain(t, ch, q)
	if err := ch.QueueUnbind(q, "k", x, amqp.Table{"v": int32(1)}); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, x, "k", text("still bound"))
	waitMessageCount(t, ch, q, 1)
	drain(t, ch, q)
	// Unbinding a binding that does not exist is not an error.
	if err := ch.QueueUnbind(q, "k", x, amqp.Table{"v": int32(3)}); err != nil {
		t.Fatalf("unbind of a missing binding: %v", err)
	}
	if err := ch.QueueUnbind(q, "k", x, amqp.Table{"v": int32(2)}); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, x, "k", text("unbound"))
	expectEmptyAfterQuiet(t, ch, q)
}

func TestQueueDeclare(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	name := Name(t, "durable")
	cleanupQueue(t, s, name)
	q, err := ch.QueueDeclare(name, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Name != name || q.Messages != 0 || q.Consumers != 0 {
		t.Fatalf("declare-ok %+v", q)
	}
	publish(t, ch, "", name, text("1"))
	publish(t, ch, "", name, text("2"))
	waitMessageCount(t, ch, name, 2)
	d := consume(t, ch, name, "", false, nil)
	recvBodies(t, d, 2) // unacked: no longer ready
	q, err = ch.QueueDeclare(name, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 0 || q.Consumers != 1 {
		t.Fatalf("redeclare-ok %+v, want 0 ready and 1 consumer", q)
	}
	// Passive declare of a missing queue: 404 and the channel closes.
	missing := Name(t, "missing")
	_, err = ch.QueueDeclarePassive(missing, false, false, false, false, nil)
	expectChannelClosed(t, c, ch, err, amqp.NotFound,
		fmt.Sprintf("NOT_FOUND - no queue '%s' in vhost '/'", missing))
}

func TestServerNamedQueue(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	q, err := ch.QueueDeclare("", false, false, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(q.Name, "amq.gen-") || len(q.Name) <= len("amq.gen-") {
		t.Fatalf("server-named queue %q, want amq.gen-...", q.Name)
	}
	q2, err := ch.QueueDeclare("", false, false, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q2.Name == q.Name {
		t.Fatalf("two server-named queues share the name %q", q.Name)
	}
	// The empty name in queue.bind and basic.consume means the channel's last declared queue.
	mustBind(t, ch, "", q2.Name, "amq.direct", nil)
	publish(t, ch, "amq.direct", q2.Name, text("to last"))
	d, err := ch.Consume("", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := recv(t, d); string(got.Body) != "to last" {
		t.Fatalf("got %q", got.Body)
	}
	// The name is usable from another channel and survives until the connection closes.
	ch2 := channel(t, c)
	publish(t, ch2, "", q.Name, text("x"))
	waitMessageCount(t, ch2, q.Name, 1)
	_ = s
}

// An exclusive queue belongs to its connection: other connections get 405 and it is deleted
// when the connection closes.
func TestExclusiveQueue(t *testing.T) {
	t.Parallel()
	s, c1, ch1 := setup(t)
	name := Name(t, "excl")
	cleanupQueue(t, s, name)
	if _, err := ch1.QueueDeclare(name, false, false, true, false, nil); err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, s)
	want := fmt.Sprintf("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '%s' in vhost '/'. "+
		"It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.", name)
	for _, op := range []struct {
		what string
		do   func(ch *amqp.Channel) error
	}{
		{"declare", func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclare(name, false, false, true, false, nil)
			return err
		}},
		{"passive declare", func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclarePassive(name, false, false, true, false, nil)
			return err
		}},
		{"consume", func(ch *amqp.Channel) error {
			_, err := ch.Consume(name, "", false, false, false, false, nil)
			return err
		}},
		{"get", func(ch *amqp.Channel) error {
			_, _, err := ch.Get(name, true)
			return err
		}},
		{"purge", func(ch *amqp.Channel) error {
			_, err := ch.QueuePurge(name, false)
			return err
		}},
		{"delete", func(ch *amqp.Channel) error {
			_, err := ch.QueueDelete(name, false, false, false)
			return err
		}},
		{"bind", func(ch *amqp.Channel) error { return ch.QueueBind(name, "k", "amq.direct", false, nil) }},
	} {
		ch2 := channel(t, c2)
		err := op.do(ch2)
		if err == nil {
			t.Fatalf("%s of another connection's exclusive queue succeeded", op.what)
		}
		t.Logf("%s: %v", op.what, err)
		expectChannelClosed(t, c2, ch2, err, amqp.ResourceLocked, want)
	}
	// Publishing to it from another connection is allowed.
	ch2 := channel(t, c2)
	publish(t, ch2, "", name, text("from c2"))
	waitMessageCount(t, ch1, name, 1)
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := ch2.QueueDeclarePassive(name, false, false, false, false, nil)
	expectChannelClosed(t, c2, ch2, err, amqp.NotFound, fmt.Sprintf("NOT_FOUND - no queue '%s' in vhost '/'", name))
}

// An auto-delete queue goes when its last consumer is cancelled (not before it had one).
func TestAutoDeleteQueue(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	name := Name(t, "ad")
	cleanupQueue(t, s, name)
	if _, err := ch.QueueDeclare(name, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	messageCount(t, ch, name) // still there without consumers
	consume(t, ch, name, "c1", true, nil)
	consume(t, ch, name, "c2", true, nil)
	if err := ch.Cancel("c1", false); err != nil {
		t.Fatal(err)
	}
	messageCount(t, ch, name) // one consumer left
	if err := ch.Cancel("c2", false); err != nil {
		t.Fatal(err)
	}
	_, err := ch.QueueDeclarePassive(name, false, true, false, false, nil)
	expectChannelClosed(t, c, ch, err, amqp.NotFound, fmt.Sprintf("NOT_FOUND - no queue '%s' in vhost '/'", name))
}

func TestQueueDeleteAndPurge(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	for i := 0; i < 3; i++ {
		publish(t, ch, "", q, text("m"))
	}
	waitMessageCount(t, ch, q, 3)
	n, err := ch.QueuePurge(q, false)
	if err != nil || n != 3 {
		t.Fatalf("purge: %d, %v; want 3", n, err)
	}
	if n := messageCount(t, ch, q); n != 0 {
		t.Fatalf("%d messages after purge", n)
	}
	publish(t, ch, "", q, text("m"))
	waitMessageCount(t, ch, q, 1)

	// if-empty on a queue with a message.
	_, err = ch.QueueDelete(q, false, true, false)
	expectChannelClosed(t, c, ch, err, amqp.PreconditionFailed,
		fmt.Sprintf("PRECONDITION_FAILED - queue '%s' in vhost '/' not empty", q))

	// if-unused on a queue with a consumer.
	ch = channel(t, c)
	cch := channel(t, c)
	consume(t, cch, q, "busy", false, nil)
	_, err = ch.QueueDelete(q, true, false, false)
	expectChannelClosed(t, c, ch, err, amqp.PreconditionFailed,
		fmt.Sprintf("PRECONDITION_FAILED - queue '%s' in vhost '/' in use", q))
	_ = cch.Close()

	// Delete reports the messages it dropped (unacked ones went back to the queue on close).
	ch = channel(t, c)
	n, err = ch.QueueDelete(q, true, false, false)
	if err != nil || n != 1 {
		t.Fatalf("queue.delete: %d, %v; want 1", n, err)
	}
	// Deleting a queue that does not exist is ok and reports 0.
	n, err = ch.QueueDelete(q, false, false, false)
	if err != nil || n != 0 {
		t.Fatalf("queue.delete of a missing queue: %d, %v; want 0, nil", n, err)
	}
}

func TestExchangeDelete(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	x := declareExchange(t, s, ch, "x", "direct", nil)
	q := declareQueue(t, s, ch, "q", nil)
	mustBind(t, ch, q, "k", x, nil)
	err := ch.ExchangeDelete(x, true, false)
	expectChannelClosed(t, c, ch, err, amqp.PreconditionFailed,
		fmt.Sprintf("PRECONDITION_FAILED - exchange '%s' in vhost '/' in use", x))
	ch = channel(t, c)
	if err := ch.ExchangeDelete(x, false, false); err != nil {
		t.Fatal(err)
	}
	// Deleting it again is ok (RabbitMQ: exchange.delete is idempotent).
	if err := ch.ExchangeDelete(x, false, false); err != nil {
		t.Fatalf("second exchange.delete: %v", err)
	}
	err = ch.ExchangeDeclarePassive(x, "direct", false, false, false, false, nil)
	expectChannelClosed(t, c, ch, err, amqp.NotFound, fmt.Sprintf("NOT_FOUND - no exchange '%s' in vhost '/'", x))
}

// An auto-delete exchange goes when its last binding is removed.
func TestAutoDeleteExchange(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	x := Name(t, "adx")
	cleanupExchange(t, s, x)
	if err := ch.ExchangeDeclare(x, "fanout", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	q := declareQueue(t, s, ch, "q", nil)
	mustBind(t, ch, q, "", x, nil)
	if err := ch.QueueUnbind(q, "", x, nil); err != nil {
		t.Fatal(err)
	}
	err := ch.ExchangeDeclarePassive(x, "fanout", false, true, false, false, nil)
	expectChannelClosed(t, c, ch, err, amqp.NotFound, fmt.Sprintf("NOT_FOUND - no exchange '%s' in vhost '/'", x))
}

// An internal exchange cannot be published to directly, only through an exchange binding.
func TestInternalExchange(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	x := Name(t, "internal")
	cleanupExchange(t, s, x)
	if err := ch.ExchangeDeclare(x, "fanout", false, false, true, false, nil); err != nil {
		t.Fatal(err)
	}
	q := declareQueue(t, s, ch, "q", nil)
	mustBind(t, ch, q, "", x, nil)
	src := declareExchange(t, s, ch, "src", "fanout", nil)
	if err := ch.ExchangeBind(x, "", src, false, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, src, "", text("through"))
	waitMessageCount(t, ch, q, 1)
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	publish(t, ch, x, "", text("direct"))
	e := waitChannelClose(t, closed)
	if e.Code != amqp.AccessRefused || e.Reason != fmt.Sprintf("ACCESS_REFUSED - cannot publish to internal exchange '%s' in vhost '/'", x) {
		t.Fatalf("publish to internal exchange: %d %q", e.Code, e.Reason)
	}
	_ = c
}

func mustBind(t testing.TB, ch *amqp.Channel, q, key, x string, args amqp.Table) {
	t.Helper()
	if err := ch.QueueBind(q, key, x, false, args); err != nil {
		t.Fatalf("queue.bind %s -> %s (%q): %v", x, q, key, err)
	}
}

// drain takes every ready message of q with basic.get (auto-ack) and returns the bodies.
func drain(t testing.TB, ch *amqp.Channel, q string) []string {
	t.Helper()
	var out []string
	for {
		m, ok := get(t, ch, q, true)
		if !ok {
			return out
		}
		out = append(out, string(m.Body))
	}
}

// expectEmptyAfterQuiet waits quietPeriod (a routing that would be wrong has time to land) and
// fails unless q is empty.
func expectEmptyAfterQuiet(t testing.TB, ch *amqp.Channel, q string) {
	t.Helper()
	quiet()
	if got := drain(t, ch, q); len(got) != 0 {
		t.Fatalf("queue %s: got %v, want nothing", q, got)
	}
}

// TestMessageCountCountsEarlierPublishes: a passive queue.declare (and queue.delete if-empty)
// right after publishes on the same channel counts them, without waiting, as RabbitMQ does
// (its channel and queue processes keep the order). The reader wakes a queue lazily, so the
// count of the queue's last batch would miss some; this failed before Queue.CountedLen.
func TestMessageCountCountsEarlierPublishes(t *testing.T) {
	t.Parallel()
	s, c, ch := setup(t)
	for _, tc := range []struct {
		durable bool
		mode    uint8
	}{{false, amqp.Transient}, {true, amqp.Transient}, {true, amqp.Persistent}} {
		q := Name(t, fmt.Sprintf("count-%v-%d", tc.durable, tc.mode))
		if _, err := ch.QueueDeclare(q, tc.durable, false, false, false, nil); err != nil {
			t.Fatalf("queue.declare %s: %v", q, err)
		}
		cleanupQueue(t, s, q)
		want := 0
		for round := 0; round < 10; round++ {
			for i := 0; i < 200; i++ {
				publish(t, ch, "", q, amqp.Publishing{DeliveryMode: tc.mode, Body: []byte("m")})
			}
			want += 200
			if n := messageCount(t, ch, q); n != want {
				t.Fatalf("durable %v, delivery mode %d: passive declare after %d publishes counts %d",
					tc.durable, tc.mode, want, n)
			}
		}
		if _, err := ch.QueuePurge(q, false); err != nil {
			t.Fatal(err)
		}
		publish(t, ch, "", q, amqp.Publishing{DeliveryMode: tc.mode, Body: []byte("m")})
		_, err := ch.QueueDelete(q, false, true, false)
		expectChannelClosed(t, c, ch, err, amqp.PreconditionFailed,
			fmt.Sprintf("PRECONDITION_FAILED - queue '%s' in vhost '/' not empty", q))
		ch = channel(t, c)
	}
}
