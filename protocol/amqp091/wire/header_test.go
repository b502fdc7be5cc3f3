package wire

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

var goldenHeaders = []struct {
	name    string
	h       ContentHeader
	payload []byte
}{
	{"no properties", ContentHeader{ClassID: 60, BodySize: 5},
		b(0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0)},
	{"content-type and delivery-mode", ContentHeader{ClassID: 60, BodySize: 0x0102, Properties: Properties{
		Flags: FlagContentType | FlagDeliveryMode, ContentType: "text/plain", DeliveryMode: 2}},
		b(0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0x90, 0, 10, "text/plain", 2)},
	{"every property", ContentHeader{ClassID: 60, BodySize: 1, Properties: Properties{
		Flags: 0xfff8, ContentType: "ct", ContentEncoding: "ce", Headers: Table{"h": int32(1)}, DeliveryMode: 1,
		Priority: 9, CorrelationID: "c", ReplyTo: "r", Expiration: "60000", MessageID: "m", Timestamp: 1700000000,
		Type: "t", UserID: "guest", AppID: "app"}},
		b(0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xf8, 2, "ct", 2, "ce", 0, 0, 0, 7, 1, "h", 'I', 0, 0, 0, 1,
			1, 9, 1, "c", 1, "r", 5, "60000", 1, "m", 0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x00, 1, "t", 5, "guest", 3, "app")},
}

func TestGoldenContentHeaders(t *testing.T) {
	for _, tc := range goldenHeaders {
		t.Run(tc.name, func(t *testing.T) {
			frame := AppendHeaderFrame(nil, 3, tc.h.ClassID, tc.h.BodySize, &tc.h.Properties)
			want := b(FrameHeader, 0, 3, 0, 0, 0, len(tc.payload), tc.payload, FrameEnd)
			if !bytes.Equal(frame, want) {
				t.Fatalf("AppendHeaderFrame:\n got %x\nwant %x", frame, want)
			}
			var h ContentHeader
			if err := DecodeContentHeader(tc.payload, &h); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h, tc.h) {
				t.Fatalf("DecodeContentHeader:\n got %+v\nwant %+v", h, tc.h)
			}
			var d Decoder
			h = ContentHeader{Properties: Properties{AppID: "stale"}}
			if err := d.DecodeContentHeader(tc.payload, &h); err != nil || !reflect.DeepEqual(h, tc.h) {
				t.Fatalf("Decoder.DecodeContentHeader: %+v %v", h, err)
			}
			for i := range len(tc.payload) {
				if err := DecodeContentHeader(tc.payload[:i], &h); !errors.Is(err, ErrSyntax) {
					t.Fatalf("prefix of %d: err = %v", i, err)
				}
			}
		})
	}
}

func TestContentHeaderFlags(t *testing.T) {
	var h ContentHeader
	tests := []struct {
		name    string
		payload []byte
		wantErr bool
		want    Properties
	}{
		{"cluster-id is parsed and dropped", b(0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x04, 1, "a", 2, "id"),
			false, Properties{Flags: FlagContentType, ContentType: "a"}},
		{"empty continuation word", b(0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01, 0, 0), false, Properties{}},
		{"continuation word with a flag", b(0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01, 0x80, 0), true, Properties{}},
		{"flag bit 1", b(0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x02), true, Properties{}},
		{"trailing octets", b(0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9), true, Properties{}},
		{"headers table too long", b(0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0xff, 0xff, 0xff, 0xff), true, Properties{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := DecodeContentHeader(tc.payload, &h)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err == nil && !reflect.DeepEqual(h.Properties, tc.want) {
				t.Fatalf("got %+v", h.Properties)
			}
		})
	}
}

func TestAppendHeaderFrameIgnoresFieldsWithoutFlags(t *testing.T) {
	p := Properties{Flags: FlagPriority | flagClusterID | 1, ContentType: "ignored", Priority: 4}
	got := AppendHeaderFrame(nil, 0, 60, 0, &p)
	want := b(FrameHeader, 0, 0, 0, 0, 0, 15, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0, 4, FrameEnd)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %x\nwant %x", got, want)
	}
	if got := AppendHeaderFrame(nil, 0, 60, 0, nil); len(got) != 7+14+1 {
		t.Fatalf("nil properties: %x", got)
	}
}
