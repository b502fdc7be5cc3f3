package wire

import (
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"testing"
)

// capturedFrame is one frame of testdata/capture, recorded by internal/capture between
// amqp091-go and RabbitMQ 3.10.8.
type capturedFrame struct {
	raw []byte
	f   Frame
}

func readCapture(t *testing.T, name string) []capturedFrame {
	t.Helper()
	data, err := os.ReadFile("testdata/capture/" + name)
	if err != nil {
		t.Fatal(err)
	}
	r := NewReader(bytes.NewReader(data), 0)
	if name == "client.bin" {
		h, err := r.ReadProtocolHeader()
		if err != nil || !bytes.Equal(h[:], ProtocolHeader) {
			t.Fatalf("client protocol header %q %v", h, err)
		}
		data = data[8:]
	}
	var frames []capturedFrame
	for {
		f, err := r.ReadFrame()
		if errors.Is(err, io.EOF) {
			return frames
		}
		if err != nil {
			t.Fatalf("%s frame %d: %v", name, len(frames), err)
		}
		n := len(f.Payload) + 8
		f.Payload = append([]byte{}, f.Payload...)
		frames = append(frames, capturedFrame{raw: data[:n], f: f})
		data = data[n:]
	}
}

// TestCapturedFrames decodes every frame amqp091-go and RabbitMQ exchanged and encodes it
// again. Tables may come out in a different key order (we sort; the peers did not), so a
// frame whose bytes differ must at least decode to the same value.
func TestCapturedFrames(t *testing.T) {
	for _, name := range []string{"client.bin", "server.bin"} {
		var d Decoder
		methods, exact := 0, 0
		for i, cf := range readCapture(t, name) {
			switch cf.f.Type {
			case FrameMethod:
				methods++
				m, err := DecodeMethod(cf.f.Payload)
				if err != nil {
					t.Fatalf("%s frame %d: %v", name, i, err)
				}
				m2, err := d.Decode(cf.f.Payload)
				if err != nil || !reflect.DeepEqual(m, m2) {
					t.Fatalf("%s frame %d: Decoder disagrees: %+v %v", name, i, m2, err)
				}
				again := AppendMethodFrame(nil, cf.f.Channel, m)
				if bytes.Equal(again, cf.raw) {
					exact++
					continue
				}
				m3, err := DecodeMethod(again[7 : len(again)-1])
				if err != nil || !reflect.DeepEqual(m, m3) {
					t.Fatalf("%s frame %d %s: re-encoding changed it:\n%+v\n%+v", name, i, m.Name(), m, m3)
				}
			case FrameHeader:
				var h ContentHeader
				if err := DecodeContentHeader(cf.f.Payload, &h); err != nil {
					t.Fatalf("%s frame %d: %v", name, i, err)
				}
				again := AppendHeaderFrame(nil, cf.f.Channel, h.ClassID, h.BodySize, &h.Properties)
				if bytes.Equal(again, cf.raw) {
					continue
				}
				var h2 ContentHeader
				if err := DecodeContentHeader(again[7:len(again)-1], &h2); err != nil || !reflect.DeepEqual(h, h2) {
					t.Fatalf("%s frame %d: re-encoding changed the header:\n%+v\n%+v", name, i, h, h2)
				}
			}
		}
		if methods < 40 || exact < methods/2 {
			t.Fatalf("%s: %d methods, %d byte-exact", name, methods, exact)
		}
	}
}

// TestRabbitMQConnectionStart pins what RabbitMQ 3.10.8 sends first: the AMQP adapter must
// advertise the same capabilities.
func TestRabbitMQConnectionStart(t *testing.T) {
	frames := readCapture(t, "server.bin")
	m, err := DecodeMethod(frames[0].f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	start, ok := m.(*ConnectionStart)
	if !ok {
		t.Fatalf("first server frame is %s", m.Name())
	}
	wantCaps := Table{
		"publisher_confirms":           true,
		"exchange_exchange_bindings":   true,
		"basic.nack":                   true,
		"consumer_cancel_notify":       true,
		"connection.blocked":           true,
		"consumer_priorities":          true,
		"authentication_failure_close": true,
		"per_consumer_qos":             true,
		"direct_reply_to":              true,
	}
	if !reflect.DeepEqual(start.ServerProperties["capabilities"], wantCaps) {
		t.Errorf("capabilities = %#v", start.ServerProperties["capabilities"])
	}
	if start.VersionMajor != 0 || start.VersionMinor != 9 || start.Mechanisms != "PLAIN AMQPLAIN" || start.Locales != "en_US" {
		t.Errorf("connection.start = %+v", start)
	}
	if start.ServerProperties["product"] != "RabbitMQ" {
		t.Errorf("product = %v", start.ServerProperties["product"])
	}
	m, err = DecodeMethod(frames[1].f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if tune, ok := m.(*ConnectionTune); !ok || *tune != (ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60}) {
		t.Errorf("connection.tune = %+v", m)
	}
}

// TestRabbitMQReplies pins reply codes and texts RabbitMQ sent in the capture.
func TestRabbitMQReplies(t *testing.T) {
	want := map[string]Method{
		"channel.close":   &ChannelClose{ReplyCode: NotFound, ReplyText: "NOT_FOUND - no queue 'parley.capture.missing' in vhost '/'", ClassId: 50, MethodId: 10},
		"basic.return":    &BasicReturn{ReplyCode: NoRoute, ReplyText: "NO_ROUTE", RoutingKey: "parley.capture.nowhere"},
		"basic.get-empty": &BasicGetEmpty{},
	}
	seen := map[string]bool{}
	for _, cf := range readCapture(t, "server.bin") {
		if cf.f.Type != FrameMethod {
			continue
		}
		m, err := DecodeMethod(cf.f.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if w, ok := want[m.Name()]; ok {
			seen[m.Name()] = true
			if !reflect.DeepEqual(m, w) {
				t.Errorf("%s = %+v, want %+v", m.Name(), m, w)
			}
		}
	}
	if len(seen) != len(want) {
		t.Errorf("saw only %v", seen)
	}
}

// TestRabbitMQPassesHeadersThrough: RabbitMQ delivers a message's content header exactly as
// published, with every field-table type code intact.
func TestRabbitMQPassesHeadersThrough(t *testing.T) {
	var published, delivered []byte
	for _, cf := range readCapture(t, "client.bin") {
		if cf.f.Type == FrameHeader {
			published = cf.f.Payload
			break
		}
	}
	for _, cf := range readCapture(t, "server.bin") {
		if cf.f.Type == FrameHeader && bytes.Equal(cf.f.Payload, published) {
			delivered = cf.f.Payload
		}
	}
	if delivered == nil {
		t.Fatal("the first published header was not delivered unchanged")
	}
	var h ContentHeader
	if err := DecodeContentHeader(delivered, &h); err != nil {
		t.Fatal(err)
	}
	if len(h.Properties.Headers) != 18 || h.Properties.Flags != 0xfff8 {
		t.Fatalf("%+v", h)
	}
}
