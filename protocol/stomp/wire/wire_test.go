package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/go-stomp/stomp/v3/frame"
)

// golden frames: wire bytes, the version they are read with, and what they decode to.
var golden = []struct {
	name    string
	v       Version
	wire    string
	command string
	headers []string // key, value, ...
	body    string
}{
	{"connect 1.2", V10, "CONNECT\naccept-version:1.0,1.1,1.2\nhost:/\n\n\x00", "CONNECT", []string{"accept-version", "1.0,1.1,1.2", "host", "/"}, ""},
	{"crlf lines", V12, "SEND\r\ndestination:/queue/a\r\n\r\nhi\x00", "SEND", []string{"destination", "/queue/a"}, "hi"},
	{"content-length with NULs", V12, "SEND\ndestination:/queue/a\ncontent-length:5\n\na\x00b\x00c\x00", "SEND", []string{"destination", "/queue/a", "content-length", "5"}, "a\x00b\x00c"},
	{"1.2 escapes", V12, "SEND\nk\\cx:a\\nb\\\\c\\rd\n\n\x00", "SEND", []string{"k:x", "a\nb\\c\rd"}, ""},
	{"1.1 escapes", V11, "SEND\nk:a\\cb\\n\n\n\x00", "SEND", []string{"k", "a:b\n"}, ""},
	{"1.0 no escapes, trimmed", V10, "SEND\nk: a\\nb\n\n\x00", "SEND", []string{"k", "a\\nb"}, ""},
	{"CONNECT not unescaped in 1.2", V12, "CONNECT\nlogin:a\\cb\n\n\x00", "CONNECT", []string{"login", "a\\cb"}, ""},
	{"repeated header kept in order", V12, "MESSAGE\nfoo:1\nfoo:2\n\n\x00", "MESSAGE", []string{"foo", "1", "foo", "2"}, ""},
	{"colon in value", V10, "SEND\nurl:http://x\n\n\x00", "SEND", []string{"url", "http://x"}, ""},
	{"empty value", V12, "SEND\nk:\n\n\x00", "SEND", []string{"k", ""}, ""},
}

func TestReadGolden(t *testing.T) {
	for _, g := range golden {
		t.Run(g.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(g.wire), Limits{})
			r.SetVersion(g.v)
			f, err := r.Read()
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if f.Command != g.command || string(f.Body) != g.body {
				t.Fatalf("got %s %q, want %s %q", f.Command, f.Body, g.command, g.body)
			}
			if got := headerList(f.Header); !equal(got, g.headers) {
				t.Fatalf("headers %q, want %q", got, g.headers)
			}
			if _, err := r.Read(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the frame: %v, want EOF", err)
			}
		})
	}
}

