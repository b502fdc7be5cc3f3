package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/go-stomp/stomp/v3/frame"
)

// Version is a STOMP protocol version; it decides header escaping.
type Version uint8

// The versions Parley speaks.
const (
	V10 Version = iota
	V11
	V12
)

func (v Version) String() string {
	switch v {
	case V10:
		return "1.0"
	case V11:
		return "1.1"
	case V12:
		return "1.2"
	}
	return "unknown"
}

// Limits bound what a reader accepts. A zero field takes its default.
type Limits struct {
	// MaxHeaderBytes bounds the command line plus all header lines of one frame, in bytes.
	// Default 102400 (RabbitMQ's STOMP max_header_length).
	MaxHeaderBytes int
	// MaxHeaders bounds the number of header lines of one frame. Default 1000 (RabbitMQ's
	// max_headers).
	MaxHeaders int
	// MaxBody bounds one frame's body in bytes. Default 134217728 (128 MiB, the AMQP
	// listener's max_message_size, so a message accepted over one protocol fits the others).
	MaxBody int
}

// DefaultLimits returns the defaults documented on each Limits field.
func DefaultLimits() Limits {
	return Limits{MaxHeaderBytes: 102400, MaxHeaders: 1000, MaxBody: 128 << 20}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = d.MaxHeaders
	}
	if l.MaxBody <= 0 {
		l.MaxBody = d.MaxBody
	}
	return l
}

// Sentinel errors. Every error the reader returns for bad input wraps ErrBadFrame and one of
// these, with a message fit for an ERROR frame's body; I/O errors are returned as they come.
var (
	ErrBadFrame          = errors.New("malformed frame")
	ErrHeaderTooLarge    = errors.New("headers too large")
	ErrTooManyHeaders    = errors.New("too many headers")
	ErrBodyTooLarge      = errors.New("body too large")
	ErrBadEscape         = errors.New("bad header escape")
	ErrBadHeader         = errors.New("bad header line")
	ErrBadCommand        = errors.New("bad command line")
	ErrBadContentLength  = errors.New("bad content-length")
	ErrContentLengthLies = errors.New("content-length does not match the body")
)

// FrameError is a malformed frame: Kind is one of the sentinel errors, Detail says what was
// wrong in words a client can act on.
type FrameError struct {
	Kind   error
	Detail string
}

func (e *FrameError) Error() string { return e.Detail }

// Unwrap lets errors.Is find both ErrBadFrame and the kind.
func (e *FrameError) Unwrap() []error { return []error{ErrBadFrame, e.Kind} }

func bad(kind error, format string, args ...any) error {
	return &FrameError{Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

// Reader reads frames from a byte stream. It is not safe for concurrent use.
type Reader struct {
	r       *bufio.Reader
	lim     Limits
	version Version
	line    []byte   // scratch for lines longer than the bufio buffer
	entries []string // scratch: a frame's header names and values, copied into one Header
}

// NewReader reads frames from r with the given limits. Until SetVersion it escapes headers as
// STOMP 1.0 does (not at all), which is right for the CONNECT frame of every version.
func NewReader(r io.Reader, lim Limits) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 16<<10), lim: lim.withDefaults()}
}

// SetVersion sets the negotiated version, which decides header unescaping.
func (r *Reader) SetVersion(v Version) { r.version = v }

