package queue

import (
	"testing"

	"github.com/parleymq/parley/broker/message"
)

// Forget drops ready messages by reference, in every priority level, with their counts, and
// leaves delivered ones and messages without a reference alone; it has no effects.
func TestForgetDropsReadyByRef(t *testing.T) {
	cfg := cfgDefault()
	cfg.MaxPriority = 3
	q := New(cfg)
	var out Output
	prio := func(p uint8, ttl string) *message.Message {
		m := sized(10)
		m.Properties.Flags |= message.FlagPriority
		m.Properties.Priority = p
		if ttl != "" {
			m.Properties.Flags |= message.FlagExpiration
			m.Properties.Expiration = ttl
		}
		return m
	}
	for i := uint64(1); i <= 6; i++ {
		ttl := ""
		if i == 5 {
			ttl = "60000"
		}
		q.PublishRef(0, prio(uint8(i%2*3), ttl), i, &out) // odd refs at priority 3, even at 0
	}
	q.Publish(0, sized(10), &out) // no reference
	d, ok := q.Get(0, false, &out)
	if !ok || d.Ref != 1 {
		t.Fatalf("get: %+v %v, want ref 1 (highest priority first)", d, ok)
	}
	if n := q.Forget(map[uint64]bool{1: true, 3: true, 5: true, 4: true, 99: true}); n != 3 {
		t.Fatalf("forgot %d, want 3 (1 is delivered, 99 unknown)", n)
	}
	if q.Len() != 3 || q.Bytes() != 30 || q.Unacked() != 1 {
		t.Fatalf("len %d bytes %d unacked %d, want 3 30 1", q.Len(), q.Bytes(), q.Unacked())
	}
	if _, ok := q.NextExpiry(); ok {
		t.Fatal("the forgotten message's TTL is still counted")
	}
	if len(out.Removed) != 0 || len(out.DeadLetters) != 0 || len(out.Deliveries) != 0 {
		t.Fatalf("Forget had effects: %+v", out)
	}
	var got []uint64
	for {
		d, ok := q.Get(0, true, &out)
		if !ok {
			break
		}
		got = append(got, d.Ref)
	}
	if len(got) != 3 || got[0] != 2 || got[1] != 6 || got[2] != 0 {
		t.Fatalf("left %v, want [2 6 0] in order", got)
	}
	// The delivered one settles as before.
	if err := q.Settle(0, []DeliveryID{d.ID}, Ack, &out); err != nil {
		t.Fatal(err)
	}
}
