package main

import (
	"testing"
	"unicode/utf8"
)

func TestPayloadRoundTrip(t *testing.T) {
	for _, text := range []bool{false, true} {
		b := newBody(100, text)
		stamp(b, 7, 1<<40+3, -5)
		p, s, ts, err := parseHeader(b)
		if err != nil || p != 7 || s != 1<<40+3 || ts != -5 || len(b) != 100 {
			t.Fatalf("text=%v: %d %d %d %v len %d", text, p, s, ts, err, len(b))
		}
		if text && !utf8.Valid(b) {
			t.Fatalf("text body is not UTF-8: %q", b)
		}
	}
	// Below the header size: raised to it.
	if b := newBody(1, true); len(b) != textHeaderLen {
		t.Fatalf("small text body: %d bytes", len(b))
	}
	if b := newBody(10, false); len(b) != headerLen {
		t.Fatalf("small body: %d bytes", len(b))
	}
	for _, foreign := range [][]byte{nil, []byte("hello"), []byte("PBt1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"), make([]byte, 64)} {
		if _, _, _, err := parseHeader(foreign); err == nil {
			t.Errorf("%q parsed as ours", foreign)
		}
	}
}
