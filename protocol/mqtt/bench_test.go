package mqtt

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/auth"
)

// BenchmarkFanOut is the shape of the mqtt-qos0-1p10c and mqtt-qos1-1p10c bench scenarios
// without the network's noise: one publisher, ten subscribers of its topic, 1 KiB bodies, all
// raw MQTT 3.1.1 clients on loopback that allocate nothing per message. One op is one message
// published and delivered to all ten, so allocs/op and B/op are the server's work for one
// publish and its ten deliveries.
func BenchmarkFanOut(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) { benchFanOut(b, qos, 10) })
	}
}

func benchFanOut(b *testing.B, qos byte, subscribers int) {
	log := zap.NewNop()
	br, err := broker.New(log, broker.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	s := NewServer(DefaultConfig(), br, auth.DefaultStore(), log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	defer func() { s.Close(); br.Close() }()

	dial := func(id string, more ...packets.Packet) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
		if _, err := c.Write(encode(b, 4, append([]packets.Packet{connectPacket(4, id)}, more...)...)); err != nil {
			b.Fatal(err)
		}
		r := bufio.NewReaderSize(c, 64<<10)
		for range 1 + len(more) { // CONNACK, SUBACK
			if typ, _, err := readPacket(r); err != nil || (typ != packets.Connack && typ != packets.Suback) {
				b.Fatalf("%s: setup packet type %d: %v", id, typ, err)
			}
		}
		return c, r
	}

	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	got := make([]int, subscribers)
	errs := make(chan error, subscribers)
	for i := range subscribers {
		c, r := dial(fmt.Sprintf("sub%d", i), packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
			PacketID: 1, Filters: packets.Subscriptions{{Filter: "bench/fan", Qos: qos}}})
		defer c.Close()
		go func() {
			var acks []byte
			n := 0
			for {
				typ, id, err := readPacket(r)
				if err != nil {
					errs <- err
					return
				}
				if typ != packets.Publish {
					continue
				}
				if id != 0 {
					acks = append(acks, packets.Puback<<4, 2, byte(id>>8), byte(id))
				}
				n++
				if r.Buffered() == 0 || n%100 == 0 {
					if len(acks) > 0 {
						if _, err := c.Write(acks); err != nil {
							errs <- err
							return
						}
						acks = acks[:0]
					}
					mu.Lock()
					got[i] = n
					cond.Broadcast()
					mu.Unlock()
				}
			}
		}()
	}
	pub, pr := dial("pub")
	defer pub.Close()
	const batch = 64
	body := make([]byte, 1024)
	var frames []byte
	for j := range batch {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: "bench/fan", Payload: body}
		if qos > 0 {
			pk.PacketID = uint16(j + 1)
		}
		frames = append(frames, encode(b, 4, pk)...)
	}
	waitAll := func(target int) {
		mu.Lock()
		defer mu.Unlock()
		for {
			low := target
			for _, n := range got {
				low = min(low, n)
			}
			if low >= target {
				return
			}
			select {
			case err := <-errs:
				b.Fatalf("subscriber: %v", err)
			default:
			}
			cond.Wait()
		}
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		if _, err := pub.Write(frames); err != nil {
			b.Fatal(err)
		}
		if qos > 0 {
			for range batch { // the window: every PUBACK before the next batch
				if typ, _, err := readPacket(pr); err != nil || typ != packets.Puback {
					b.Fatalf("publisher: packet type %d: %v", typ, err)
				}
			}
		}
		sent += batch
		// Keep the publisher at most four batches ahead of the slowest subscriber.
		waitAll(sent - 4*batch)
	}
	waitAll(sent)
	b.StopTimer()
	b.ReportMetric(float64(sent)/float64(b.N), "msgs/op")
}

// readPacket reads one packet and returns its type and, for a PUBLISH at QoS > 0 or a
// PUBACK, its packet identifier; the rest is discarded.
func readPacket(r *bufio.Reader) (byte, uint16, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	remaining := 0
	for shift := 0; ; shift += 7 {
		c, err := r.ReadByte()
		if err != nil {
			return 0, 0, err
		}
		remaining |= int(c&0x7F) << shift
		if c&0x80 == 0 {
			break
		}
	}
	typ := first >> 4
	var id uint16
	switch {
	case typ == packets.Publish && (first>>1)&3 > 0:
		b, err := r.Peek(2)
		if err != nil {
			return 0, 0, err
		}
		tl := int(b[0])<<8 | int(b[1])
		b, err = r.Peek(2 + tl + 2)
		if err != nil {
			return 0, 0, err
		}
		id = uint16(b[2+tl])<<8 | uint16(b[2+tl+1])
	case typ == packets.Puback && remaining >= 2:
		b, err := r.Peek(2)
		if err != nil {
			return 0, 0, err
		}
		id = uint16(b[0])<<8 | uint16(b[1])
	}
	if _, err := r.Discard(remaining); err != nil {
		return 0, 0, fmt.Errorf("discard: %w", err)
	}
	return typ, id, nil
}
