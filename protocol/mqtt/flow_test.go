package mqtt

import (
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/auth"
)

// startFlowServer starts a server with the given publish flow limit and returns its address
// and its broker, whose queues the tests look at. Queue inboxes hold 256 commands: what a
// publisher may have posted that the queue's length does not show yet (a QoS 1 publish to a
// transient queue does not wait for the queue's goroutine) is at most that.
func startFlowServer(t *testing.T, limit int) (string, *broker.Broker) {
	t.Helper()
	log := zap.NewNop()
	bcfg := broker.DefaultConfig()
	bcfg.QueueInbox = 256
	b, err := broker.New(log, bcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.PublishFlowLimit = limit
	s := NewServer(cfg, b, auth.DefaultStore(), log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { s.Close(); b.Close() })
	return ln.Addr().String(), b
}

// flowSubscriber connects an MQTT 5 client with receive maximum 10 subscribed to topic at
// QoS 1, its CONNACK and SUBACK read.
func flowSubscriber(t *testing.T, addr, id, topic string) *rawClient {
	t.Helper()
	sub := dialRaw(t, addr, 5, connect(5, id, func(pk *packets.Packet) {
		pk.Properties.ReceiveMaximum = 10
	}), subscribe(1, topic, 1))
	sub.expect(packets.Connack)
	sub.expect(packets.Suback)
	return sub
}

// flowPublisher connects an MQTT 3.1.1 client that sends n QoS 1 publishes to topic, in
// writes of 100, as fast as the socket takes them, and counts the PUBACKs it reads.
func flowPublisher(t *testing.T, addr, topic string, n int) (acked *atomic.Int64, done <-chan error) {
	t.Helper()
	pub := dialRaw(t, addr, 4, connect(4, "flow-pub"))
	pub.expect(packets.Connack)
	acked = new(atomic.Int64)
	errs := make(chan error, 2)
	go func() {
		for acked.Load() < int64(n) {
			pk, err := pub.read()
			if err != nil {
				errs <- fmt.Errorf("publisher: after %d PUBACKs: %w", acked.Load(), err)
				return
			}
			if pk.FixedHeader.Type == packets.Puback {
				acked.Add(1)
			}
		}
		errs <- nil
	}()
	go func() {
		for i := 0; i < n; i += 100 {
			pks := make([]packets.Packet, 0, 100)
			for j := i; j < min(i+100, n); j++ {
				pks = append(pks, publish(uint16(j%60000+1), 1, topic, fmt.Sprintf("message %05d", j)))
			}
			if _, err := pub.c.Write(encode(t, 4, pks...)); err != nil {
				errs <- fmt.Errorf("publisher write: %w", err)
				return
			}
		}
	}()
	return acked, errs
}

// A subscriber that takes its messages slowly (receive maximum 10, each PUBACK after a pause)
// holds its publisher back: the session queue stays near the flow limit instead of taking all
// the publisher sends, and every message still arrives, once.
func TestPublishFlowControlHoldsPublisherBack(t *testing.T) {
	const limit, n = 200, 5000
	addr, b := startFlowServer(t, limit)
	sub := flowSubscriber(t, addr, "flow-sub", "flow/t")
	_ = sub.c.SetDeadline(time.Now().Add(30 * time.Second))
	v, ok := b.VHost("/")
	if !ok {
		t.Fatal("no vhost /")
	}
	q, err := v.Queue(sessionQueuePrefix+"flow-sub", 0)
	if err != nil {
		t.Fatal(err)
	}

	var peak atomic.Int64
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if l := int64(q.Len()); l > peak.Load() {
				peak.Store(l)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	_, pubDone := flowPublisher(t, addr, "flow/t", n)

	seen := make(map[string]bool, n)
	for len(seen) < n {
		pk, err := sub.read()
		if err != nil {
			t.Fatalf("subscriber: after %d messages: %v", len(seen), err)
		}
		if pk.FixedHeader.Type != packets.Publish {
			continue
		}
		if seen[string(pk.Payload)] {
			t.Fatalf("%q delivered twice", pk.Payload)
		}
		seen[string(pk.Payload)] = true
		sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		if len(seen)%10 == 0 {
			time.Sleep(5 * time.Millisecond) // at most about 2,000 messages a second
		}
	}
	close(stop)
	<-watched
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	// Without flow control the publisher, far faster than 2,000 a second, would have had most
	// of its 5,000 messages queued at once (measured: 4,900). With it, the queue exceeds the
	// limit by what the publisher sends before the queue's counters show the limit crossed:
	// its goroutine counts once a batch, so at most about two inboxes (512) more.
	if p := peak.Load(); p > 2000 {
		t.Fatalf("the session queue reached %d ready messages; flow limit %d", p, limit)
	}
	t.Logf("peak ready messages %d (limit %d)", peak.Load(), limit)
}

// A subscriber that stops taking messages (it acknowledges none, so its receive maximum runs
// out) does not stop the publishers to its topic for longer than the stall detection: its
// queue grows, as it did without flow control.
func TestPublishFlowControlStalledConsumerDoesNotBlock(t *testing.T) {
	const limit, n = 200, 2000
	addr, b := startFlowServer(t, limit)
	flowSubscriber(t, addr, "flow-stuck", "flow/s") // stays connected, taking nothing
	acked, pubDone := flowPublisher(t, addr, "flow/s", n)
	select {
	case err := <-pubDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the publisher got %d of %d PUBACKs in 20s behind a stalled subscriber", acked.Load(), n)
	}
	v, _ := b.VHost("/")
	q, err := v.Queue(sessionQueuePrefix+"flow-stuck", 0)
	if err != nil {
		t.Fatal(err)
	}
	if l := q.Len(); l < n-100 {
		t.Fatalf("the stalled subscriber's queue holds %d ready messages, want about %d", l, n-10)
	}
}
