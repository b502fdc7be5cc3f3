package queue

import (
	"testing"

	"github.com/parleymq/parley/broker/message"
)

func sized(n int) *message.Message { return &message.Message{Body: make([]byte, n)} }

// A deep queue keeps the bodies of its head and stubs for the rest; the driver loads a stub's
// body by its reference. Nothing else about the queue changes: order, byte counts, limits.
func TestBodyWindowKeepsHeadBodies(t *testing.T) {
	q := New(cfgDefault())
	q.SetBodyWindow(25)
	var out Output
	for i := 1; i <= 5; i++ {
		q.PublishRef(0, sized(10), uint64(i), &out)
	}
	q.Publish(0, sized(10), &out) // no reference: always kept
	if q.Bytes() != 60 || q.Len() != 6 {
		t.Fatalf("bytes %d len %d, want 60 6", q.Bytes(), q.Len())
	}
	if err := q.AddConsumer(ConsumerSpec{ID: 1}); err != nil {
		t.Fatal(err)
	}
	q.Drain(0, nil, &out)
	if len(out.Deliveries) != 6 {
		t.Fatalf("%d deliveries, want 6", len(out.Deliveries))
	}
	// 0, 10 and 20 bytes were ready before the first three: kept; 30 and 40: stubs.
	for i, d := range out.Deliveries {
		stub := i == 3 || i == 4
		if (d.Msg == nil) != stub {
			t.Errorf("delivery %d: msg %v, want stub %v", i, d.Msg, stub)
		}
		if i < 5 && d.Ref != uint64(i+1) {
			t.Errorf("delivery %d: ref %d, want %d", i, d.Ref, i+1)
		}
		if i == 5 && (d.Ref != 0 || d.Msg == nil) {
			t.Errorf("the message without a reference came back as %+v", d)
		}
	}
	// A requeued stub stays a stub and keeps its reference.
	ids := []DeliveryID{out.Deliveries[3].ID}
	out.Reset()
	q.RemoveConsumer(1)
	if err := q.Settle(0, ids, Requeue, &out); err != nil {
		t.Fatal(err)
	}
	d, ok := q.Get(0, true, &out)
	if !ok || d.Msg != nil || d.Ref != 4 || !d.Redelivered {
		t.Fatalf("get after requeue: %+v %v", d, ok)
	}
	if len(out.Removed) != 1 || out.Removed[0] != 4 {
		t.Fatalf("removed %v, want [4]", out.Removed)
	}
}

func TestStubLimitsAndDeadLetters(t *testing.T) {
	cfg := cfgDefault()
	cfg.MaxLengthBytes = 30
	cfg.HasDeadLetterExchange = true
	q := New(cfg)
	q.SetBodyWindow(0)
	var out Output
	for i := 1; i <= 4; i++ {
		q.PublishRef(0, sized(10), uint64(i), &out)
	}
	// drop-head: the fourth message pushed the first out, as a stub dead letter.
	if q.Bytes() != 30 || len(out.DeadLetters) != 1 {
		t.Fatalf("bytes %d, dead letters %d", q.Bytes(), len(out.DeadLetters))
	}
	if dl := out.DeadLetters[0]; dl.Msg != nil || dl.Ref != 1 || dl.Reason != MaxLen {
		t.Fatalf("dead letter %+v", dl)
	}
}

func TestRecoverStubKeepsTTLAndPriority(t *testing.T) {
	cfg := cfgDefault()
	cfg.MaxPriority = 5
	cfg.MessageTTL = 1000
	q := New(cfg)
	q.RecoverStub(100, Stub{Size: 7, TTL: -1}, 1)
	q.RecoverStub(100, Stub{Size: 3, Priority: 9, HasPrio: true, TTL: 50}, 2)
	if q.Bytes() != 10 {
		t.Fatalf("bytes %d, want 10", q.Bytes())
	}
	if at, ok := q.NextExpiry(); !ok || at != 150 {
		t.Fatalf("next expiry %d %v, want 150", at, ok)
	}
	d, _ := q.Get(0, true, &Output{})
	if d.Ref != 2 || d.Msg != nil || !d.Redelivered {
		t.Fatalf("the high-priority stub should come first: %+v", d)
	}
	if s := StubOf(&message.Message{Body: []byte("abc"), Properties: message.Properties{
		Flags: message.FlagPriority | message.FlagExpiration, Priority: 3, Expiration: "25"}}); s != (Stub{Size: 3, Priority: 3, HasPrio: true, TTL: 25}) {
		t.Fatalf("StubOf: %+v", s)
	}
}

func TestSnapshotKeepsStubs(t *testing.T) {
	q := New(cfgDefault())
	q.SetBodyWindow(5)
	var out Output
	for i := 1; i <= 3; i++ {
		q.PublishRef(0, sized(5), uint64(i), &out)
	}
	snap, err := q.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Restore(cfgDefault(), snap)
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes() != 15 || r.Len() != 3 {
		t.Fatalf("restored bytes %d len %d", r.Bytes(), r.Len())
	}
	for i := 1; i <= 3; i++ {
		d, _ := r.Get(0, true, &out)
		if d.Ref != uint64(i) || (d.Msg == nil) != (i > 1) {
			t.Fatalf("restored delivery %d: %+v", i, d)
		}
	}
}
