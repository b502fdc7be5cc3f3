package broker

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
)

// sink is a Consumer that records what it is given, as an adapter would.
type sink struct {
	mu        sync.Mutex
	got       []queue.Delivery
	cancelled bool
	blocked   bool
	notify    chan struct{}
}

func newSink() *sink { return &sink{notify: make(chan struct{}, 1024)} }

func (s *sink) Deliver(_ *Queue, d queue.Delivery) {
	s.mu.Lock()
	s.got = append(s.got, d)
	s.mu.Unlock()
	s.notify <- struct{}{}
}

func (s *sink) Allow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.blocked
}

func (s *sink) Cancelled(*Queue) {
	s.mu.Lock()
	s.cancelled = true
	s.mu.Unlock()
	s.notify <- struct{}{}
}

// wait blocks until the sink has n deliveries, failing the test after a bound.
func (s *sink) wait(t *testing.T, n int) []queue.Delivery {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		if len(s.got) >= n {
			out := append([]queue.Delivery(nil), s.got...)
			s.mu.Unlock()
			return out
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-deadline:
			t.Fatalf("waited for %d deliveries, have %d", n, len(s.got))
		}
	}
}

func newVHost(t *testing.T) *VHost {
	t.Helper()
	b, err := New(zap.NewNop(), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	v, ok := b.VHost("/")
	if !ok {
		t.Fatal("no default vhost")
	}
	return v
}

func msg(ex, rk, body string) *message.Message {
	return &message.Message{Exchange: ex, RoutingKey: rk, Body: []byte(body)}
}

func TestPublishConsumeAck(t *testing.T) {
	v := newVHost(t)
	st, err := v.DeclareQueue(meta.QueueDef{Name: "q"}, false)
	if err != nil || st.Name != "q" {
		t.Fatalf("declare: %v %+v", err, st)
	}
	for i := 0; i < 3; i++ {
		routed, err := v.Publish(msg("", "q", string(rune('a'+i))), nil, nil)
		if err != nil || !routed {
			t.Fatalf("publish: routed=%v err=%v", routed, err)
		}
	}
	q, err := v.Queue("q", 0)
	if err != nil {
		t.Fatal(err)
	}
	s := newSink()
	if _, err := q.Consume(ConsumeOptions{Prefetch: 2}, s); err != nil {
		t.Fatal(err)
	}
	got := s.wait(t, 2)
	if string(got[0].Msg.Body) != "a" || string(got[1].Msg.Body) != "b" {
		t.Fatalf("order: %q %q", got[0].Msg.Body, got[1].Msg.Body)
	}
	// Prefetch 2: the third waits for an ack.
	q.Settle([]queue.DeliveryID{got[0].ID}, queue.Ack)
	got = s.wait(t, 3)
	if string(got[2].Msg.Body) != "c" {
		t.Fatalf("third: %q", got[2].Msg.Body)
	}
}

func TestConfirmAndUnroutable(t *testing.T) {
	v := newVHost(t)
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "c1"}, false); err != nil {
		t.Fatal(err)
	}
	res := make(chan bool, 2)
	routed, _ := v.Publish(msg("", "c1", "x"), func(ok bool) { res <- ok }, nil)
	if !routed || !<-res {
		t.Fatal("routed message not confirmed")
	}
	routed, _ = v.Publish(msg("", "nowhere", "x"), func(ok bool) { res <- ok }, nil)
	if routed || !<-res {
		t.Fatal("unroutable message must be reported unrouted and still confirmed")
	}
}

func TestRejectPublishOverflowNacks(t *testing.T) {
	v := newVHost(t)
	args := message.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"}
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "full", Args: args}, false); err != nil {
		t.Fatal(err)
	}
	res := make(chan bool, 2)
	v.Publish(msg("", "full", "1"), func(ok bool) { res <- ok }, nil)
	v.Publish(msg("", "full", "2"), func(ok bool) { res <- ok }, nil)
	if a, b := <-res, <-res; !a || b {
		t.Fatalf("confirms = %v, %v; want true, false", a, b)
	}
}

func TestTopicFanOutSharesBody(t *testing.T) {
	v := newVHost(t)
	for _, n := range []string{"t1", "t2"} {
		if _, err := v.DeclareQueue(meta.QueueDef{Name: n}, false); err != nil {
			t.Fatal(err)
		}
	}
	bind := func(q, key string) {
		if err := v.Bind(meta.BindingDef{Source: "amq.topic", Dest: exchange.Dest{Name: q}, Key: key}, 0); err != nil {
			t.Fatal(err)
		}
	}
	bind("t1", "a.*")
	bind("t2", "a.#")
	m := msg("amq.topic", "a.b", "shared")
	if routed, _ := v.Publish(m, nil, nil); !routed {
		t.Fatal("not routed")
	}
	for _, n := range []string{"t1", "t2"} {
		q, _ := v.Queue(n, 0)
		d, _, ok := q.Get(true)
		if !ok || d.Msg != m {
			t.Fatalf("%s: got %+v ok=%v; want the same *Message, not a copy", n, d, ok)
		}
	}
}

