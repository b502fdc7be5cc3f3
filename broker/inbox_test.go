package broker

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
)

func TestInboxKeepsOrderAndBatches(t *testing.T) {
	in := newInbox(10, func() {})
	<-in.wake // the first round's
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
	in := newInbox(2, func() {})
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

// An idle queue parks its goroutine; a post or a kick starts a new one, and only one runs.
func TestInboxParksAndRestarts(t *testing.T) {
	started := 0
	in := newInbox(10, func() { started++ })
	<-in.wake
	if !in.park() {
		t.Fatal("an empty inbox did not park")
	}
	in.post(command{kind: cmdSettle}, make(chan struct{}))
	in.post(command{kind: cmdSettle}, make(chan struct{}))
	if started != 1 {
		t.Fatalf("%d goroutines started for two posts to a parked queue, want 1", started)
	}
	if in.park() {
		t.Fatal("parked with commands waiting")
	}
	<-in.wake
	in.take()
	in.kick()
	if in.park() {
		t.Fatal("parked with a kick pending")
	}
	<-in.wake
	in.take()
	if !in.park() {
		t.Fatal("did not park once the kick was taken")
	}
	in.kick()
	if started != 2 {
		t.Fatalf("a kick to a parked queue started %d goroutines in all, want 2", started)
	}
}

// Queues with nothing to do hold no goroutine, and wake for a publish, a consumer and a TTL.
func TestIdleQueuesParkTheirGoroutines(t *testing.T) {
	v := newVHost(t)
	before := runtime.NumGoroutine()
	for i := range 200 {
		if _, err := v.DeclareQueue(meta.QueueDef{Name: fmt.Sprint("idle", i)}, false); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+20 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines for 200 idle queues (%d before)", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	q, _ := v.Queue("idle7", 0)
	s := newSink()
	if _, err := q.Consume(ConsumeOptions{}, s); err != nil {
		t.Fatal(err)
	}
	v.Publish(msg("", "idle7", "a"), nil, nil)
	if got := s.wait(t, 1); string(got[0].Msg.Body) != "a" {
		t.Fatalf("got %q", got[0].Msg.Body)
	}
	// A message with a TTL expires while the queue would otherwise be idle.
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "ttl", Args: message.Table{"x-message-ttl": int32(30)}}, false); err != nil {
		t.Fatal(err)
	}
	v.Publish(msg("", "ttl", "gone"), nil, nil)
	tq, _ := v.Queue("ttl", 0)
	deadline = time.Now().Add(10 * time.Second)
	for tq.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the message with a 30 ms TTL did not expire on a queue with nothing else to do")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A running queue reuses a large batch's slice for the next batch (a flooded queue grew each
// batch anew when slices above 1024 commands were dropped); a parked one gives it back.
func TestInboxKeepsLargeBatchesWhileRunning(t *testing.T) {
	const n = 3 * keepBatch
	in := newInbox(2*n, func() {})
	done := make(chan struct{})
	fill := func() {
		for range n {
			if !in.post(command{kind: cmdSettle}, done) {
				t.Fatal("post refused")
			}
		}
	}
	fill()
	first := in.take()
	in.recycle(first)
	fill()
	second := in.take() // appended to the spare: no growth from nothing
	in.recycle(second)
	if got := cap(in.cmds); got < n {
		t.Fatalf("the next batch starts with capacity %d, want the recycled %d or more", got, n)
	}
	if !in.park() {
		t.Fatal("park refused with nothing waiting")
	}
	if cap(in.spare) > keepBatch || cap(in.cmds) > keepBatch {
		t.Fatalf("a parked inbox keeps batch slices of capacity %d and %d (keepBatch %d)", cap(in.spare), cap(in.cmds), keepBatch)
	}
}

// A deferred post leaves the queue's goroutine asleep until the poster flushes; a post that
// does not defer, behind it, wakes the goroutine itself (a call must not wait for a wake-up
// another poster owes); a deferred poster that finds the inbox full wakes it before waiting.
func TestInboxDeferredWakeUps(t *testing.T) {
	in := newInbox(3, func() {})
	<-in.wake // the first round's
	done := make(chan struct{})
	woken := func() bool {
		select {
		case <-in.wake:
			return true
		default:
			return false
		}
	}
	var w Wakes
	ok, owe := in.postDeferred(command{kind: cmdPublish}, done, &w)
	if !ok || !owe {
		t.Fatalf("first deferred post: ok %v owe %v, want both", ok, owe)
	}
	if woken() {
		t.Fatal("a deferred post woke the queue's goroutine")
	}
	if _, owe := in.postDeferred(command{kind: cmdPublish}, done, &w); owe {
		t.Fatal("a deferred post behind another owes a second wake-up")
	}
	in.wakeUp()
	if !woken() {
		t.Fatal("wakeUp with commands waiting did not wake the goroutine")
	}
	if !in.post(command{kind: cmdSettle}, done) {
		t.Fatal("post refused")
	}
	if !woken() {
		t.Fatal("a post behind deferred ones did not wake the goroutine")
	}

	// Full: the deferred poster wakes the goroutine, then waits for room.
	posted := make(chan bool)
	go func() {
		ok, _ := in.postDeferred(command{kind: cmdPublish}, done, &w)
		posted <- ok
	}()
	select {
	case <-in.wake:
	case <-time.After(10 * time.Second):
		t.Fatal("a deferred poster waiting for room did not wake the goroutine")
	}
	if got := len(in.take()); got != 3 {
		t.Fatalf("took %d commands, want 3", got)
	}
	select {
	case ok := <-posted:
		if !ok {
			t.Fatal("the post that waited for room was refused")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the post waiting for room did not go through after a take")
	}
	close(done)
}
