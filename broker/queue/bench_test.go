package queue

import (
	"testing"

	"github.com/parleymq/parley/broker/message"
)

// BenchmarkPublishDrainAck is the hot path: one message published, delivered to a consumer
// with prefetch, acknowledged, in batches as the driver runs them.
func BenchmarkPublishDrainAck(b *testing.B) {
	for _, bc := range []struct {
		name      string
		batch     int
		consumers int
		cfg       func(*Config)
		refs      bool // PublishRef, as a durable queue: every ack reports a reference
	}{
		{"batch1", 1, 1, nil, false},
		{"batch64", 64, 1, nil, false},
		{"batch64/4consumers", 64, 4, nil, false},
		{"batch64/ttl", 64, 1, func(c *Config) { c.MessageTTL = 60000 }, false},
		{"batch64/priority", 64, 1, func(c *Config) { c.MaxPriority = 10 }, false},
		{"batch64/refs", 64, 1, nil, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := cfgDefault()
			if bc.cfg != nil {
				bc.cfg(&cfg)
			}
			q := New(cfg)
			for i := 0; i < bc.consumers; i++ {
				if err := q.AddConsumer(ConsumerSpec{ID: ConsumerID(i + 1), Prefetch: 1000}); err != nil {
					b.Fatal(err)
				}
			}
			m := &message.Message{Body: make([]byte, 64)}
			var out Output
			out.Removed = make([]uint64, 0, bc.batch)
			ids := make([]DeliveryID, 0, bc.batch)
			allow := func(ConsumerID) bool { return true }
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; n += bc.batch {
				for i := 0; i < bc.batch; i++ {
					if bc.refs {
						q.PublishRef(int64(n), m, uint64(n+i+1), &out)
					} else {
						q.Publish(int64(n), m, &out)
					}
				}
				q.Drain(int64(n), allow, &out)
				ids = ids[:0]
				for _, d := range out.Deliveries {
					ids = append(ids, d.ID)
				}
				out.Reset()
				if err := q.Settle(int64(n), ids, Ack, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAckOutOfOrder acknowledges a window of deliveries in reverse order.
func BenchmarkAckOutOfOrder(b *testing.B) {
	q := New(cfgDefault())
	if err := q.AddConsumer(ConsumerSpec{ID: 1}); err != nil {
		b.Fatal(err)
	}
	m := &message.Message{Body: make([]byte, 64)}
	var out Output
	const window = 256
	ids := make([]DeliveryID, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += window {
		for i := 0; i < window; i++ {
			q.Publish(0, m, &out)
		}
		q.Drain(0, nil, &out)
		for i := len(out.Deliveries) - 1; i >= 0; i-- {
			ids[0] = out.Deliveries[i].ID
			if err := q.Settle(0, ids, Ack, &out); err != nil {
				b.Fatal(err)
			}
		}
		out.Reset()
	}
}

// BenchmarkRequeue requeues a window and delivers it again.
func BenchmarkRequeue(b *testing.B) {
	q := New(cfgDefault())
	if err := q.AddConsumer(ConsumerSpec{ID: 1, Prefetch: 256}); err != nil {
		b.Fatal(err)
	}
	m := &message.Message{Body: make([]byte, 64)}
	var out Output
	for i := 0; i < 1024; i++ {
		q.Publish(0, m, &out)
	}
	ids := make([]DeliveryID, 0, 256)
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += 256 {
		q.Drain(0, nil, &out)
		ids = ids[:0]
		for _, d := range out.Deliveries {
			ids = append(ids, d.ID)
		}
		out.Reset()
		if err := q.Settle(0, ids, Requeue, &out); err != nil {
			b.Fatal(err)
		}
	}
}
