package broker

import (
	"testing"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
)

func relaySample(t testing.TB) []byte {
	w := wbuf{}
	w.uint(1<<62 | 5)
	w.uint(3)
	m := persistent("hello")
	m.Properties.Flags |= message.FlagHeaders
	m.Properties.Headers = message.Table{"k": int32(7)}
	if err := appendDelivery(&w, 9, queue.Delivery{ID: 42, Redelivered: true, Expiry: 1234, Msg: m}); err != nil {
		t.Fatal(err)
	}
	w.b = append(w.b, relayCancelled)
	w.uint(9)
	return w.b
}

func TestRelayRoundTrip(t *testing.T) {
	var got []queue.Delivery
	var kinds []byte
	err := decodeRelay(relaySample(t), 3, func(kind byte, local queue.ConsumerID, d queue.Delivery) {
		kinds = append(kinds, kind)
		if local != 9 {
			t.Errorf("local consumer %d", local)
		}
		got = append(got, d)
	})
	if err != nil || len(kinds) != 2 || kinds[0] != relayDeliver || kinds[1] != relayCancelled {
		t.Fatalf("decoded %v, %v", kinds, err)
	}
	d := got[0]
	if d.ID != 3<<epochShift|42 || !d.Redelivered || d.Expiry != 1234 || string(d.Msg.Body) != "hello" || d.Msg.Properties.Headers["k"] != int32(7) {
		t.Fatalf("delivery %+v body %q headers %#v", d, d.Msg.Body, d.Msg.Properties.Headers)
	}
	def := meta.QueueDef{VHost: "v", Name: "q", Durable: true, Group: 77, Args: message.Table{"x-max-length": int64(5)}}
	b, err := encodeHost(def, []uint64{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	back, voters, err := decodeHost(b)
	if err != nil || back.Name != "q" || back.VHost != "v" || back.Group != 77 || back.Args["x-max-length"] != int64(5) || len(voters) != 3 || voters[2] != 3 {
		t.Fatalf("def %+v voters %v, %v", back, voters, err)
	}
}

// FuzzRemoteBodies feeds the decoders of what a peer sends about remote queues (a relay batch,
// a queue declaration) arbitrary bytes: an error or a result, never a panic.
func FuzzRemoteBodies(f *testing.F) {
	f.Add(relaySample(f))
	def, _ := encodeHost(meta.QueueDef{VHost: "/", Name: "q", Durable: true, Group: 1, Args: message.Table{"a": "b"}}, []uint64{1, 2})
	f.Add(def)
	f.Add([]byte{1, 1, relayDeliver, 0x80})
	f.Fuzz(func(t *testing.T, in []byte) {
		_ = decodeRelay(in, 1, func(byte, queue.ConsumerID, queue.Delivery) {})
		_, _, _ = decodeHost(in)
	})
}
