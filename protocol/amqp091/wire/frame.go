package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame types and limits. AMQP 0-9-1 §4.2.3 and the spec's constants.
const (
	FrameMethod    = 1
	FrameHeader    = 2
	FrameBody      = 3
	FrameHeartbeat = 8
	FrameEnd       = 0xCE
	FrameMinSize   = 4096 // AMQP 0-9-1 §4.2.1: frame_max lower bound
)

// MaxFrameSize is the hard cap on a frame (payload + 8 octets of framing) that a Reader accepts
// even when no frame-max was negotiated, and the largest body frame AppendContent writes when
// given frameMax 0.
const MaxFrameSize = 128 << 20

// frameOverhead is the octets of a frame that are not payload: type, channel, size, frame-end.
const frameOverhead = 8

// ProtocolHeader is the protocol header a client sends first, and what a server answers with
// before closing when it does not support the client's version. AMQP 0-9-1 §4.2.2.
var ProtocolHeader = []byte("AMQP\x00\x00\x09\x01")

// Frame is one frame; Payload aliases the Reader's buffer and is valid until the next ReadFrame.
type Frame struct {
	Type    uint8
	Channel uint16
	Payload []byte
}

// readerBufSize is the bufio buffer size: frames up to this size are returned straight from
// bufio's buffer without a copy.
const readerBufSize = 64 << 10

// Reader reads frames from a connection. It is buffered, reuses its buffer and allocates nothing
// per frame in steady state. A Reader is not safe for concurrent use.
type Reader struct {
	br       *bufio.Reader
	frameMax uint32
	buf      []byte // payload buffer for frames larger than the bufio buffer
}

// NewReader returns a Reader over r. frameMax is the negotiated frame-max (payload + 8); 0 means
// no limit other than the hard MaxFrameSize cap.
func NewReader(r io.Reader, frameMax uint32) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, readerBufSize), frameMax: frameMax}
}

// HasFrame reports whether a whole frame is buffered, so that the next ReadFrame returns
// without reading from the connection (and so without waiting for the peer).
func (r *Reader) HasFrame() bool {
	n := r.br.Buffered()
	if n < frameOverhead {
		return false
	}
	hdr, _ := r.br.Peek(7) // buffered: no read
	return uint64(n) >= uint64(binary.BigEndian.Uint32(hdr[3:7]))+frameOverhead
}

// SetFrameMax changes the limit after connection.tune-ok. 0 means MaxFrameSize.
func (r *Reader) SetFrameMax(n uint32) { r.frameMax = n }

// ReadProtocolHeader reads the first 8 octets of a connection. The caller compares them with
// ProtocolHeader; RabbitMQ answers anything else with its own header and closes.
func (r *Reader) ReadProtocolHeader() ([8]byte, error) {
	var h [8]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return h, fmt.Errorf("read protocol header: %w", err)
	}
	return h, nil
}

// ReadFrame reads the next frame. AMQP 0-9-1 §4.2.3: type (1), channel (2), size (4), payload,
// frame-end (1). The size is checked against frame-max before anything is allocated.
func (r *Reader) ReadFrame() (Frame, error) {
	hdr, err := r.br.Peek(7)
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			err = io.ErrUnexpectedEOF
		}
		if len(hdr) > 0 && err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("read frame header: %w", err)
	}
	f := Frame{Type: hdr[0], Channel: binary.BigEndian.Uint16(hdr[1:3])}
	size := binary.BigEndian.Uint32(hdr[3:7])
	switch f.Type {
	case FrameMethod, FrameHeader, FrameBody, FrameHeartbeat:
	default:
		return Frame{}, &FrameError{Type: f.Type, Channel: f.Channel, Err: ErrUnknownFrameType}
	}
	limit := uint64(MaxFrameSize)
	if r.frameMax != 0 && uint64(r.frameMax) < limit {
		limit = uint64(r.frameMax)
	}
	if uint64(size)+frameOverhead > limit {
		return Frame{}, &FrameError{Type: f.Type, Channel: f.Channel, Size: size,
			Limit: uint32(limit - frameOverhead), Err: ErrFrameTooLarge}
	}
	if _, err := r.br.Discard(7); err != nil {
		return Frame{}, fmt.Errorf("read frame header: %w", err)
	}
	n := int(size) + 1 // payload and frame-end
	var whole []byte
	if n <= r.br.Size() {
		// Fast path: the frame fits in bufio's buffer; hand out a view of it. It stays valid
		// until the next read refills the buffer, that is, until the next ReadFrame.
		whole, err = r.br.Peek(n)
		if err != nil {
			return Frame{}, fmt.Errorf("read frame payload: %w", noEOF(err))
		}
		_, _ = r.br.Discard(n) // cannot fail: n octets are buffered
	} else {
		if cap(r.buf) < n {
			r.buf = make([]byte, n)
		}
		whole = r.buf[:n]
		if _, err := io.ReadFull(r.br, whole); err != nil {
			return Frame{}, fmt.Errorf("read frame payload: %w", noEOF(err))
		}
	}
	if whole[size] != FrameEnd {
		return Frame{}, &FrameError{Type: f.Type, Channel: f.Channel, Size: size,
			Payload: bytes.Clone(whole[:size]), End: whole[size], Err: ErrBadFrameEnd}
	}
	f.Payload = whole[:size:size]
	return f, nil
}

