package broker

import (
	"context"
	"testing"
	"time"

	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
)

// A publish is found in the logs of the durable queues it went to after the marks taken before
// it, also once consumed and after a restart; a queue it did not reach reports it missing
// (complete), and PublishToQueue completes the publish there only.
func TestFindPublishedAfterMarks(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir)
	v, _ := n.b.VHost("/")
	for _, q := range []string{"a", "b"} {
		if _, err := v.DeclareQueue(meta.QueueDef{Name: q, Durable: true}, false); err != nil {
			t.Fatal(err)
		}
		if err := v.Bind(meta.BindingDef{Source: "amq.topic", Dest: exchange.Dest{Name: q}, Key: "t.#"}, 0); err != nil {
			t.Fatal(err)
		}
	}
	m := persistent("once")
	m.Exchange, m.RoutingKey = "amq.topic", "t.x"
	m.Properties.Flags |= message.FlagHeaders
	m.Properties.Headers = message.Table{"token": "tok-1"}
	marks := v.LogMarks(m)
	if len(marks) != 2 {
		t.Fatalf("marks %v, want both durable queues", marks)
	}
	// Only queue a gets it (as if the broker died before b's entry).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.PublishToQueue(ctx, "a", m); err != nil {
		t.Fatal(err)
	}
	qa, _ := v.Queue("a", 0)
	if d, _, ok := qa.Get(false); !ok {
		t.Fatal("a: nothing to get")
	} else {
		qa.Settle([]queue.DeliveryID{d.ID}, queue.Ack) // consumed: still found in the log
	}
	qa.Get(true)
	n.close()

	n = openNode(t, dir)
	defer n.close()
	v, _ = n.b.VHost("/")
	match := func(m *message.Message) bool { return m.Properties.Headers["token"] == "tok-1" }
	var inA *message.Message
	for _, mk := range marks {
		found, complete, err := v.FindPublished(mk, match)
		switch mk.Queue {
		case "a":
			if err != nil || !complete || found == nil || string(found.Body) != "once" {
				t.Fatalf("a: found %v complete %v err %v", found, complete, err)
			}
			inA = found
		case "b":
			if err != nil || !complete || found != nil {
				t.Fatalf("b: found %v complete %v err %v, want certainly missing", found, complete, err)
			}
		}
	}
	if err := v.PublishToQueue(ctx, "b", inA); err != nil {
		t.Fatal(err)
	}
	if _, complete, _ := v.FindPublished(LogMark{Queue: "gone", Index: 1}, match); complete {
		t.Fatal("a queue that does not exist gave a certain answer")
	}
	qb, _ := v.Queue("b", 0)
	if d, _, ok := qb.Get(true); !ok || string(d.Msg.Body) != "once" {
		t.Fatalf("b after completing: %v %q", ok, d.Msg.Body)
	}
	qa, _ = v.Queue("a", 0)
	if _, _, ok := qa.Get(true); ok {
		t.Fatal("PublishToQueue(b) reached a too")
	}
}
