package wire

import (
	"bytes"
	"io"
	"testing"
)

// loopReader serves the same octets forever, so a Reader can be benchmarked without
// re-creating it.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.data[l.off:])
		n += c
		l.off = (l.off + c) % len(l.data)
	}
	return n, nil
}

// publishStream is one small published message: method, header and body frames.
func publishStream() []byte {
	p := &Properties{Flags: FlagContentType | FlagDeliveryMode, ContentType: "application/json", DeliveryMode: 2}
	return AppendContent(nil, 1, &BasicPublish{Exchange: "amq.topic", RoutingKey: "sensors.eu.temp"}, p,
		[]byte(`{"t":21.5}`), 131072)
}

func BenchmarkReadFrame(b *testing.B) {
	stream := publishStream()
	r := NewReader(&loopReader{data: stream}, 131072)
	b.SetBytes(int64(len(stream)) / 3)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadFrameLarge(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 128<<10)
	stream := AppendContent(nil, 1, &BasicPublish{}, &Properties{}, body, 131072+8)
	stream = stream[len(stream)-len(body)-8:] // just the one body frame
	r := NewReader(&loopReader{data: stream}, 0)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecoderDecodePublish(b *testing.B) {
	payload := (&BasicPublish{Exchange: "amq.topic", RoutingKey: "sensors.eu.temp"}).Append(nil)
	var d Decoder
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecoderDecodeAck(b *testing.B) {
	payload := (&BasicAck{DeliveryTag: 12345, Multiple: true}).Append(nil)
	var d Decoder
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecoderContentHeader(b *testing.B) {
	frame := AppendHeaderFrame(nil, 1, 60, 10, &Properties{Flags: FlagContentType | FlagDeliveryMode | FlagAppID,
		ContentType: "application/json", DeliveryMode: 2, AppID: "sensor"})
	payload := frame[7 : len(frame)-1]
	var d Decoder
	var h ContentHeader
	b.ReportAllocs()
	for b.Loop() {
		if err := d.DecodeContentHeader(payload, &h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeMethodPublish(b *testing.B) {
	payload := (&BasicPublish{Exchange: "amq.topic", RoutingKey: "sensors.eu.temp"}).Append(nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeMethod(payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendContent(b *testing.B) {
	m := &BasicDeliver{ConsumerTag: "amq.ctag-abc", DeliveryTag: 1, Exchange: "amq.topic", RoutingKey: "sensors.eu.temp"}
	p := &Properties{Flags: FlagContentType | FlagDeliveryMode, ContentType: "application/json", DeliveryMode: 2}
	body := []byte(`{"t":21.5}`)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendContent(buf[:0], 1, m, p, body, 131072)
		m.DeliveryTag++
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendContentWithHeaders(b *testing.B) {
	m := &BasicDeliver{ConsumerTag: "amq.ctag-abc", DeliveryTag: 1, Exchange: "amq.topic", RoutingKey: "sensors.eu.temp"}
	p := &Properties{Flags: FlagHeaders | FlagDeliveryMode, DeliveryMode: 2,
		Headers: Table{"x-first-death-reason": "expired", "count": int64(1), "ok": true}}
	body := []byte(`{"t":21.5}`)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendContent(buf[:0], 1, m, p, body, 131072)
	}
}

// TestHotPathsDoNotAllocate pins the zero-allocation promises of the publish and deliver paths.
func TestHotPathsDoNotAllocate(t *testing.T) {
	stream := publishStream()
	r := NewReader(&loopReader{data: stream}, 131072)
	var d Decoder
	var h ContentHeader
	m := &BasicDeliver{ConsumerTag: "ctag", Exchange: "amq.topic", RoutingKey: "k"}
	p := &Properties{Flags: FlagContentType | FlagHeaders, ContentType: "text/plain", Headers: Table{"a": "b", "c": int32(1)}}
	buf := make([]byte, 0, 4096)
	step := func() {
		for range 3 {
			f, err := r.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			switch f.Type {
			case FrameMethod:
				if _, err := d.Decode(f.Payload); err != nil {
					t.Fatal(err)
				}
			case FrameHeader:
				if err := d.DecodeContentHeader(f.Payload, &h); err != nil {
					t.Fatal(err)
				}
			}
		}
		ack := (&BasicAck{DeliveryTag: 1}).Append(buf[:0])
		if _, err := d.Decode(ack); err != nil {
			t.Fatal(err)
		}
		buf = AppendContent(buf[:0], 1, m, p, []byte("body"), 131072)
		buf = AppendMethodFrame(buf, 1, m)
		buf = AppendHeartbeat(buf)
	}
	step() // warm the intern table
	if n := testing.AllocsPerRun(100, step); n != 0 {
		t.Fatalf("%v allocations per published and delivered message, want 0", n)
	}
	var _ io.Reader = (*loopReader)(nil)
}