// Read returns the next frame. A heart-beat (an EOL between frames, STOMP 1.2 §Heart-beating)
// is returned as (nil, nil). io.EOF means the peer closed between frames; a close inside a
// frame is io.ErrUnexpectedEOF.
func (r *Reader) Read() (*frame.Frame, error) {
	// Heart-beats and the optional EOLs after a frame's NUL (STOMP 1.2 §Augmented BNF: frame
	// = command EOL *(header EOL) EOL *OCTET NULL *(EOL)).
	c, err := r.r.ReadByte()
	if err != nil {
		return nil, err
	}
	switch c {
	case '\n':
		return nil, nil
	case '\r':
		c2, err := r.r.ReadByte()
		if err != nil {
			return nil, eofInFrame(err)
		}
		if c2 != '\n' {
			return nil, bad(ErrBadCommand, "a CR must be followed by LF")
		}
		return nil, nil
	}
	if err := r.r.UnreadByte(); err != nil {
		return nil, err
	}
	budget := r.lim.MaxHeaderBytes
	cmdLine, err := r.readLine(&budget)
	if err != nil {
		return nil, err
	}
	if err := checkCommand(cmdLine); err != nil {
		return nil, err
	}
	f := &frame.Frame{Command: internCommand(cmdLine)}
	r.entries = r.entries[:0]
	// CONNECT and CONNECTED frames are never escaped, so that 1.0 clients can read them
	// (STOMP 1.2 §Value Encoding).
	escaped := r.version != V10 && f.Command != frame.CONNECT && f.Command != frame.CONNECTED && f.Command != frame.STOMP
	n := 0
	for {
		line, err := r.readLine(&budget)
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			break
		}
		n++
		if n > r.lim.MaxHeaders {
			return nil, bad(ErrTooManyHeaders, "frame has more than %d headers", r.lim.MaxHeaders)
		}
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			return nil, bad(ErrBadHeader, "header line without a colon: %q", truncate(line))
		}
		k, v := line[:i], line[i+1:]
		if len(k) == 0 {
			return nil, bad(ErrBadHeader, "header line with an empty name: %q", truncate(line))
		}
		if r.version == V10 {
			// RabbitMQ trims leading white space of 1.0 header values.
			v = bytes.TrimLeft(v, " \t")
		}
		var ks, vs string
		if escaped && bytes.IndexByte(k, '\\') >= 0 {
			if ks, err = unescape(k, r.version); err != nil {
				return nil, err
			}
		} else {
			ks = internName(k)
		}
		if escaped {
			if vs, err = unescape(v, r.version); err != nil {
				return nil, err
			}
		} else {
			vs = string(v)
		}
		r.entries = append(r.entries, ks, vs)
	}
	// One allocation of the exact size for every header.
	f.Header = frame.NewHeader(r.entries...)
	clear(r.entries)
	body, err := r.readBody(f.Header)
	if err != nil {
		return nil, err
	}
	f.Body = body
	return f, nil
}

