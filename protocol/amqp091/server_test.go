package amqp091

import (
	"context"
	"net"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/auth"
)

// testServer starts a Server with a real broker on 127.0.0.1 and returns its AMQP URL.
func testServer(t testing.TB, mutate ...func(*Config)) (string, *Server) {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	b, err := broker.New(log, broker.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	for _, f := range mutate {
		f(&cfg)
	}
	s := NewServer(cfg, b, auth.DefaultStore(), log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = s.Serve(ln); close(done) }()
	t.Cleanup(func() {
		s.Close()
		_ = ln.Close()
		<-done
		b.Close()
	})
	return "amqp://guest:guest@" + ln.Addr().String() + "/", s
}

func dial(t *testing.T, url string) (*amqp.Connection, *amqp.Channel) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	return conn, ch
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func recv(t *testing.T, c <-chan amqp.Delivery) amqp.Delivery {
	t.Helper()
	select {
	case d, ok := <-c:
		if !ok {
			t.Fatal("delivery channel closed")
		}
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
	return amqp.Delivery{}
}

func TestPublishConsumeAck(t *testing.T) {
	url, _ := testServer(t)
	_, ch := dial(t, url)
	q, err := ch.QueueDeclare("", false, false, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(ctx(t), "", q.Name, false, false, amqp.Publishing{
		ContentType: "text/plain", Body: []byte("hello"), Headers: amqp.Table{"k": int32(7)},
	}); err != nil {
		t.Fatal(err)
	}
	ds, err := ch.Consume(q.Name, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := recv(t, ds)
	if string(d.Body) != "hello" || d.ContentType != "text/plain" || d.Headers["k"] != int32(7) || d.DeliveryTag != 1 {
		t.Fatalf("got %+v", d)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
	st, err := ch.QueueDeclarePassive(q.Name, false, false, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 0 || st.Consumers != 1 {
		t.Fatalf("declare-ok counts %+v", st)
	}
}
