package amqp091

import (
	"bytes"
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parleymq/parley/protocol/amqp091/wire"
)

const testFlowLimit = 500

// TestFlowHoldsPublisherForOutputBoundConsumer: a no-ack consumer that reads its socket slower
// than a publisher publishes fills its connection's output, and the queue then holds the
// publisher back (broker.FlowGate): the queue stays near the flow limit instead of taking
// everything published, and nothing is lost. Without flow control the queue holds most of the
// 10,000 messages by the time the publisher is done.
func TestFlowHoldsPublisherForOutputBoundConsumer(t *testing.T) {
	url, _ := testServer(t, func(c *Config) { c.PublishFlowLimit = testFlowLimit })
	c := rawDial(t, url)
	_ = c.nc.SetDeadline(time.Now().Add(60 * time.Second))
	// A small receive buffer, so that the kernel does not take megabytes for the consumer.
	_ = c.nc.(*net.TCPConn).SetReadBuffer(64 << 10)
	c.open("guest")
	c.method(1, &wire.QueueDeclare{Queue: "flow-out", AutoDelete: true})
	if _, ok := c.next().(*wire.QueueDeclareOk); !ok {
		t.Fatal("no queue.declare-ok")
	}
	c.method(1, &wire.BasicConsume{Queue: "flow-out", ConsumerTag: "c", NoAck: true})
	if _, ok := c.next().(*wire.BasicConsumeOk); !ok {
		t.Fatal("no basic.consume-ok")
	}

	const n = 10000
	body := bytes.Repeat([]byte("x"), 4096)
	_, pub := dial(t, url)
	pubDone := make(chan error, 1)
	go func() {
		for range n {
			if err := pub.PublishWithContext(context.Background(), "", "flow-out", false, false,
				amqp.Publishing{Body: body}); err != nil {
				pubDone <- err
				return
			}
		}
		pubDone <- nil
	}()

	// The consumer reads a little at a time (about 12 MB/s, 3,000 messages a second), so its
	// connection's output fills while it keeps taking messages.
	var bodies atomic.Int64
	slow := atomic.Bool{}
	slow.Store(true)
	readErr := make(chan error, 1)
	go func() {
		for bodies.Load() < n {
			if slow.Load() && bodies.Load()%16 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			f, err := c.r.ReadFrame()
			if err != nil {
				readErr <- err
				return
			}
			if f.Type == wire.FrameBody {
				bodies.Add(1)
			}
		}
		readErr <- nil
	}()

	_, mon := dial(t, url)
	most := 0
	for published := false; !published; {
		select {
		case err := <-pubDone:
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			published = true
		case err := <-readErr:
			t.Fatalf("consumer stopped early after %d messages: %v", bodies.Load(), err)
		case <-time.After(2 * time.Millisecond):
		}
		st, err := mon.QueueDeclarePassive("flow-out", false, true, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, st.Messages)
	}
	slow.Store(false)
	if err := <-readErr; err != nil {
		t.Fatalf("consumer: after %d of %d messages: %v", bodies.Load(), n, err)
	}
	t.Logf("most ready while publishing: %d (limit %d)", most, testFlowLimit)
	// The limit plus what the reader had buffered and the queue's inbox had not applied yet.
	if most > 4*testFlowLimit {
		t.Fatalf("the queue held %d ready messages while the publisher published: not held back at %d", most, testFlowLimit)
	}
}

// TestFlowIgnoresPrefetchBoundConsumer: a consumer held by its prefetch (a worker that
// acknowledges one message at a time at its own pace) never holds publishers back: a
// producer enqueues its whole burst, confirmed, long before the worker is through it, as in
// RabbitMQ. Holding publishers for every queue over the limit that has consumers (what MQTT
// does) would make the producer wait for the worker.
func TestFlowIgnoresPrefetchBoundConsumer(t *testing.T) {
	url, _ := testServer(t, func(c *Config) { c.PublishFlowLimit = testFlowLimit })
	_, cons := dial(t, url)
	q, err := cons.QueueDeclare("flow-prefetch", false, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cons.Qos(1, 0, false); err != nil {
		t.Fatal(err)
	}
	ds, err := cons.Consume(q.Name, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Int64
	stop := make(chan struct{})
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case d, ok := <-ds:
				if !ok {
					return
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if d.Ack(false) == nil {
					acked.Add(1)
				}
			}
		}
	}()
	defer func() { close(stop); <-workerDone }()

	const n = 3000
	_, pub := dial(t, url)
	if err := pub.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	confirms := make([]*amqp.DeferredConfirmation, 0, n)
	for range n {
		dc, err := pub.PublishWithDeferredConfirmWithContext(ctx, "", q.Name, false, false, amqp.Publishing{Body: make([]byte, 1024)})
		if err != nil {
			t.Fatal(err)
		}
		confirms = append(confirms, dc)
	}
	for i, dc := range confirms {
		ok, err := dc.WaitContext(ctx)
		if err != nil || !ok {
			t.Fatalf("confirm %d: %v %v", i, ok, err)
		}
	}
	done := acked.Load()
	t.Logf("the worker had acknowledged %d of %d when the last publish was confirmed", done, n)
	if done >= n/2 {
		t.Fatalf("the publisher waited for the worker: %d of %d acknowledged before the last confirm", done, n)
	}
}
