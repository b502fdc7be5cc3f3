package message

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

func fullMessage() *Message {
	return &Message{
		Exchange:   "amq.topic",
		RoutingKey: "a.b.c",
		Properties: Properties{
			Flags: FlagContentType | FlagContentEncoding | FlagHeaders | FlagDeliveryMode | FlagPriority |
				FlagCorrelationID | FlagReplyTo | FlagExpiration | FlagMessageID | FlagTimestamp | FlagType |
				FlagUserID | FlagAppID,
			ContentType: "text/plain", ContentEncoding: "gzip", DeliveryMode: 2, Priority: 7,
			CorrelationID: "c1", ReplyTo: "amq.rabbitmq.reply-to.x", Expiration: "60000", MessageID: "m1",
			Timestamp: 1700000000, Type: "t", UserID: "guest", AppID: "app",
			Headers: Table{
				"bool": true, "i8": int8(-8), "u8": uint8(8), "i16": int16(-16), "u16": uint16(16),
				"i32": int32(-32), "u32": uint32(32), "i64": int64(-64), "f32": float32(1.5), "f64": 2.25,
				"str": "s", "bytes": []byte{0, 1, 2}, "arr": []any{int32(1), "two", nil},
				"time": time.Unix(1700000000, 0).UTC(), "nested": Table{"k": "v"}, "void": nil,
			},
		},
		Body: []byte("hello\x00world"),
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	for _, m := range []*Message{fullMessage(), {}, {Body: []byte{}}, {Exchange: "x", Properties: Properties{Flags: FlagDeliveryMode, DeliveryMode: 1}}} {
		b, err := AppendBinary([]byte("prefix"), m)
		if err != nil {
			t.Fatal(err)
		}
		got, rest, err := DecodeBinary(append(b[len("prefix"):], "tail"...))
		if err != nil {
			t.Fatal(err)
		}
		if string(rest) != "tail" {
			t.Fatalf("rest %q", rest)
		}
		if len(m.Body) == 0 && len(got.Body) == 0 {
			got.Body = m.Body
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip:\n got %#v\nwant %#v", got, m)
		}
	}
}

func TestBinaryIsDeterministic(t *testing.T) {
	a, _ := AppendBinary(nil, fullMessage())
	b, _ := AppendBinary(nil, fullMessage())
	if !bytes.Equal(a, b) {
		t.Fatal("the same message encoded to different bytes")
	}
}

func TestBinaryErrors(t *testing.T) {
	m := fullMessage()
	m.Properties.Headers = Table{"odd": struct{ X int }{1}}
	if _, err := AppendBinary(nil, m); !errors.Is(err, ErrUnsupportedValue) {
		t.Fatalf("unsupported value: %v", err)
	}
	full, _ := AppendBinary(nil, fullMessage())
	for i := 0; i < len(full); i++ {
		if _, _, err := DecodeBinary(full[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated at %d of %d: %v", i, len(full), err)
		}
	}
}

func BenchmarkAppendBinary(b *testing.B) {
	m := &Message{RoutingKey: "q", Properties: Properties{Flags: FlagDeliveryMode, DeliveryMode: 2}, Body: make([]byte, 1024)}
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendBinary(buf[:0], m)
	}
}

// FuzzDecodeBinary: any input decodes or fails cleanly, and what decodes re-encodes to an input
// that decodes to the same message.
func FuzzDecodeBinary(f *testing.F) {
	for _, m := range []*Message{fullMessage(), {}, {RoutingKey: "q", Body: []byte("x")}} {
		b, _ := AppendBinary(nil, m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, _, err := DecodeBinary(data)
		if err != nil {
			return
		}
		b, err := AppendBinary(nil, m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		m2, _, err := DecodeBinary(b)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-encoding changed the message: %v", err)
		}
	})
}
