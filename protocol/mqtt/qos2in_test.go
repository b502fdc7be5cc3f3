package mqtt

import (
	"bytes"
	"testing"

	"github.com/parleymq/parley/broker"
)

// A pending "in:" record comes back as written; truncated or padded ones are refused.
func TestInRecordRoundTrip(t *testing.T) {
	for _, r := range []inRecord{
		{token: "00ff"},
		{token: "abc", marks: []broker.LogMark{{Queue: "q1", Index: 7}, {Queue: "mqtt.s.dev", Index: 1 << 40}}},
	} {
		b := r.encode()
		got, ok := decodeInRecord(b)
		if !ok || got.token != r.token || len(got.marks) != len(r.marks) {
			t.Fatalf("%+v came back as %+v (ok %v)", r, got, ok)
		}
		for i := range r.marks {
			if got.marks[i] != r.marks[i] {
				t.Fatalf("mark %d: %+v, want %+v", i, got.marks[i], r.marks[i])
			}
		}
		if _, ok := decodeInRecord(b[:len(b)-1]); ok {
			t.Fatalf("% x truncated decoded", b)
		}
		if _, ok := decodeInRecord(append(bytes.Clone(b), 0)); ok {
			t.Fatalf("% x with a byte more decoded", b)
		}
	}
	for _, bad := range [][]byte{nil, {}, {0, 0, 0}, {1, 5, 'a'}} {
		if _, ok := decodeInRecord(bad); ok {
			t.Fatalf("% x decoded", bad)
		}
	}
}

// FuzzInRecord: no stored record makes the decoder panic, and what it accepts encodes to a
// record it reads back the same.
func FuzzInRecord(f *testing.F) {
	f.Add(inRecord{token: "t"}.encode())
	f.Add(inRecord{token: "0123456789abcdef", marks: []broker.LogMark{{Queue: "q", Index: 3}}}.encode())
	f.Add([]byte{1, 0, 2, 1, 'a', 1, 1, 'b', 200, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, ok := decodeInRecord(data)
		if !ok {
			return
		}
		again, ok := decodeInRecord(r.encode())
		if !ok || again.token != r.token || len(again.marks) != len(r.marks) {
			t.Fatalf("% x re-encoded as % x, read back as %+v (ok %v)", data, r.encode(), again, ok)
		}
		for i := range r.marks {
			if again.marks[i] != r.marks[i] {
				t.Fatalf("% x: mark %d read back as %+v, want %+v", data, i, again.marks[i], r.marks[i])
			}
		}
	})
}