func TestExclusiveQueueBelongsToItsConnection(t *testing.T) {
	v := newVHost(t)
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "ex", Exclusive: true, Owner: 7}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Queue("ex", 8); err == nil {
		t.Fatal("another connection reached an exclusive queue")
	} else if e, ok := err.(*meta.Error); !ok || e.Code != meta.ResourceLocked {
		t.Fatalf("got %v, want 405", err)
	}
	v.ConnectionClosed(7)
	if _, err := v.Queue("ex", 7); err == nil {
		t.Fatal("exclusive queue outlived its connection")
	}
}

func TestDeleteQueueCancelsConsumers(t *testing.T) {
	v := newVHost(t)
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "d"}, false); err != nil {
		t.Fatal(err)
	}
	q, _ := v.Queue("d", 0)
	s := newSink()
	if _, err := q.Consume(ConsumeOptions{}, s); err != nil {
		t.Fatal(err)
	}
	if _, err := v.DeleteQueue("d", true, false, 0); err == nil {
		t.Fatal("if-unused delete of a queue with a consumer succeeded")
	}
	if _, err := v.DeleteQueue("d", false, false, 0); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cancelled {
		t.Fatal("consumer not told its queue was deleted")
	}
}

func TestAutoDeleteAfterLastConsumer(t *testing.T) {
	v := newVHost(t)
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "ad", AutoDelete: true}, false); err != nil {
		t.Fatal(err)
	}
	q, _ := v.Queue("ad", 0)
	id, err := q.Consume(ConsumeOptions{}, newSink())
	if err != nil {
		t.Fatal(err)
	}
	q.Cancel(id)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := v.Queue("ad", 0); err != nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("auto-delete queue survived its last consumer")
}

func TestDeadLetterOnReject(t *testing.T) {
	v := newVHost(t)
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "dead"}, false); err != nil {
		t.Fatal(err)
	}
	args := message.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "live", Args: args}, false); err != nil {
		t.Fatal(err)
	}
	v.Publish(msg("", "live", "bye"), nil, nil)
	live, _ := v.Queue("live", 0)
	d, _, ok := live.Get(false)
	if !ok {
		t.Fatal("nothing to get")
	}
	live.Settle([]queue.DeliveryID{d.ID}, queue.Discard)
	dead, _ := v.Queue("dead", 0)
	s := newSink()
	if _, err := dead.Consume(ConsumeOptions{NoAck: true}, s); err != nil {
		t.Fatal(err)
	}
	got := s.wait(t, 1)
	if string(got[0].Msg.Body) != "bye" {
		t.Fatalf("dead-lettered body %q", got[0].Msg.Body)
	}
	if _, ok := got[0].Msg.Properties.Headers["x-death"]; !ok {
		t.Fatalf("no x-death header: %v", got[0].Msg.Properties.Headers)
	}
}

func TestDirectReplyTo(t *testing.T) {
	v := newVHost(t)
	s := newSink()
	addr, unregister := v.RegisterReplyTo(s)
	defer unregister()
	if routed, _ := v.Publish(msg("", addr, "pong"), nil, nil); !routed {
		t.Fatal("reply not routed")
	}
	if got := s.wait(t, 1); string(got[0].Msg.Body) != "pong" {
		t.Fatalf("reply body %q", got[0].Msg.Body)
	}
	if routed, _ := v.Publish(msg("", DirectReplyTo+".nobody", "x"), nil, nil); routed {
		t.Fatal("reply to an unknown address reported routed")
	}
}

func TestMessageTTLExpires(t *testing.T) {
	v := newVHost(t)
	args := message.Table{"x-message-ttl": int32(300)}
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "ttl", Args: args}, false); err != nil {
		t.Fatal(err)
	}
	v.Publish(msg("", "ttl", "gone"), nil, nil)
	q, _ := v.Queue("ttl", 0)
	deadline := time.Now().Add(10 * time.Second)
	waitLen := func(n int) {
		for q.Len() != n {
			if time.Now().After(deadline) {
				t.Fatalf("queue length stayed %d, want %d", q.Len(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitLen(1)
	// The queue's own timer must expire the message: nobody touches the queue meanwhile.
	waitLen(0)
	if _, _, ok := q.Get(true); ok {
		t.Fatal("expired message still delivered")
	}
}
