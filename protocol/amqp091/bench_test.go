package amqp091

import (
	"testing"
	"time"

	"github.com/parleymq/parley/protocol/amqp091/wire"
)

// BenchmarkPublishConsume drives the server with pre-encoded frames: publish to a queue a
// no-ack consumer on the same connection drains. allocs/op counts the server's work per
// message (the raw client allocates nothing per message). The heartbeat variant negotiates
// heartbeats, as every real client does (amqp091-go asks for 10 s, pika 60 s), so the reader's
// liveness bookkeeping is on the path.
func BenchmarkPublishConsume(b *testing.B) {
	b.Run("heartbeat=0", func(b *testing.B) { benchPublishConsume(b, 0) })
	b.Run("heartbeat=60", func(b *testing.B) { benchPublishConsume(b, 60) })
}

func benchPublishConsume(b *testing.B, heartbeat uint16) {
	url, _ := testServer(b)
	c := rawDial(b, url)
	_ = c.nc.SetDeadline(time.Now().Add(10 * time.Minute)) // rawDial's 15 s is for tests
	c.openHeartbeat("guest", heartbeat)
	c.method(1, &wire.QueueDeclare{Queue: "bench", AutoDelete: true})
	c.next()
	c.method(1, &wire.BasicConsume{Queue: "bench", ConsumerTag: "c", NoAck: true})
	c.next()
	const batch = 100
	var frames []byte
	for i := 0; i < batch; i++ {
		frames = wire.AppendContent(frames, 1, &wire.BasicPublish{RoutingKey: "bench"}, &wire.Properties{}, make([]byte, 64), 131072)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		if _, err := c.nc.Write(frames); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < batch; {
			f, err := c.r.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			if f.Type == wire.FrameBody {
				got++
			}
		}
	}
}
