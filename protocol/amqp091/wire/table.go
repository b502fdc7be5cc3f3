package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"slices"
	"time"
)

// Table is an AMQP field table (AMQP 0-9-1 §4.2.5.5). It is an alias so that the broker core's
// message.Table is the same type. Decoded values have these Go types, following RabbitMQ's
// field-table type codes (rabbit_binary_parser), not the 0-9-1 errata table:
//
//	't' bool       'b' int8      'B' uint8     's' int16     'u' uint16
//	'I' int32      'i' uint32    'l' int64     'f' float32   'd' float64
//	'D' Decimal    'S' string    'x' []byte    'A' []any     'T' time.Time (seconds, UTC)
//	'F' Table      'V' nil
//
// AppendTable also accepts a Go int (written as 'I' when it fits in 32 bits, as amqp091-go
// does, otherwise as 'l' rather than truncating) and any map[string]any.
type Table = map[string]any

// Decimal is the AMQP decimal field value ('D'): Value × 10^-Scale.
type Decimal struct {
	Scale uint8
	Value int32
}

// maxTableDepth bounds the nesting of tables and arrays so that hostile input cannot exhaust
// the stack (every level costs only 5 octets of input). RabbitMQ sets no limit; no real client
// nests anywhere near this deep.
const maxTableDepth = 64

// ReadTable reads a field table that starts with its 4-octet size, as it appears in method
// arguments. It returns the table and the input after it. An empty table decodes as nil.
func ReadTable(b []byte) (Table, []byte, error) {
	p := parser{b: b}
	body := p.longstrBytes()
	if p.bad {
		return nil, b, fmt.Errorf("field table size: %w", ErrSyntax)
	}
	t, err := readTableBody(body, 0)
	if err != nil {
		return nil, b, err
	}
	return t, p.b, nil
}

// ReadTableBody reads the entries of a field table without its size prefix: the form SASL
// AMQPLAIN uses for its response (key/value pairs, RabbitMQ: rabbit_auth_mechanism_amqplain).
func ReadTableBody(b []byte) (Table, error) {
	return readTableBody(b, 0)
}

func readTableBody(b []byte, depth int) (Table, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if depth > maxTableDepth {
		return nil, fmt.Errorf("field table nested deeper than %d: %w", maxTableDepth, ErrSyntax)
	}
	t := make(Table)
	p := parser{b: b}
	for len(p.b) > 0 {
		key := p.shortstrBytes()
		if p.bad {
			return nil, fmt.Errorf("field table key: %w", ErrSyntax)
		}
		v, err := readValue(&p, depth)
		if err != nil {
			return nil, fmt.Errorf("field table value %q: %w", key, err)
		}
		t[string(key)] = v
	}
	return t, nil
}

func readArray(b []byte, depth int) ([]any, error) {
	if len(b) == 0 {
		return []any{}, nil
	}
	if depth > maxTableDepth {
		return nil, fmt.Errorf("field array nested deeper than %d: %w", maxTableDepth, ErrSyntax)
	}
	var a []any
	p := parser{b: b}
	for len(p.b) > 0 {
		v, err := readValue(&p, depth)
		if err != nil {
			return nil, fmt.Errorf("field array element %d: %w", len(a), err)
		}
		a = append(a, v)
	}
	return a, nil
}

// readValue reads one type-tagged field value. AMQP 0-9-1 §4.2.5.5 with RabbitMQ's type codes.
func readValue(p *parser, depth int) (any, error) {
	code := p.octet()
	if p.bad {
		return nil, fmt.Errorf("missing type code: %w", ErrSyntax)
	}
	var v any
	switch code {
	case 't':
		v = p.octet() != 0
	case 'b':
		v = int8(p.octet())
	case 'B':
		v = p.octet()
	case 's':
		v = int16(p.short())
	case 'u':
		v = p.short()
	case 'I':
		v = int32(p.long())
	case 'i':
		v = p.long()
	case 'l':
		v = int64(p.longlong())
	case 'f':
		v = math.Float32frombits(p.long())
	case 'd':
		v = math.Float64frombits(p.longlong())
	case 'D':
		scale := p.octet()
		v = Decimal{Scale: scale, Value: int32(p.long())}
	case 'S':
		v = string(p.longstrBytes())
	case 'x':
		b := p.longstrBytes()
		v = append([]byte{}, b...)
	case 'T':
		v = time.Unix(int64(p.longlong()), 0).UTC()
	case 'F':
		b := p.longstrBytes()
		if p.bad {
			break
		}
		t, err := readTableBody(b, depth+1)
		if err != nil {
			return nil, err
		}
		if t == nil {
			t = Table{}
		}
		v = t
	case 'A':
		b := p.longstrBytes()
		if p.bad {
			break
		}
		a, err := readArray(b, depth+1)
		if err != nil {
			return nil, err
		}
		v = a
	case 'V':
		v = nil
	default:
		return nil, fmt.Errorf("unknown field type code %q: %w", code, ErrSyntax)
	}
	if p.bad {
		return nil, fmt.Errorf("truncated %q value: %w", code, ErrSyntax)
	}
	return v, nil
}

