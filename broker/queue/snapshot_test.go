package queue

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleymq/parley/broker/message"
)

// driver applies the same pseudo-random commands to a queue and renders their effects, so
// two queues can be compared command by command.
type driver struct {
	q    *Queue
	out  Output
	ids  []DeliveryID // outstanding, as far as the driver knows
	next ConsumerID
}

func (d *driver) step(rng *rand.Rand, now int64) string {
	var b strings.Builder
	switch op := rng.IntN(10); op {
	case 0, 1, 2:
		m := &message.Message{RoutingKey: "k", Body: []byte(strconv.Itoa(rng.IntN(1000)))}
		m.Properties.Flags = message.FlagPriority | message.FlagHeaders
		m.Properties.Priority = uint8(rng.IntN(4))
		m.Properties.Headers = message.Table{"n": int32(rng.IntN(9)), "s": "x", "a": []any{int64(1), "y"}}
		if rng.IntN(3) == 0 {
			m.Properties.Flags |= message.FlagExpiration
			m.Properties.Expiration = strconv.Itoa(rng.IntN(100))
		}
		fmt.Fprint(&b, "pub ", d.q.Publish(now, m, &d.out))
	case 3:
		d.next++
		err := d.q.AddConsumer(ConsumerSpec{ID: d.next, Prefetch: uint32(rng.IntN(3)), NoAck: rng.IntN(4) == 0, Priority: int32(rng.IntN(2))})
		fmt.Fprint(&b, "consume ", err)
	case 4:
		d.q.RemoveConsumer(ConsumerID(rng.IntN(int(d.next) + 1)))
	case 5, 6:
		d.q.Drain(now, nil, &d.out)
	case 7:
		if len(d.ids) > 0 {
			i := rng.IntN(len(d.ids))
			err := d.q.Settle(now, d.ids[i:i+1], Outcome(rng.IntN(3)), &d.out)
			d.ids = append(d.ids[:i], d.ids[i+1:]...)
			fmt.Fprint(&b, "settle ", err)
		}
	case 8:
		del, ok := d.q.Get(now, rng.IntN(2) == 0, &d.out)
		fmt.Fprint(&b, "get ", ok, del.ID, del.Redelivered)
		if ok && d.q.Unacked() > 0 {
			d.ids = append(d.ids, del.ID)
		}
	case 9:
		if rng.IntN(10) == 0 {
			fmt.Fprint(&b, "purge ", d.q.Purge(&d.out))
		}
	}
	for _, del := range d.out.Deliveries {
		fmt.Fprintf(&b, " %d:%d:%s:%v", del.Consumer, del.ID, bodyOrRef(del.Msg, del.Ref), del.Redelivered)
		d.ids = append(d.ids, del.ID)
	}
	for _, dl := range d.out.DeadLetters {
		fmt.Fprintf(&b, " dl:%s:%s", bodyOrRef(dl.Msg, dl.Ref), dl.Reason)
	}
	d.out.Reset()
	fmt.Fprintf(&b, " | %d %d %d %d", d.q.Len(), d.q.Bytes(), d.q.Unacked(), d.q.ConsumerCount())
	return b.String()
}

// bodyOrRef renders a delivered message: its body, or the reference of a stub.
func bodyOrRef(m *message.Message, ref uint64) string {
	if m == nil {
		return fmt.Sprintf("ref#%d", ref)
	}
	return string(m.Body)
}

// TestSnapshotRestore: a restored queue snapshots to the same bytes and then behaves
// exactly like the original under the same commands.
func TestSnapshotRestore(t *testing.T) {
	for seed := uint64(0); seed < 100; seed++ {
		cfg := cfgDefault()
		cfg.MaxPriority = uint8(seed % 3)
		cfg.HasDeadLetterExchange = true
		if seed%4 == 0 {
			cfg.MessageTTL = 50
		}
		rng := rand.New(rand.NewPCG(seed, 3))
		a := &driver{q: New(cfg)}
		now := int64(1000)
		for i := 0; i < 200; i++ {
			a.step(rng, now)
			now += int64(rng.IntN(5))
		}
		snap, err := a.q.Snapshot()
		if err != nil {
			t.Fatalf("seed %d: Snapshot: %v", seed, err)
		}
		rq, err := Restore(cfg, snap)
		if err != nil {
			t.Fatalf("seed %d: Restore: %v", seed, err)
		}
		again, err := rq.Snapshot()
		if err != nil || !bytes.Equal(snap, again) {
			t.Fatalf("seed %d: snapshot of the restored queue differs (err %v)", seed, err)
		}
		b := &driver{q: rq, ids: append([]DeliveryID(nil), a.ids...), next: a.next}
		ra := rand.New(rand.NewPCG(seed, 4))
		rb := rand.New(rand.NewPCG(seed, 4))
		for i := 0; i < 200; i++ {
			ga, gb := a.step(ra, now), b.step(rb, now)
			if ga != gb {
				t.Fatalf("seed %d step %d after restore:\noriginal: %s\nrestored: %s", seed, i, ga, gb)
			}
			now += int64(ra.IntN(5))
			rb.IntN(5)
		}
	}
}