// readLine reads one EOL-terminated line (LF or CRLF) without its EOL, charging it to budget.
func (r *Reader) readLine(budget *int) ([]byte, error) {
	r.line = r.line[:0]
	for {
		chunk, err := r.r.ReadSlice('\n')
		*budget -= len(chunk)
		if *budget < 0 {
			return nil, bad(ErrHeaderTooLarge, "command and headers exceed %d bytes", r.lim.MaxHeaderBytes)
		}
		if err == nil {
			var line []byte
			if len(r.line) == 0 {
				line = chunk
			} else {
				r.line = append(r.line, chunk...)
				line = r.line
			}
			line = line[:len(line)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, eofInFrame(err)
		}
		r.line = append(r.line, chunk...)
	}
}

func (r *Reader) readBody(h *frame.Header) ([]byte, error) {
	if cl, ok := h.Contains(frame.ContentLength); ok {
		n, err := strconv.Atoi(cl)
		if err != nil || n < 0 {
			return nil, bad(ErrBadContentLength, "content-length %q is not a non-negative integer", truncate([]byte(cl)))
		}
		if n > r.lim.MaxBody {
			return nil, bad(ErrBodyTooLarge, "content-length %d exceeds the maximum body size of %d bytes", n, r.lim.MaxBody)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r.r, body); err != nil {
			return nil, eofInFrame(err)
		}
		c, err := r.r.ReadByte()
		if err != nil {
			return nil, eofInFrame(err)
		}
		if c != 0 {
			return nil, bad(ErrContentLengthLies, "content-length %d is not followed by a NUL octet", n)
		}
		return body, nil
	}
	var body []byte
	for {
		chunk, err := r.r.ReadSlice(0)
		if len(body)+len(chunk) > r.lim.MaxBody+1 {
			return nil, bad(ErrBodyTooLarge, "body exceeds the maximum body size of %d bytes", r.lim.MaxBody)
		}
		if err == nil {
			if body == nil {
				// The common case: the whole body was in the buffer; one copy.
				return append([]byte(nil), chunk[:len(chunk)-1]...), nil
			}
			body = append(body, chunk[:len(chunk)-1]...)
			return body, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, eofInFrame(err)
		}
		body = append(body, chunk...)
	}
}

func eofInFrame(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// checkCommand accepts a command of ASCII letters; which commands mean something is the
// session's business (it answers unknown ones with an ERROR frame naming them).
func checkCommand(b []byte) error {
	if len(b) == 0 || len(b) > 32 {
		return bad(ErrBadCommand, "bad command line %q", truncate(b))
	}
	for _, c := range b {
		if c < 'A' || c > 'Z' {
			return bad(ErrBadCommand, "bad command line %q", truncate(b))
		}
	}
	return nil
}

// unescape decodes a 1.1/1.2 header name or value (STOMP 1.2 §Value Encoding): \r (1.2 only),
// \n, \c and \\; any other escape is a fatal protocol error.
func unescape(b []byte, v Version) (string, error) {
	i := bytes.IndexByte(b, '\\')
	if i < 0 {
		return string(b), nil
	}
	out := make([]byte, 0, len(b))
	out = append(out, b[:i]...)
	for ; i < len(b); i++ {
		c := b[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i == len(b) {
			return "", bad(ErrBadEscape, "header ends in a lone backslash: %q", truncate(b))
		}
		switch b[i] {
		case 'n':
			out = append(out, '\n')
		case 'c':
			out = append(out, ':')
		case '\\':
			out = append(out, '\\')
		case 'r':
			if v < V12 {
				return "", bad(ErrBadEscape, "undefined escape \\r in STOMP %s header: %q", v, truncate(b))
			}
			out = append(out, '\r')
		default:
			return "", bad(ErrBadEscape, "undefined escape \\%c in header: %q", b[i], truncate(b))
		}
	}
	return string(out), nil
}

// internCommand returns the command without allocating for the commands STOMP defines.
func internCommand(b []byte) string {
	switch string(b) {
	case frame.SEND:
		return frame.SEND
	case frame.MESSAGE:
		return frame.MESSAGE
	case frame.ACK:
		return frame.ACK
	case frame.NACK:
		return frame.NACK
	case frame.SUBSCRIBE:
		return frame.SUBSCRIBE
	case frame.UNSUBSCRIBE:
		return frame.UNSUBSCRIBE
	case frame.RECEIPT:
		return frame.RECEIPT
	case frame.CONNECT:
		return frame.CONNECT
	case frame.STOMP:
		return frame.STOMP
	case frame.CONNECTED:
		return frame.CONNECTED
	case frame.BEGIN:
		return frame.BEGIN
	case frame.COMMIT:
		return frame.COMMIT
	case frame.ABORT:
		return frame.ABORT
	case frame.DISCONNECT:
		return frame.DISCONNECT
	case frame.ERROR:
		return frame.ERROR
	}
	return string(b)
}

// internName returns the common header names without allocating (the compiler does not copy
// b for a switch on string(b)); others are copied.
func internName(b []byte) string {
	switch string(b) {
	case "destination":
		return "destination"
	case "content-length":
		return "content-length"
	case "content-type":
		return "content-type"
	case "receipt":
		return "receipt"
	case "id":
		return "id"
	case "ack":
		return "ack"
	case "subscription":
		return "subscription"
	case "message-id":
		return "message-id"
	case "transaction":
		return "transaction"
	case "persistent":
		return "persistent"
	case "redelivered":
		return "redelivered"
	case "reply-to":
		return "reply-to"
	case "correlation-id":
		return "correlation-id"
	case "priority":
		return "priority"
	case "expiration":
		return "expiration"
	}
	return string(b)
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}
