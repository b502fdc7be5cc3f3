package mqtt

import (
	"bytes"
	"testing"

	"github.com/parleymq/parley/broker/message"
)

// The "conn" record comes back as written, with or without a will.
func TestConnRecordRoundTrip(t *testing.T) {
	will := &message.Message{Exchange: "amq.topic", RoutingKey: "status.x", Body: []byte("gone"),
		Properties: message.Properties{Flags: message.FlagHeaders, Headers: message.Table{hdrRetain: true}}}
	for _, r := range []connRecord{
		{at: 1700000000000, node: "parley-1"},
		{left: true, at: 5, node: ""},
		{at: 9, node: "n2", will: will, delay: 30},
		{left: true, at: 7, node: "n3", expiry: 3600000, hasExpiry: true},
		{at: 8, node: "n4", expiry: 0, hasExpiry: true, will: will, delay: 5},
	} {
		got, ok := decodeConnRecord(r.encode())
		if !ok || got.left != r.left || got.at != r.at || got.node != r.node || got.delay != r.delay ||
			got.hasExpiry != r.hasExpiry || got.expiry != r.expiry ||
			(r.will == nil) != (got.will == nil) {
			t.Fatalf("%+v came back as %+v (ok %v)", r, got, ok)
		}
		if r.will != nil && (!bytes.Equal(got.will.Body, will.Body) || got.will.RoutingKey != will.RoutingKey) {
			t.Fatalf("will came back as %+v", got.will)
		}
	}
	for _, bad := range [][]byte{nil, {2, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 'a'}, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, {4, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, ok := decodeConnRecord(bad); ok {
			t.Fatalf("% x decoded", bad)
		}
	}
}

// FuzzConnRecord: no stored record makes the decoder panic, and what it accepts encodes to
// something it accepts again.
func FuzzConnRecord(f *testing.F) {
	f.Add(connRecord{at: 1, node: "parley-1"}.encode())
	f.Add(connRecord{left: true, at: 2, node: "n", delay: 3,
		will: &message.Message{RoutingKey: "a.b", Body: []byte("w")}}.encode())
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add(connRecord{left: true, at: 4, node: "n", expiry: 2000, hasExpiry: true}.encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		r, ok := decodeConnRecord(data)
		if !ok {
			return
		}
		if _, ok := decodeConnRecord(r.encode()); !ok {
			t.Fatalf("re-encoded record % x not accepted", r.encode())
		}
	})
}
