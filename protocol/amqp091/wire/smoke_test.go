package wire

import (
	"bytes"
	"testing"
)

func TestSmokeRoundTrip(t *testing.T) {
	m := &BasicPublish{Exchange: "amq.direct", RoutingKey: "rk", Mandatory: true}
	p := &Properties{Flags: FlagContentType | FlagHeaders | FlagDeliveryMode, ContentType: "text/plain",
		Headers: Table{"a": int32(1), "b": "x"}, DeliveryMode: 2}
	buf := AppendContent(nil, 1, m, p, []byte("hello world"), 4096)
	r := NewReader(bytes.NewReader(buf), 4096)
	f, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMethod(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if *got.(*BasicPublish) != *m {
		t.Fatalf("%+v", got)
	}
	f, err = r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	var h ContentHeader
	if err := DecodeContentHeader(f.Payload, &h); err != nil {
		t.Fatal(err)
	}
	if h.BodySize != 11 || h.Properties.ContentType != "text/plain" || h.Properties.Headers["b"] != "x" {
		t.Fatalf("%+v", h)
	}
	f, err = r.ReadFrame()
	if err != nil || string(f.Payload) != "hello world" {
		t.Fatal(err, f)
	}
}
