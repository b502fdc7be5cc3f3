package queue

import (
	"testing"

	"github.com/parleymq/parley/broker/message"
)

// A delivery carries the message's absolute expiry, counted from its first enqueue: the same
// after a requeue and after a recovery, and the lower of x-message-ttl and the expiration
// property. MQTT 5 counts the message expiry interval down from it [MQTT-3.3.2-6].
func TestDeliveryCarriesExpiry(t *testing.T) {
	withTTL := func(ttl string) *message.Message {
		m := &message.Message{Body: []byte("x")}
		if ttl != "" {
			m.Properties.Flags = message.FlagExpiration
			m.Properties.Expiration = ttl
		}
		return m
	}
	cfg := cfgDefault()
	q := New(cfg)
	var out Output
	q.Publish(1000, withTTL("5000"), &out)
	q.Publish(1000, withTTL(""), &out)
	if err := q.AddConsumer(ConsumerSpec{ID: 1}); err != nil {
		t.Fatal(err)
	}
	q.Drain(2000, nil, &out)
	if len(out.Deliveries) != 2 || out.Deliveries[0].Expiry != 6000 || out.Deliveries[1].Expiry != 0 {
		t.Fatalf("deliveries %+v, want expiry 6000 then none", out.Deliveries)
	}
	first := out.Deliveries[0].ID
	out.Reset()
	if err := q.Settle(3000, []DeliveryID{first}, Requeue, &out); err != nil {
		t.Fatal(err)
	}
	q.Drain(3000, nil, &out)
	if len(out.Deliveries) != 1 || out.Deliveries[0].Expiry != 6000 || !out.Deliveries[0].Redelivered {
		t.Fatalf("after requeue %+v, want expiry 6000 still", out.Deliveries)
	}

	cfg.MessageTTL = 2000
	r := New(cfg)
	r.Recover(500, withTTL("5000"), 7)
	r.Recover(500, withTTL("1000"), 8)
	if err := r.AddConsumer(ConsumerSpec{ID: 1}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	r.Drain(1000, nil, &out)
	if len(out.Deliveries) != 2 || out.Deliveries[0].Expiry != 2500 || out.Deliveries[1].Expiry != 1500 {
		t.Fatalf("recovered deliveries %+v, want expiry 2500 (queue TTL) and 1500 (message)", out.Deliveries)
	}
}

// A message whose expiry has passed while it waited is dropped at the head, never delivered,
// also when it comes back from a requeue.
func TestExpiredMessageNeverDelivered(t *testing.T) {
	q := New(cfgDefault())
	var out Output
	m := &message.Message{Body: []byte("x"), Properties: message.Properties{Flags: message.FlagExpiration, Expiration: "1000"}}
	q.Publish(0, m, &out)
	if err := q.AddConsumer(ConsumerSpec{ID: 1}); err != nil {
		t.Fatal(err)
	}
	q.Drain(500, nil, &out)
	if len(out.Deliveries) != 1 {
		t.Fatalf("deliveries %+v", out.Deliveries)
	}
	id := out.Deliveries[0].ID
	out.Reset()
	if err := q.Settle(900, []DeliveryID{id}, Requeue, &out); err != nil {
		t.Fatal(err)
	}
	q.Drain(1000, nil, &out)
	if len(out.Deliveries) != 0 || q.Len() != 0 {
		t.Fatalf("expired message delivered again: %+v, %d ready", out.Deliveries, q.Len())
	}
}