func TestHeartbeatsBetweenFrames(t *testing.T) {
	r := NewReader(strings.NewReader("\n\r\nSEND\n\nx\x00\n\nACK\n\n\x00"), Limits{})
	var got []string
	for {
		f, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if f == nil {
			got = append(got, "beat")
		} else {
			got = append(got, f.Command)
		}
	}
	want := []string{"beat", "beat", "SEND", "beat", "beat", "ACK"}
	if !equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestReadErrors(t *testing.T) {
	lim := Limits{MaxHeaderBytes: 64, MaxHeaders: 3, MaxBody: 10}
	cases := []struct {
		name string
		v    Version
		wire string
		kind error
	}{
		{"headers too large", V12, "SEND\nk:" + strings.Repeat("x", 100) + "\n\n\x00", ErrHeaderTooLarge},
		{"header line beyond the bufio buffer", V12, "SEND\nk:" + strings.Repeat("x", 40000) + "\n\n\x00", ErrHeaderTooLarge},
		{"too many headers", V12, "SEND\na:1\nb:2\nc:3\nd:4\n\n\x00", ErrTooManyHeaders},
		{"body too large by content-length", V12, "SEND\ncontent-length:11\n\n01234567890\x00", ErrBodyTooLarge},
		{"body too large without content-length", V12, "SEND\n\n01234567890\x00", ErrBodyTooLarge},
		{"content-length lies", V12, "SEND\ncontent-length:2\n\nabc\x00", ErrContentLengthLies},
		{"content-length not a number", V12, "SEND\ncontent-length:x\n\n\x00", ErrBadContentLength},
		{"negative content-length", V12, "SEND\ncontent-length:-1\n\n\x00", ErrBadContentLength},
		{"undefined escape", V12, "SEND\nk:a\\tb\n\n\x00", ErrBadEscape},
		{"\\r escape in 1.1", V11, "SEND\nk:a\\rb\n\n\x00", ErrBadEscape},
		{"lone backslash", V12, "SEND\nk:a\\\n\n\x00", ErrBadEscape},
		{"no colon", V12, "SEND\nnocolon\n\n\x00", ErrBadHeader},
		{"empty header name", V12, "SEND\n:v\n\n\x00", ErrBadHeader},
		{"lower-case command", V12, "send\n\n\x00", ErrBadCommand},
		{"binary command", V12, "\x01\x02\n\n\x00", ErrBadCommand},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(c.wire), lim)
			r.SetVersion(c.v)
			_, err := r.Read()
			if !errors.Is(err, ErrBadFrame) || !errors.Is(err, c.kind) {
				t.Fatalf("got %v, want %v", err, c.kind)
			}
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Detail == "" {
				t.Fatalf("no detail for the client: %v", err)
			}
		})
	}
}

func TestTruncatedFrame(t *testing.T) {
	for _, w := range []string{"SEND\nk:v", "SEND\n\nbody", "SEND\ncontent-length:4\n\nab"} {
		r := NewReader(strings.NewReader(w), Limits{})
		if _, err := r.Read(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%q: got %v, want ErrUnexpectedEOF", w, err)
		}
	}
}

// Encoding golden: what AppendFrame writes for each version.
func TestAppendGolden(t *testing.T) {
	f := frame.New("MESSAGE", "k:x", "a\nb\\c\rd")
	f.Body = []byte("a\x00b")
	cases := []struct {
		v    Version
		want string
	}{
		{V12, "MESSAGE\nk\\cx:a\\nb\\\\c\\rd\ncontent-length:3\n\na\x00b\x00"},
		{V11, "MESSAGE\nk\\cx:a\\nb\\\\c\rd\ncontent-length:3\n\na\x00b\x00"},
		{V10, "MESSAGE\nk:x:a\nb\\c\rd\ncontent-length:3\n\na\x00b\x00"},
	}
	for _, c := range cases {
		if got := string(AppendFrame(nil, f, c.v)); got != c.want {
			t.Errorf("%s: got %q, want %q", c.v, got, c.want)
		}
	}
	conn := frame.New("CONNECTED", "version", "1.2", "server", "a:b")
	if got, want := string(AppendFrame(nil, conn, V12)), "CONNECTED\nversion:1.2\nserver:a:b\n\n\x00"; got != want {
		t.Errorf("CONNECTED: got %q, want %q", got, want)
	}
}

func TestRoundTrip12(t *testing.T) {
	f := frame.New("SEND", "destination", "/queue/a:b", "x\\y", "line1\nline2\r")
	f.Body = []byte{0, 1, 2, 0}
	r := NewReader(bytes.NewReader(AppendFrame(nil, f, V12)), Limits{})
	r.SetVersion(V12)
	g, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	g.Header.Del(frame.ContentLength)
	if g.Command != f.Command || !bytes.Equal(g.Body, f.Body) || !equal(headerList(g.Header), headerList(f.Header)) {
		t.Fatalf("round trip changed the frame: %+v", g)
	}
}

func headerList(h *frame.Header) []string {
	var out []string
	for i := 0; i < h.Len(); i++ {
		k, v := h.GetAt(i)
		out = append(out, k, v)
	}
	return out
}

func equal(a, b []string) bool {
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
