package wire

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

func TestReadFrame(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 200<<10) // larger than the bufio buffer
	tests := []struct {
		name     string
		in       []byte
		frameMax uint32
		want     []Frame
		err      error
	}{
		{"heartbeat", AppendHeartbeat(nil), 0, []Frame{{Type: FrameHeartbeat, Payload: []byte{}}}, io.EOF},
		{"method", AppendMethodFrame(nil, 5, &BasicAck{DeliveryTag: 1}), 4096,
			[]Frame{{Type: FrameMethod, Channel: 5, Payload: (&BasicAck{DeliveryTag: 1}).Append(nil)}}, io.EOF},
		{"body bigger than the buffer", b(FrameBody, 0, 1, appendLong(nil, uint32(len(big))), big, FrameEnd), 0,
			[]Frame{{Type: FrameBody, Channel: 1, Payload: big}}, io.EOF},
		{"exactly frame-max", b(FrameBody, 0, 1, 0, 0, 0x0f, 0xf8, make([]byte, 4088), FrameEnd), 4096,
			[]Frame{{Type: FrameBody, Channel: 1, Payload: make([]byte, 4088)}}, io.EOF},
		{"one octet over frame-max", b(FrameBody, 0, 1, 0, 0, 0x0f, 0xf9, make([]byte, 4089), FrameEnd), 4096, nil, ErrFrameTooLarge},
		{"4 GB size with no limit", b(FrameBody, 0, 1, 0xff, 0xff, 0xff, 0xff), 0, nil, ErrFrameTooLarge},
		{"bad frame end", b(FrameMethod, 0, 0, 0, 0, 0, 1, 9, 0xCD), 0, nil, ErrBadFrameEnd},
		{"unknown type", b(4, 0, 0, 0, 0, 0, 0, FrameEnd), 0, nil, ErrUnknownFrameType},
		{"truncated header", b(FrameMethod, 0), 0, nil, io.ErrUnexpectedEOF},
		{"truncated payload", b(FrameMethod, 0, 0, 0, 0, 0, 9, 1, 2), 0, nil, io.ErrUnexpectedEOF},
		{"truncated big payload", b(FrameBody, 0, 0, 0, 2, 0, 0, 1, 2), 0, nil, io.ErrUnexpectedEOF},
		{"missing frame end", b(FrameMethod, 0, 0, 0, 0, 0, 1, 1), 0, nil, io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, half := range []bool{false, true} {
				var src io.Reader = bytes.NewReader(tc.in)
				if half {
					src = iotest.HalfReader(src) // short reads must not matter
				}
				r := NewReader(src, tc.frameMax)
				var err error
				for i := 0; ; i++ {
					var f Frame
					f, err = r.ReadFrame()
					if err != nil {
						break
					}
					if i >= len(tc.want) {
						t.Fatalf("unexpected frame %+v", f)
					}
					w := tc.want[i]
					if f.Type != w.Type || f.Channel != w.Channel || !bytes.Equal(f.Payload, w.Payload) {
						t.Fatalf("frame %d: got type %d ch %d %d octets", i, f.Type, f.Channel, len(f.Payload))
					}
				}
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
			}
		})
	}
}

// countingReader fails the test if more than limit octets are read: ReadFrame must reject an
// oversized frame from its header alone.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestReadFrameRejectsBeforeReading(t *testing.T) {
	in := b(FrameBody, 0, 1, 0, 0x10, 0, 0)
	cr := &countingReader{r: io.MultiReader(bytes.NewReader(in), iotest.ErrReader(errors.New("read past the header")))}
	r := NewReader(cr, 131072)
	if _, err := r.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v", err)
	}
	if cap(r.buf) != 0 {
		t.Fatalf("allocated %d octets for a rejected frame", cap(r.buf))
	}
	// A 2 GB size field costs an error value, never a buffer: measure the bytes allocated.
	r = NewReader(bytes.NewReader(b(FrameBody, 0, 1, 0x7f, 0xff, 0xff, 0xff)), 0)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		if _, err := r.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("err = %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 100<<10 {
		t.Fatalf("100 rejected frames allocated %d octets", n)
	}
}

func TestSetFrameMax(t *testing.T) {
	in := b(AppendMethodFrame(nil, 0, &ConnectionTuneOk{FrameMax: 4096}), FrameBody, 0, 1, 0, 0, 0x20, 0, make([]byte, 0x2000), FrameEnd)
	r := NewReader(bytes.NewReader(in), 0)
	if _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	r.SetFrameMax(4096)
	if _, err := r.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v", err)
	}
}

