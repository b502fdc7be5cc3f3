package message

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"time"
)

// The binary encoding of a message, for the log and for snapshots. Numbers are uvarints
// unless said otherwise; strings and byte strings are a uvarint length and the bytes; signed
// numbers are zig-zag varints:
//
//	message: exchange routing-key flags(uint16 BE) present properties in flag order, headers as a table, body
//	table:   n, then per key (sorted) key value; value: RabbitMQ's field-table type byte, then its encoding
//
// Values by type byte: 't' one byte 0/1; 'b' 's' 'I' 'l' signed varint; 'B' 'u' 'i' uvarint;
// 'f' 'd' float64 bits (uint64 BE, a float32 widened exactly); 'D' scale byte, signed varint;
// 'S' 'x' string; 'A' n, then n values; 'T' signed varint of Unix seconds; 'F' table; 'V' nothing.
//
// Keys are sorted so the same message always encodes to the same bytes. The encoding is
// stored (log entries, snapshots): change it only with a new snapshot or entry version.

var (
	// ErrUnsupportedValue: a header value of a Go type the encoding does not know (one not
	// listed on Table).
	ErrUnsupportedValue = errors.New("message: unsupported header value")
	// ErrCorrupt: bytes that are not a message's encoding.
	ErrCorrupt = errors.New("message: corrupt encoding")
)

// AppendBinary appends m's encoding to dst.
func AppendBinary(dst []byte, m *Message) ([]byte, error) {
	w := binWriter{b: dst}
	w.message(m)
	if w.err != nil {
		return dst, w.err
	}
	return w.b, nil
}

// DecodeBinary decodes one message from the front of b and returns the bytes after it. The
// message's Body aliases b (no copy: a log replay decodes every message once): the caller owns
// b and must never modify or reuse it while the message lives. Strings and byte-string header
// values are copies. Malformed input gives an error wrapping ErrCorrupt, never a panic, and
// allocates at most a small multiple of len(b).
func DecodeBinary(b []byte) (*Message, []byte, error) {
	r := BinaryReader{b: b}
	m := r.message()
	if r.err != nil {
		return nil, nil, r.err
	}
	return m, r.b, nil
}

type binWriter struct {
	b   []byte
	err error
}

func (w *binWriter) uint(v uint64)  { w.b = binary.AppendUvarint(w.b, v) }
func (w *binWriter) int(v int64)    { w.b = binary.AppendVarint(w.b, v) }
func (w *binWriter) str(s string)   { w.uint(uint64(len(s))); w.b = append(w.b, s...) }
func (w *binWriter) bytes(s []byte) { w.uint(uint64(len(s))); w.b = append(w.b, s...) }
func (w *binWriter) u8(v uint8)     { w.b = append(w.b, v) }
func (w *binWriter) u16(v uint16)   { w.b = binary.BigEndian.AppendUint16(w.b, v) }
func (w *binWriter) f64(v float64)  { w.b = binary.BigEndian.AppendUint64(w.b, math.Float64bits(v)) }
func (w *binWriter) bool(v bool) {
	if v {
		w.u8(1)
	} else {
		w.u8(0)
	}
}

// BinaryReader reads the primitives of Parley's binary encodings (the message encoding here,
// the queue snapshot built on it): uvarint and varint numbers, length-prefixed strings,
// fixed-width big-endian values and embedded messages. It fails once: the first truncated or
// corrupt field sets Err (wrapping ErrCorrupt) and every later read returns zero, so a decoder
// reads straight through and checks Err at the end. Lengths are bounded by the bytes left, so
// corrupt input cannot make a decoder allocate or loop without end.
type BinaryReader struct {
	b   []byte
	err error
}

// NewBinaryReader reads b, which it aliases: byte slices it returns (Raw) point into b.
func NewBinaryReader(b []byte) *BinaryReader { return &BinaryReader{b: b} }

// Err is the first failure, or nil.
func (r *BinaryReader) Err() error { return r.err }

// Len is how many bytes are left.
func (r *BinaryReader) Len() int { return len(r.b) }

// Message reads a message encoded by AppendBinary, with DecodeBinary's aliasing rules.
func (r *BinaryReader) Message() *Message { return r.message() }

// Fail records that what was truncated or corrupt (the first failure wins) and stops reading.
func (r *BinaryReader) Fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated or corrupt %s", ErrCorrupt, what)
	}
	r.b = nil
}

