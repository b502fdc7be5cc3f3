package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sentinel errors. Callers test them with errors.Is; the returned errors wrap them with context
// (the method name, the class and method ids, the offending size).
var (
	// ErrFrameTooLarge: a frame's size field plus the 8 octets of framing exceeds the negotiated
	// frame-max (or the hard cap). Detected before any allocation. RabbitMQ: 501 FRAME_ERROR.
	ErrFrameTooLarge = errors.New("amqp091: frame too large")
	// ErrBadFrameEnd: the octet after a frame's payload is not frame-end (0xCE).
	// AMQP 0-9-1 §4.2.3; RabbitMQ: 501 FRAME_ERROR.
	ErrBadFrameEnd = errors.New("amqp091: frame-end octet is not 0xCE")
	// ErrUnknownFrameType: a frame type other than method, header, body or heartbeat.
	// RabbitMQ: 501 FRAME_ERROR.
	ErrUnknownFrameType = errors.New("amqp091: unknown frame type")
	// ErrUnknownMethod: a class-id/method-id pair the spec does not define. RabbitMQ answers an
	// unknown class or method with 540 NOT_IMPLEMENTED or 503 COMMAND_INVALID.
	ErrUnknownMethod = errors.New("amqp091: unknown method")
	// ErrSyntax: truncated, malformed or over-long arguments, properties or field tables.
	// RabbitMQ: 502 SYNTAX_ERROR (or 501 FRAME_ERROR for a frame it cannot parse at all).
	ErrSyntax = errors.New("amqp091: syntax error")
	// ErrUnsupportedType: AppendTable was given a Go value with no field-table type code.
	ErrUnsupportedType = errors.New("amqp091: unsupported field-table value type")
)

// maxShortstr is the longest short string: its length is one octet. AMQP 0-9-1 §4.2.5.3.
const maxShortstr = 255

// internMax bounds a Decoder's string intern table; when it fills up it is emptied, so the
// table follows the connection's current working set of names. At most 1024 strings of at most
// 255 octets: a bounded cost per connection even for a client that never repeats a name.
const internMax = 1024

// parser reads AMQP 0-9-1 primitive types from a byte slice. It never panics: the first short
// read sets bad and every later read returns zero values, so generated code can read all fields
// and check once at the end.
type parser struct {
	b   []byte
	bad bool
	// intern, when non-nil, deduplicates short strings (exchange names, routing keys, consumer
	// tags) so that a Decoder's steady state allocates nothing for them.
	intern map[string]string
}

func (p *parser) take(n int) []byte {
	if p.bad || n > len(p.b) || n < 0 {
		p.bad = true
		p.b = nil
		return nil
	}
	s := p.b[:n:n]
	p.b = p.b[n:]
	return s
}

func (p *parser) octet() uint8 {
	if p.bad || len(p.b) < 1 {
		p.bad = true
		return 0
	}
	v := p.b[0]
	p.b = p.b[1:]
	return v
}

func (p *parser) short() uint16 {
	if p.bad || len(p.b) < 2 {
		p.bad = true
		return 0
	}
	v := binary.BigEndian.Uint16(p.b)
	p.b = p.b[2:]
	return v
}

func (p *parser) long() uint32 {
	if p.bad || len(p.b) < 4 {
		p.bad = true
		return 0
	}
	v := binary.BigEndian.Uint32(p.b)
	p.b = p.b[4:]
	return v
}

func (p *parser) longlong() uint64 {
	if p.bad || len(p.b) < 8 {
		p.bad = true
		return 0
	}
	v := binary.BigEndian.Uint64(p.b)
	p.b = p.b[8:]
	return v
}

// shortstrBytes returns the bytes of a short string, aliasing the input.
func (p *parser) shortstrBytes() []byte {
	n := p.octet()
	return p.take(int(n))
}

func (p *parser) shortstr() string {
	b := p.shortstrBytes()
	if len(b) == 0 {
		return ""
	}
	if p.intern == nil {
		return string(b)
	}
	// The map lookup with a converted []byte key does not allocate.
	if s, ok := p.intern[string(b)]; ok {
		return s
	}
	if len(p.intern) >= internMax {
		clear(p.intern)
	}
	s := string(b)
	p.intern[s] = s
	return s
}

// longstrBytes returns the bytes of a long string, aliasing the input. The length is checked
// against the remaining input before anything is sliced, so a 4 GB length in a short frame is
// a syntax error, not an allocation.
func (p *parser) longstrBytes() []byte {
	n := p.long()
	if p.bad || uint64(n) > uint64(len(p.b)) {
		p.bad = true
		return nil
	}
	return p.take(int(n))
}

func (p *parser) longstr() string {
	b := p.longstrBytes()
	if len(b) == 0 {
		return ""
	}
	return string(b)
}

// longbytes copies a long string into dst (reusing its capacity), so the result does not alias
// the frame buffer.
func (p *parser) longbytes(dst []byte) []byte {
	b := p.longstrBytes()
	if b == nil {
		if p.bad {
			return nil
		}
		return dst[:0]
	}
	return append(dst[:0], b...)
}

func (p *parser) table() Table {
	b := p.longstrBytes()
	if p.bad {
		return nil
	}
	t, err := readTableBody(b, 0)
	if err != nil {
		p.bad = true
		return nil
	}
	return t
}

// done reports whether every argument was present and nothing followed them.
func (p *parser) done(name string) error {
	if p.bad {
		return fmt.Errorf("%s: truncated or malformed arguments: %w", name, ErrSyntax)
	}
	if len(p.b) != 0 {
		return fmt.Errorf("%s: %d trailing octets after the arguments: %w", name, len(p.b), ErrSyntax)
	}
	return nil
}

func appendShort(dst []byte, v uint16) []byte {
	return binary.BigEndian.AppendUint16(dst, v)
}

func appendLong(dst []byte, v uint32) []byte {
	return binary.BigEndian.AppendUint32(dst, v)
}

func appendLonglong(dst []byte, v uint64) []byte {
	return binary.BigEndian.AppendUint64(dst, v)
}

// appendShortstr appends a short string. It cannot fail: a string longer than 255 octets is
// truncated to 255 so the frame stays well-formed; callers validate lengths beforehand
// (RabbitMQ never sends a longer one because it cannot).
func appendShortstr(dst []byte, s string) []byte {
	if len(s) > maxShortstr {
		s = s[:maxShortstr]
	}
	dst = append(dst, uint8(len(s)))
	return append(dst, s...)
}

func appendLongstr(dst []byte, s string) []byte {
	dst = appendLong(dst, uint32(len(s)))
	return append(dst, s...)
}

func appendLongbytes(dst []byte, b []byte) []byte {
	dst = appendLong(dst, uint32(len(b)))
	return append(dst, b...)
}

// appendTableLenient is used by Method.Append, which cannot fail: a value of an unsupported Go
// type is written as void ('V'). Use AppendTable first to reject such tables.
func appendTableLenient(dst []byte, t Table) []byte {
	out, err := appendTable(dst, t, true, 0)
	if err != nil {
		// Only reachable through nesting deeper than maxTableDepth: send an empty table rather
		// than a malformed frame.
		return appendLong(dst, 0)
	}
	return out
}