// AppendTable appends t with its 4-octet size prefix. Keys are written in sorted order so the
// encoding is deterministic. It fails with ErrUnsupportedType for a value with no type code and
// ErrSyntax for a key longer than 255 octets.
func AppendTable(dst []byte, t Table) ([]byte, error) {
	return appendTable(dst, t, false, 0)
}

func appendTable(dst []byte, t Table, lenient bool, depth int) ([]byte, error) {
	if depth > maxTableDepth {
		return dst, fmt.Errorf("field table nested deeper than %d: %w", maxTableDepth, ErrSyntax)
	}
	start := len(dst)
	dst = appendLong(dst, 0)
	if len(t) == 0 {
		return dst, nil
	}
	var keyBuf [32]string
	keys := keyBuf[:0]
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if len(k) > maxShortstr {
			if lenient {
				continue
			}
			return dst[:start], fmt.Errorf("field table key of %d octets: %w", len(k), ErrSyntax)
		}
		dst = appendShortstr(dst, k)
		var err error
		dst, err = appendValue(dst, t[k], lenient, depth)
		if err != nil {
			return dst[:start], fmt.Errorf("field table value %q: %w", k, err)
		}
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst, nil
}

func appendArray(dst []byte, a []any, lenient bool, depth int) ([]byte, error) {
	if depth > maxTableDepth {
		return dst, fmt.Errorf("field array nested deeper than %d: %w", maxTableDepth, ErrSyntax)
	}
	start := len(dst)
	dst = appendLong(dst, 0)
	for i, v := range a {
		var err error
		dst, err = appendValue(dst, v, lenient, depth)
		if err != nil {
			return dst[:start], fmt.Errorf("field array element %d: %w", i, err)
		}
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst, nil
}

func appendValue(dst []byte, value any, lenient bool, depth int) ([]byte, error) {
	switch v := value.(type) {
	case bool:
		b := uint8(0)
		if v {
			b = 1
		}
		return append(dst, 't', b), nil
	case int8:
		return append(dst, 'b', uint8(v)), nil
	case uint8:
		return append(dst, 'B', v), nil
	case int16:
		return appendShort(append(dst, 's'), uint16(v)), nil
	case uint16:
		return appendShort(append(dst, 'u'), v), nil
	case int32:
		return appendLong(append(dst, 'I'), uint32(v)), nil
	case uint32:
		return appendLong(append(dst, 'i'), v), nil
	case int:
		// amqp091-go writes a Go int as 'I' (signed 32-bit); do the same when it fits and
		// widen to 'l' instead of silently truncating when it does not.
		if v >= math.MinInt32 && v <= math.MaxInt32 {
			return appendLong(append(dst, 'I'), uint32(int32(v))), nil
		}
		return appendLonglong(append(dst, 'l'), uint64(v)), nil
	case int64:
		return appendLonglong(append(dst, 'l'), uint64(v)), nil
	case float32:
		return appendLong(append(dst, 'f'), math.Float32bits(v)), nil
	case float64:
		return appendLonglong(append(dst, 'd'), math.Float64bits(v)), nil
	case Decimal:
		return appendLong(append(dst, 'D', v.Scale), uint32(v.Value)), nil
	case string:
		return appendLongstr(append(dst, 'S'), v), nil
	case []byte:
		return appendLongbytes(append(dst, 'x'), v), nil
	case time.Time:
		return appendLonglong(append(dst, 'T'), uint64(v.Unix())), nil
	case map[string]any:
		return appendTable(append(dst, 'F'), v, lenient, depth+1)
	case []any:
		return appendArray(append(dst, 'A'), v, lenient, depth+1)
	case nil:
		return append(dst, 'V'), nil
	}
	// The core's own decimal type (broker/message.Decimal, which messages recovered from the
	// log carry) has Decimal's shape; wire stays stdlib-only, so it is recognised by shape.
	if d, ok := decimalShaped(value); ok {
		return appendLong(append(dst, 'D', d.Scale), uint32(d.Value)), nil
	}
	if lenient {
		return append(dst, 'V'), nil
	}
	return dst, fmt.Errorf("%T: %w", value, ErrUnsupportedType)
}

// decimalShaped converts a struct of exactly {Scale uint8; Value int32} to a Decimal.
func decimalShaped(v any) (Decimal, bool) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Struct || rv.NumField() != 2 {
		return Decimal{}, false
	}
	t := rv.Type()
	if t.Field(0).Name != "Scale" || t.Field(0).Type.Kind() != reflect.Uint8 ||
		t.Field(1).Name != "Value" || t.Field(1).Type.Kind() != reflect.Int32 {
		return Decimal{}, false
	}
	return Decimal{Scale: uint8(rv.Field(0).Uint()), Value: int32(rv.Field(1).Int())}, true
}