// Uint reads a uvarint.
func (r *BinaryReader) Uint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.Fail("number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Int reads a varint.
func (r *BinaryReader) Int() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.Fail("number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Count reads a length and bounds it by the bytes left, so corrupt input cannot make the
// decoder allocate or loop without end.
func (r *BinaryReader) Count() int {
	n := r.Uint()
	if n > uint64(len(r.b)) {
		r.Fail("count")
		return 0
	}
	return int(n)
}

// Raw reads n bytes, aliasing the input.
func (r *BinaryReader) Raw(n int) []byte {
	if n > len(r.b) {
		r.Fail("string")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// Str reads a length-prefixed string (a copy).
func (r *BinaryReader) Str() string { return string(r.Raw(r.Count())) }

// Bytes reads a length-prefixed byte string (a copy).
func (r *BinaryReader) Bytes() []byte { return slices.Clone(r.Raw(r.Count())) }

// U8 reads one byte.
func (r *BinaryReader) U8() uint8 {
	b := r.Raw(1)
	if b == nil {
		return 0
	}
	return b[0]
}

// U16 reads a big-endian uint16.
func (r *BinaryReader) U16() uint16 {
	b := r.Raw(2)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

// F64 reads a big-endian float64.
func (r *BinaryReader) F64() float64 {
	b := r.Raw(8)
	if b == nil {
		return 0
	}
	return math.Float64frombits(binary.BigEndian.Uint64(b))
}

func (w *binWriter) message(m *Message) {
	w.str(m.Exchange)
	w.str(m.RoutingKey)
	p := &m.Properties
	w.u16(p.Flags)
	if p.Flags&FlagContentType != 0 {
		w.str(p.ContentType)
	}
	if p.Flags&FlagContentEncoding != 0 {
		w.str(p.ContentEncoding)
	}
	if p.Flags&FlagHeaders != 0 {
		w.table(p.Headers)
	}
	if p.Flags&FlagDeliveryMode != 0 {
		w.u8(p.DeliveryMode)
	}
	if p.Flags&FlagPriority != 0 {
		w.u8(p.Priority)
	}
	if p.Flags&FlagCorrelationID != 0 {
		w.str(p.CorrelationID)
	}
	if p.Flags&FlagReplyTo != 0 {
		w.str(p.ReplyTo)
	}
	if p.Flags&FlagExpiration != 0 {
		w.str(p.Expiration)
	}
	if p.Flags&FlagMessageID != 0 {
		w.str(p.MessageID)
	}
	if p.Flags&FlagTimestamp != 0 {
		w.int(p.Timestamp)
	}
	if p.Flags&FlagType != 0 {
		w.str(p.Type)
	}
	if p.Flags&FlagUserID != 0 {
		w.str(p.UserID)
	}
	if p.Flags&FlagAppID != 0 {
		w.str(p.AppID)
	}
	w.bytes(m.Body)
}

// Value type tags: RabbitMQ's field-table codes, so a snapshot is readable with the spec.
func (w *binWriter) table(t Table) {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	w.uint(uint64(len(keys)))
	for _, k := range keys {
		w.str(k)
		w.value(t[k])
	}
}

func (w *binWriter) value(v any) {
	switch x := v.(type) {
	case bool:
		w.u8('t')
		w.bool(x)
	case int8:
		w.u8('b')
		w.int(int64(x))
	case uint8:
		w.u8('B')
		w.uint(uint64(x))
	case int16:
		w.u8('s')
		w.int(int64(x))
	case uint16:
		w.u8('u')
		w.uint(uint64(x))
	case int32:
		w.u8('I')
		w.int(int64(x))
	case uint32:
		w.u8('i')
		w.uint(uint64(x))
	case int64:
		w.u8('l')
		w.int(x)
	case float32:
		w.u8('f')
		w.f64(float64(x))
	case float64:
		w.u8('d')
		w.f64(x)
	case string:
		w.u8('S')
		w.str(x)
	case []byte:
		w.u8('x')
		w.bytes(x)
	case []any:
		w.u8('A')
		w.uint(uint64(len(x)))
		for _, e := range x {
			w.value(e)
		}
	case time.Time:
		w.u8('T')
		w.int(x.Unix())
	case Table:
		w.u8('F')
		w.table(x)
	case Decimal:
		w.decimal(x)
	case nil:
		w.u8('V')
	default:
		if d, ok := decimalOf(v); ok {
			w.decimal(d)
			return
		}
		if w.err == nil {
			w.err = fmt.Errorf("%w: %T", ErrUnsupportedValue, v)
		}
		w.u8('V')
	}
}

func (w *binWriter) decimal(d Decimal) {
	w.u8('D')
	w.u8(d.Scale)
	w.int(int64(d.Value))
}

// decimalOf recognises another package's decimal type: a struct with exactly the fields
// Scale uint8 and Value int32, in that order (the AMQP codec's; broker must not import it).
func decimalOf(v any) (Decimal, bool) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Struct || rv.NumField() != 2 {
		return Decimal{}, false
	}
	t := rv.Type()
	s, val := t.Field(0), t.Field(1)
	if s.Name != "Scale" || s.Type.Kind() != reflect.Uint8 || val.Name != "Value" || val.Type.Kind() != reflect.Int32 {
		return Decimal{}, false
	}
	return Decimal{Scale: uint8(rv.Field(0).Uint()), Value: int32(rv.Field(1).Int())}, true
}

func (r *BinaryReader) message() *Message {
	m := &Message{Exchange: r.Str(), RoutingKey: r.Str()}
	p := &m.Properties
	p.Flags = r.U16()
	if p.Flags&FlagContentType != 0 {
		p.ContentType = r.Str()
	}
	if p.Flags&FlagContentEncoding != 0 {
		p.ContentEncoding = r.Str()
	}
	if p.Flags&FlagHeaders != 0 {
		p.Headers = r.table(0)
	}
	if p.Flags&FlagDeliveryMode != 0 {
		p.DeliveryMode = r.U8()
	}
	if p.Flags&FlagPriority != 0 {
		p.Priority = r.U8()
	}
	if p.Flags&FlagCorrelationID != 0 {
		p.CorrelationID = r.Str()
	}
	if p.Flags&FlagReplyTo != 0 {
		p.ReplyTo = r.Str()
	}
	if p.Flags&FlagExpiration != 0 {
		p.Expiration = r.Str()
	}
	if p.Flags&FlagMessageID != 0 {
		p.MessageID = r.Str()
	}
	if p.Flags&FlagTimestamp != 0 {
		p.Timestamp = r.Int()
	}
	if p.Flags&FlagType != 0 {
		p.Type = r.Str()
	}
	if p.Flags&FlagUserID != 0 {
		p.UserID = r.Str()
	}
	if p.Flags&FlagAppID != 0 {
		p.AppID = r.Str()
	}
	if n := r.Count(); n > 0 {
		m.Body = r.Raw(n)
	}
	return m
}

// maxDepth bounds nesting of tables and arrays in corrupt input.
const maxDepth = 64

// maxPresize bounds the room made ahead for a table's or an array's elements: a corrupt count
// is bounded only by the bytes left, and every nesting level could claim it again.
const maxPresize = 64

func (r *BinaryReader) table(depth int) Table {
	n := r.Count()
	t := make(Table, min(n, maxPresize))
	for ; n > 0 && r.err == nil; n-- {
		k := r.Str()
		t[k] = r.value(depth + 1)
	}
	return t
}

func (r *BinaryReader) value(depth int) any {
	if depth > maxDepth {
		r.Fail("nesting")
		return nil
	}
	switch tag := r.U8(); tag {
	case 't':
		return r.U8() != 0
	case 'b':
		return int8(r.Int())
	case 'B':
		return uint8(r.Uint())
	case 's':
		return int16(r.Int())
	case 'u':
		return uint16(r.Uint())
	case 'I':
		return int32(r.Int())
	case 'i':
		return uint32(r.Uint())
	case 'l':
		return r.Int()
	case 'f':
		return float32(r.F64())
	case 'd':
		return r.F64()
	case 'S':
		return r.Str()
	case 'x':
		return r.Bytes()
	case 'A':
		n := r.Count()
		a := make([]any, 0, min(n, maxPresize))
		for ; n > 0 && r.err == nil; n-- {
			a = append(a, r.value(depth+1))
		}
		return a
	case 'D':
		return Decimal{Scale: r.U8(), Value: int32(r.Int())}
	case 'T':
		return time.Unix(r.Int(), 0).UTC()
	case 'F':
		return r.table(depth)
	case 'V':
		return nil
	default:
		r.Fail("value type")
		return nil
	}
}
