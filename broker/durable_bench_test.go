package broker

import (
	"testing"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
)

// BenchmarkPublishPersistentConfirm is the durable publish path without a network: persistent
// 1 KiB messages into a durable queue on real storage (one node, fsync), a confirm window of
// 256 as a publisher with confirms keeps. Each confirm comes after the message's log entry is
// committed (fsynced) and applied. allocs/op and B/op are the broker's, raft's and Pebble's
// work per message; the benchmark's own is the Message (one allocation, the body shared).
// entries/msg is the raft entries the queue's log took per message (an inbox batch of
// persistent publishes is one entry): a load-independent figure of how well batching works,
// though it depends on how many publishes wait at each wake-up of the queue.
func BenchmarkPublishPersistentConfirm(b *testing.B) {
	n := openNode(b, b.TempDir())
	defer n.close()
	v, _ := n.b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "bench", Durable: true}, false); err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 1024)
	const window = 256
	confirmed := make(chan bool, window)
	var s PublishScratch
	q, _ := v.Queue("bench", 0)
	startIndex := q.group.Applied()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	out := 0
	for i := range b.N {
		if out == window {
			if !<-confirmed {
				b.Fatal("nack")
			}
			out--
		}
		m := &message.Message{RoutingKey: "bench", Body: body}
		m.Properties.Flags = message.FlagDeliveryMode
		m.Properties.DeliveryMode = 2
		if _, err := v.Publish(m, func(ok bool) { confirmed <- ok }, &s); err != nil {
			b.Fatalf("publish %d: %v", i, err)
		}
		out++
	}
	for ; out > 0; out-- {
		if !<-confirmed {
			b.Fatal("nack")
		}
	}
	b.ReportMetric(float64(q.group.Applied()-startIndex)/float64(b.N), "entries/msg")
}
