package broker

import (
	"testing"
	"time"

	"github.com/parleymq/parley/broker/meta"
)

func TestInboxKeepsOrderAndBatches(t *testing.T) {
	in := newInbox(10)
	done := make(chan struct{})
	for i := range 5 {
		if !in.post(command{outcome: 0, noAck: i%2 == 0, ids: nil, kind: cmdKind(i)}, done) {
			t.Fatal("post refused")
		}
	}
	select {
	case <-in.wake:
	default:
		t.Fatal("no wake-up after the first post")
	}
	batch := in.take()
	if len(batch) != 5 {
		t.Fatalf("batch of %d, want 5", len(batch))
	}
	for i, c := range batch {
		if c.kind != cmdKind(i) {
			t.Fatalf("command %d out of order: %d", i, c.kind)
		}
	}
	in.recycle(batch)
	if got := in.take(); len(got) != 0 {
		t.Fatalf("a second take got %d commands", len(got))
	}
}

// A full inbox blocks the poster until the queue takes a batch; closing it releases posters
// with false and hands back what waited.
func TestInboxBackPressureAndClose(t *testing.T) {
	in := newInbox(2)
	done := make(chan struct{})
	in.post(command{kind: cmdPublish}, done)
	in.post(command{kind: cmdPublish}, done)
	posted := make(chan bool)
	go func() { posted <- in.post(command{kind: cmdSettle}, done) }()
	select {
	case <-posted:
		t.Fatal("post into a full inbox did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	if n := len(in.take()); n != 2 {
		t.Fatalf("took %d, want 2", n)
	}
	select {
	case ok := <-posted:
		if !ok {
			t.Fatal("post refused after room was made")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("poster still blocked after a take")
	}
	in.post(command{kind: cmdPublish}, done) // full again
	go func() { posted <- in.post(command{kind: cmdGet}, done) }()
	time.Sleep(20 * time.Millisecond)
	rest := in.close()
	if len(rest) != 2 || rest[0].kind != cmdSettle || rest[1].kind != cmdPublish {
		t.Fatalf("close returned %+v", rest)
	}
	select {
	case ok := <-posted:
		if ok {
			t.Fatal("post into a closed inbox succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("poster still blocked after close")
	}
	if in.post(command{}, done) {
		t.Fatal("post after close succeeded")
	}
}

// Every publisher confirm is answered even when the queue is deleted with publishes still in its
// inbox: RabbitMQ confirms a message routed to a queue deleted meanwhile.
func TestConfirmsAnsweredWhenQueueDeletedUnderPublishers(t *testing.T) {
	for round := range 20 {
		v := newVHost(t)
		if _, err := v.DeclareQueue(meta.QueueDef{Name: "q"}, false); err != nil {
			t.Fatal(err)
		}
		const n = 2000
		answered := make(chan bool, n)
		go func() {
			for range n {
				v.Publish(msg("", "q", "x"), func(ok bool) { answered <- ok }, nil)
			}
		}()
		go func() {
			time.Sleep(time.Duration(round) * 100 * time.Microsecond)
			_, _ = v.DeleteQueue("q", false, false, 0)
		}()
		for i := range n {
			select {
			case <-answered:
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: %d of %d confirms answered", round, i, n)
			}
		}
	}
}
