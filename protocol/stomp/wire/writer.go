package wire

import (
	"strconv"

	"github.com/go-stomp/stomp/v3/frame"
)

// AppendFrame appends f encoded for version v. Headers are escaped as v requires, except in
// CONNECTED frames (STOMP 1.2 §Value Encoding). A body is preceded by a content-length header
// unless f already has one, so bodies with NUL octets survive.
func AppendFrame(b []byte, f *frame.Frame, v Version) []byte {
	b = AppendCommand(b, f.Command)
	esc := f.Command != frame.CONNECTED
	hasLen := false
	for i := 0; i < f.Header.Len(); i++ {
		k, val := f.Header.GetAt(i)
		if k == frame.ContentLength {
			hasLen = true
		}
		b = appendHeader(b, k, val, v, esc)
	}
	if !hasLen && len(f.Body) > 0 {
		b = AppendHeader(b, frame.ContentLength, strconv.Itoa(len(f.Body)), v)
	}
	return AppendBody(b, f.Body)
}

// AppendCommand starts a frame.
func AppendCommand(b []byte, cmd string) []byte {
	b = append(b, cmd...)
	return append(b, '\n')
}

// AppendHeader appends one escaped header line.
func AppendHeader(b []byte, k, val string, v Version) []byte {
	return appendHeader(b, k, val, v, true)
}

func appendHeader(b []byte, k, val string, v Version, esc bool) []byte {
	if esc && v != V10 {
		b = appendEscaped(b, k, v)
		b = append(b, ':')
		b = appendEscaped(b, val, v)
	} else {
		b = append(b, k...)
		b = append(b, ':')
		b = append(b, val...)
	}
	return append(b, '\n')
}

// AppendBody ends the header section, appends the body and the NUL that ends the frame.
func AppendBody(b []byte, body []byte) []byte {
	b = append(b, '\n')
	b = append(b, body...)
	return append(b, 0)
}

// AppendHeartbeat appends a heart-beat (one EOL).
func AppendHeartbeat(b []byte) []byte { return append(b, '\n') }

func appendEscaped(b []byte, s string, v Version) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '\n':
			b = append(b, '\\', 'n')
		case ':':
			b = append(b, '\\', 'c')
		case '\r':
			if v >= V12 {
				b = append(b, '\\', 'r')
			} else {
				b = append(b, c)
			}
		default:
			b = append(b, c)
		}
	}
	return b
}