// noEOF turns an EOF inside a frame into ErrUnexpectedEOF: the peer went away mid-frame.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendFrameStart appends type, channel and a size placeholder and returns the offset of the
// size field for finishFrame.
func appendFrameStart(dst []byte, typ uint8, channel uint16) ([]byte, int) {
	dst = append(dst, typ)
	dst = appendShort(dst, channel)
	at := len(dst)
	return appendLong(dst, 0), at
}

func finishFrame(dst []byte, sizeAt int) []byte {
	binary.BigEndian.PutUint32(dst[sizeAt:], uint32(len(dst)-sizeAt-4))
	return append(dst, FrameEnd)
}

// AppendMethodFrame appends a whole method frame: type, channel, size, class-id, method-id,
// arguments, frame-end. AMQP 0-9-1 §4.2.4.
func AppendMethodFrame(dst []byte, channel uint16, m Method) []byte {
	dst, at := appendFrameStart(dst, FrameMethod, channel)
	dst = m.Append(dst)
	return finishFrame(dst, at)
}

// AppendHeartbeat appends a heartbeat frame: always channel 0, empty payload. AMQP 0-9-1 §4.2.7.
func AppendHeartbeat(dst []byte) []byte {
	return append(dst, FrameHeartbeat, 0, 0, 0, 0, 0, 0, FrameEnd)
}

// AppendHeaderFrame appends a content header frame. AMQP 0-9-1 §4.2.6.1: class-id, weight (0),
// body size, property flags, properties.
func AppendHeaderFrame(dst []byte, channel uint16, classID uint16, bodySize uint64, p *Properties) []byte {
	dst, at := appendFrameStart(dst, FrameHeader, channel)
	dst = appendShort(dst, classID)
	dst = appendShort(dst, 0)
	dst = appendLonglong(dst, bodySize)
	dst = appendProperties(dst, p)
	return finishFrame(dst, at)
}

// AppendContent appends the method frame, the header frame and the body split into body frames
// of at most frameMax-8 octets of payload. frameMax 0 means unlimited, which is capped at
// MaxFrameSize so that a Reader can read what was written. An empty body sends no body frame
// (AMQP 0-9-1 §4.2.6.2, and what RabbitMQ does).
func AppendContent(dst []byte, channel uint16, m Method, p *Properties, body []byte, frameMax uint32) []byte {
	dst = AppendMethodFrame(dst, channel, m)
	dst = AppendHeaderFrame(dst, channel, m.ClassID(), uint64(len(body)), p)
	chunk := MaxFrameSize - frameOverhead
	if frameMax > frameOverhead && int(frameMax)-frameOverhead < chunk {
		chunk = int(frameMax) - frameOverhead
	}
	for len(body) > 0 {
		n := min(len(body), chunk)
		dst = append(dst, FrameBody)
		dst = appendShort(dst, channel)
		dst = appendLong(dst, uint32(n))
		dst = append(dst, body[:n]...)
		dst = append(dst, FrameEnd)
		body = body[n:]
	}
	return dst
}

// FrameError is a framing error with what RabbitMQ reports of it: the frame's type, the
// payload octets read (for a bad frame end), and for an oversized frame its payload size and the
// largest payload allowed (frame-max minus the 8 octets of framing). It wraps ErrFrameTooLarge,
// ErrBadFrameEnd or ErrUnknownFrameType.
type FrameError struct {
	Type    uint8
	Channel uint16
	Size    uint32
	Limit   uint32
	Payload []byte
	End     byte
	Err     error
}

func (e *FrameError) Error() string {
	switch e.Err {
	case ErrFrameTooLarge:
		return fmt.Sprintf("frame type %d on channel %d: payload of %d octets over the limit of %d: %v",
			e.Type, e.Channel, e.Size, e.Limit, e.Err)
	case ErrBadFrameEnd:
		return fmt.Sprintf("frame type %d on channel %d ends with 0x%02x: %v", e.Type, e.Channel, e.End, e.Err)
	}
	return fmt.Sprintf("frame type %d on channel %d: %v", e.Type, e.Channel, e.Err)
}

func (e *FrameError) Unwrap() error { return e.Err }