func TestSnapshotValues(t *testing.T) {
	q := New(cfgDefault())
	headers := message.Table{
		"bool": true, "i8": int8(-3), "u8": uint8(3), "i16": int16(-300), "u16": uint16(300),
		"i32": int32(-70000), "u32": uint32(70000), "i64": int64(-1 << 40), "f32": float32(1.5),
		"f64": 2.25, "str": "s", "bin": []byte{0, 1}, "arr": []any{"a", int64(1), nil},
		"time": time.Unix(1700000000, 0).UTC(), "tbl": message.Table{"x": "y"}, "void": nil,
	}
	m := &message.Message{Exchange: "e", RoutingKey: "k", Body: []byte("body"), Properties: message.Properties{
		Flags: 0xfff8, ContentType: "ct", ContentEncoding: "ce", Headers: headers, DeliveryMode: 2, Priority: 4,
		CorrelationID: "c", ReplyTo: "r", Expiration: "100000", MessageID: "m", Timestamp: 99, Type: "t", UserID: "u", AppID: "a",
	}}
	var out Output
	q.Publish(0, m, &out)
	snap, err := q.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	rq, err := Restore(cfgDefault(), snap)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := rq.Get(0, true, &out)
	if !ok {
		t.Fatal("restored queue is empty")
	}
	if fmt.Sprintf("%#v", *d.Msg) != fmt.Sprintf("%#v", *m) {
		t.Fatalf("message changed:\n got %#v\nwant %#v", *d.Msg, *m)
	}

	type decimal struct{ Scale uint8 }
	q.Publish(0, &message.Message{Properties: message.Properties{Flags: message.FlagHeaders, Headers: message.Table{"d": decimal{}}}}, &out)
	if _, err := q.Snapshot(); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("unknown header type: err = %v", err)
	}
}

func TestRestoreCorrupt(t *testing.T) {
	q := New(cfgDefault())
	var out Output
	for i := 0; i < 5; i++ {
		q.Publish(0, &message.Message{Body: []byte("x"), Properties: message.Properties{Flags: message.FlagHeaders, Headers: message.Table{"a": []any{message.Table{"b": "c"}}}}}, &out)
	}
	q.Get(0, false, &out)
	snap, err := q.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(snap); i++ {
		if _, err := Restore(cfgDefault(), snap[:i]); !errors.Is(err, ErrSnapshot) {
			t.Fatalf("truncated at %d: err = %v", i, err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < 2000; i++ {
		c := bytes.Clone(snap)
		c[4+rng.IntN(len(c)-4)] = byte(rng.Uint32())
		_, _ = Restore(cfgDefault(), c) // must not panic
	}
}

// FuzzRestore: no input makes Restore panic, and a queue it accepts survives commands.
func FuzzRestore(f *testing.F) {
	q := New(cfgDefault())
	var out Output
	for i := 0; i < 3; i++ {
		q.Publish(0, &message.Message{Body: []byte("x"), Properties: message.Properties{Flags: message.FlagHeaders | message.FlagPriority, Headers: message.Table{"a": []any{message.Table{"b": "c"}}}}}, &out)
	}
	_ = q.AddConsumer(ConsumerSpec{ID: 7, Prefetch: 1, Priority: 2})
	_ = q.AddConsumer(ConsumerSpec{ID: 8})
	q.Drain(0, nil, &out)
	q.RemoveConsumer(7)
	q.Get(0, false, &out)
	snap, _ := q.Snapshot()
	f.Add(snap)
	empty, _ := New(cfgDefault()).Snapshot()
	f.Add(empty)
	deep := New(cfgDefault())
	deep.SetBodyWindow(1)
	for i := uint64(1); i <= 3; i++ {
		deep.PublishRef(0, &message.Message{Body: []byte("yz")}, i, &out)
	}
	deepSnap, _ := deep.Snapshot()
	f.Add(deepSnap)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := cfgDefault()
		cfg.MaxPriority = 2
		rq, err := Restore(cfg, data)
		if err != nil {
			return
		}
		var out Output
		rng := rand.New(rand.NewPCG(1, 2))
		d := &driver{q: rq, next: 100}
		for i := 0; i < 50; i++ {
			d.step(rng, int64(i))
		}
		for len(rq.consumers) > 0 {
			rq.RemoveConsumer(rq.consumers[0].spec.ID)
		}
		rq.Drain(100, nil, &out)
	})
}
