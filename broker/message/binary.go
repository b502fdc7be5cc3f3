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
	r := binReader{b: b}
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

type binReader struct {
	b   []byte
	err error
}

func (r *binReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated or corrupt %s", ErrCorrupt, what)
	}
	r.b = nil
}

func (r *binReader) uint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *binReader) int() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a length and bounds it by the bytes left, so corrupt input cannot make the
// decoder allocate or loop without end.
func (r *binReader) count() int {
	n := r.uint()
	if n > uint64(len(r.b)) {
		r.fail("count")
		return 0
	}
	return int(n)
}

func (r *binReader) raw(n int) []byte {
	if n > len(r.b) {
		r.fail("string")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *binReader) str() string   { return string(r.raw(r.count())) }
func (r *binReader) bytes() []byte { return slices.Clone(r.raw(r.count())) }

func (r *binReader) u8() uint8 {
	b := r.raw(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *binReader) u16() uint16 {
	b := r.raw(2)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

func (r *binReader) f64() float64 {
	b := r.raw(8)
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

func (r *binReader) message() *Message {
	m := &Message{Exchange: r.str(), RoutingKey: r.str()}
	p := &m.Properties
	p.Flags = r.u16()
	if p.Flags&FlagContentType != 0 {
		p.ContentType = r.str()
	}
	if p.Flags&FlagContentEncoding != 0 {
		p.ContentEncoding = r.str()
	}
	if p.Flags&FlagHeaders != 0 {
		p.Headers = r.table(0)
	}
	if p.Flags&FlagDeliveryMode != 0 {
		p.DeliveryMode = r.u8()
	}
	if p.Flags&FlagPriority != 0 {
		p.Priority = r.u8()
	}
	if p.Flags&FlagCorrelationID != 0 {
		p.CorrelationID = r.str()
	}
	if p.Flags&FlagReplyTo != 0 {
		p.ReplyTo = r.str()
	}
	if p.Flags&FlagExpiration != 0 {
		p.Expiration = r.str()
	}
	if p.Flags&FlagMessageID != 0 {
		p.MessageID = r.str()
	}
	if p.Flags&FlagTimestamp != 0 {
		p.Timestamp = r.int()
	}
	if p.Flags&FlagType != 0 {
		p.Type = r.str()
	}
	if p.Flags&FlagUserID != 0 {
		p.UserID = r.str()
	}
	if p.Flags&FlagAppID != 0 {
		p.AppID = r.str()
	}
	if n := r.count(); n > 0 {
		m.Body = r.raw(n)
	}
	return m
}

// maxDepth bounds nesting of tables and arrays in corrupt input.
const maxDepth = 64

// maxPresize bounds the room made ahead for a table's or an array's elements: a corrupt count
// is bounded only by the bytes left, and every nesting level could claim it again.
const maxPresize = 64

func (r *binReader) table(depth int) Table {
	n := r.count()
	t := make(Table, min(n, maxPresize))
	for ; n > 0 && r.err == nil; n-- {
		k := r.str()
		t[k] = r.value(depth + 1)
	}
	return t
}

func (r *binReader) value(depth int) any {
	if depth > maxDepth {
		r.fail("nesting")
		return nil
	}
	switch tag := r.u8(); tag {
	case 't':
		return r.u8() != 0
	case 'b':
		return int8(r.int())
	case 'B':
		return uint8(r.uint())
	case 's':
		return int16(r.int())
	case 'u':
		return uint16(r.uint())
	case 'I':
		return int32(r.int())
	case 'i':
		return uint32(r.uint())
	case 'l':
		return r.int()
	case 'f':
		return float32(r.f64())
	case 'd':
		return r.f64()
	case 'S':
		return r.str()
	case 'x':
		return r.bytes()
	case 'A':
		n := r.count()
		a := make([]any, 0, min(n, maxPresize))
		for ; n > 0 && r.err == nil; n-- {
			a = append(a, r.value(depth+1))
		}
		return a
	case 'D':
		return Decimal{Scale: r.u8(), Value: int32(r.int())}
	case 'T':
		return time.Unix(r.int(), 0).UTC()
	case 'F':
		return r.table(depth)
	case 'V':
		return nil
	default:
		r.fail("value type")
		return nil
	}
}
