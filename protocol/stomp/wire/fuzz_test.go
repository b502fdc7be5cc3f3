package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/go-stomp/stomp/v3/frame"
)

// FuzzReadFrame feeds arbitrary bytes to the reader with small limits. It must never panic,
// never return a frame beyond its limits, and every STOMP 1.2 frame it reads must survive
// being written and read again unchanged (content-length aside, which the writer adds).
func FuzzReadFrame(f *testing.F) {
	for _, g := range golden {
		f.Add([]byte(g.wire), uint8(g.v))
	}
	f.Add([]byte("SEND\ncontent-length:2\n\nabc\x00"), uint8(V12))
	f.Add([]byte("\n\r\nSEND\nk:a\\tb\n\n\x00"), uint8(V11))
	f.Fuzz(func(t *testing.T, data []byte, ver uint8) {
		v := Version(ver % 3)
		lim := Limits{MaxHeaderBytes: 256, MaxHeaders: 8, MaxBody: 512}
		r := NewReader(bytes.NewReader(data), lim)
		r.SetVersion(v)
		for i := 0; i < 16; i++ {
			fr, err := r.Read()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrBadFrame) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if fr == nil {
				continue
			}
			if fr.Header.Len() > lim.MaxHeaders || len(fr.Body) > lim.MaxBody {
				t.Fatalf("frame beyond the limits: %d headers, %d body bytes", fr.Header.Len(), len(fr.Body))
			}
			if v != V12 || fr.Command == frame.CONNECT || fr.Command == frame.STOMP || fr.Command == frame.CONNECTED {
				continue
			}
			enc := AppendFrame(nil, fr, V12)
			r2 := NewReader(bytes.NewReader(enc), Limits{MaxHeaderBytes: 1 << 20, MaxHeaders: 1 << 10, MaxBody: 1 << 20})
			r2.SetVersion(V12)
			g, err := r2.Read()
			if err != nil {
				t.Fatalf("re-reading %q: %v", enc, err)
			}
			a, b := headerList(fr.Header), headerList(g.Header)
			if g.Command != fr.Command || !bytes.Equal(g.Body, fr.Body) || !equal(stripLen(a), stripLen(b)) {
				t.Fatalf("round trip changed the frame:\n%q\n%q", a, b)
			}
		}
	})
}

func stripLen(h []string) []string {
	var out []string
	for i := 0; i+1 < len(h); i += 2 {
		if h[i] != frame.ContentLength {
			out = append(out, h[i], h[i+1])
		}
	}
	return out
}