func TestReadProtocolHeader(t *testing.T) {
	r := NewReader(bytes.NewReader(append(append([]byte{}, ProtocolHeader...), AppendHeartbeat(nil)...)), 0)
	h, err := r.ReadProtocolHeader()
	if err != nil || string(h[:]) != "AMQP\x00\x00\x09\x01" {
		t.Fatalf("%q %v", h, err)
	}
	if f, err := r.ReadFrame(); err != nil || f.Type != FrameHeartbeat {
		t.Fatalf("%+v %v", f, err)
	}
	if _, err := NewReader(bytes.NewReader([]byte("AMQP")), 0).ReadProtocolHeader(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short header: %v", err)
	}
}

func TestAppendContent(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 10000)
	tests := []struct {
		name     string
		body     []byte
		frameMax uint32
		chunks   []int
	}{
		{"empty body sends no body frame", nil, 4096, nil},
		{"fits one frame", body[:4088], 4096, []int{4088}},
		{"split at frame-max minus 8", body, 4096, []int{4088, 4088, 1824}},
		{"unlimited", body, 0, []int{10000}},
		{"tiny frame-max is ignored", body[:10], 8, []int{10}},
	}
	m := &BasicDeliver{ConsumerTag: "c", DeliveryTag: 1, Exchange: "e", RoutingKey: "k"}
	p := &Properties{Flags: FlagDeliveryMode, DeliveryMode: 2}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := AppendContent([]byte("pre"), 9, m, p, tc.body, tc.frameMax)
			if string(out[:3]) != "pre" {
				t.Fatal("dst prefix lost")
			}
			r := NewReader(bytes.NewReader(out[3:]), 0)
			f, err := r.ReadFrame()
			if err != nil || f.Type != FrameMethod || f.Channel != 9 || !bytes.Equal(f.Payload, m.Append(nil)) {
				t.Fatalf("method frame %+v %v", f, err)
			}
			f, err = r.ReadFrame()
			if err != nil || f.Type != FrameHeader {
				t.Fatalf("header frame %+v %v", f, err)
			}
			var h ContentHeader
			if err := DecodeContentHeader(f.Payload, &h); err != nil || h.ClassID != 60 || h.BodySize != uint64(len(tc.body)) ||
				h.Properties.DeliveryMode != 2 {
				t.Fatalf("header %+v %v", h, err)
			}
			var chunks []int
			var got []byte
			for {
				f, err := r.ReadFrame()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil || f.Type != FrameBody || f.Channel != 9 {
					t.Fatalf("body frame %+v %v", f, err)
				}
				chunks = append(chunks, len(f.Payload))
				got = append(got, f.Payload...)
			}
			if !equalInts(chunks, tc.chunks) || !bytes.Equal(got, tc.body) {
				t.Fatalf("chunks %v, want %v", chunks, tc.chunks)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// countingReader hands out its data in the chunks given, counting Read calls.
type chunkReader struct {
	chunks [][]byte
	reads  int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	c.reads++
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// HasFrame is true exactly when the next ReadFrame needs no read from the connection (the
// reader defers its queues' wake-ups only then).
func TestHasFrame(t *testing.T) {
	one := AppendMethodFrame(nil, 1, &BasicPublish{RoutingKey: "k"})
	two := AppendHeartbeat(nil)
	// The first read brings the first frame and the first 3 octets of the second.
	src := &chunkReader{chunks: [][]byte{append(append([]byte(nil), one...), two[:3]...), two[3:]}}
	r := NewReader(src, 0)
	if r.HasFrame() {
		t.Fatal("HasFrame before anything was read")
	}
	if _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if r.HasFrame() {
		t.Fatal("HasFrame with 3 octets of the next frame buffered")
	}
	reads := src.reads
	if _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if src.reads == reads {
		t.Fatal("the frame HasFrame denied came without a read")
	}

	// Two whole frames in one read: HasFrame after the first, and the second needs no read.
	src = &chunkReader{chunks: [][]byte{append(append([]byte(nil), one...), one...)}}
	r = NewReader(src, 0)
	if _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if !r.HasFrame() {
		t.Fatal("HasFrame false with a whole frame buffered")
	}
	reads = src.reads
	if _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if src.reads != reads {
		t.Fatal("ReadFrame read from the connection after HasFrame said a frame was buffered")
	}
}
