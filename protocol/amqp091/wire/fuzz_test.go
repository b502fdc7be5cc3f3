package wire

import (
	"bytes"
	"errors"
	"testing"
)

// The seed corpora in testdata/fuzz are real frames captured by internal/capture; the seeds
// added here cover hand-made edge cases.

func FuzzReadFrame(f *testing.F) {
	f.Add(AppendHeartbeat(nil))
	f.Add(b(FrameBody, 0, 1, 0xff, 0xff, 0xff, 0xff))
	f.Add(b(FrameMethod, 0, 0, 0, 0, 0, 1, 9, 0xCD))
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, frameMax := range []uint32{0, FrameMinSize} {
			r := NewReader(bytes.NewReader(in), frameMax)
			total := 0
			for {
				fr, err := r.ReadFrame()
				if err != nil {
					break
				}
				total += len(fr.Payload) + 8
				if frameMax != 0 && len(fr.Payload)+8 > int(frameMax) {
					t.Fatalf("frame of %d octets passed frame-max %d", len(fr.Payload)+8, frameMax)
				}
				if total > len(in) {
					t.Fatalf("read %d octets of frames from %d octets of input", total, len(in))
				}
				// What was read must encode back to the same octets.
				var again []byte
				again = append(again, fr.Type)
				again = appendShort(again, fr.Channel)
				again = appendLong(again, uint32(len(fr.Payload)))
				again = append(append(again, fr.Payload...), FrameEnd)
				if !bytes.Equal(again, in[total-len(again):total]) {
					t.Fatal("frame does not match its input")
				}
			}
		}
	})
}

func FuzzDecodeMethod(f *testing.F) {
	for _, g := range goldenMethods {
		f.Add(g.payload)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := DecodeMethod(in)
		var d Decoder
		m2, err2 := d.Decode(in)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("DecodeMethod and Decoder disagree: %v / %v", err, err2)
		}
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrUnknownMethod) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		// Encoding is canonical up to table key order and non-zero bit padding, so compare
		// encodings of the decoded values rather than with the input.
		enc := m.Append(nil)
		if !bytes.Equal(enc, m2.Append(nil)) {
			t.Fatal("DecodeMethod and Decoder decoded different values")
		}
		m3, err := DecodeMethod(enc)
		if err != nil {
			t.Fatalf("re-decode %s: %v", m.Name(), err)
		}
		if !bytes.Equal(m3.Append(nil), enc) {
			t.Fatalf("%s: encoding not stable", m.Name())
		}
	})
}

func FuzzReadTable(f *testing.F) {
	for _, g := range goldenValues {
		entry := b(1, "k", g.wire)
		f.Add(b(0, 0, 0, len(entry), entry))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		tbl, rest, err := ReadTable(in)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if len(rest) > len(in)-4 {
			t.Fatal("rest longer than the input after the size")
		}
		enc, err := AppendTable(nil, tbl)
		if err != nil {
			t.Fatalf("a decoded table does not encode: %v", err)
		}
		tbl2, rest2, err := ReadTable(enc)
		if err != nil || len(rest2) != 0 {
			t.Fatalf("re-decode: %v, %d left", err, len(rest2))
		}
		enc2, _ := AppendTable(nil, tbl2)
		if !bytes.Equal(enc, enc2) {
			t.Fatal("encoding not stable")
		}
		// Duplicate keys collapse, so the table can only shrink.
		if len(enc) > len(in)-len(rest) {
			t.Fatalf("%d octets re-encoded from %d", len(enc), len(in)-len(rest))
		}
	})
}

func FuzzContentHeader(f *testing.F) {
	for _, g := range goldenHeaders {
		f.Add(g.payload)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var h ContentHeader
		err := DecodeContentHeader(in, &h)
		var d Decoder
		var h2 ContentHeader
		if err2 := d.DecodeContentHeader(in, &h2); (err == nil) != (err2 == nil) {
			t.Fatalf("Decoder disagrees: %v / %v", err, err2)
		}
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		frame := AppendHeaderFrame(nil, 1, h.ClassID, h.BodySize, &h.Properties)
		var h3 ContentHeader
		if err := DecodeContentHeader(frame[7:len(frame)-1], &h3); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		again := AppendHeaderFrame(nil, 1, h3.ClassID, h3.BodySize, &h3.Properties)
		if !bytes.Equal(frame, again) {
			t.Fatal("encoding not stable")
		}
	})
}
