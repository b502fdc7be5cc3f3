package wire

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"
)

// goldenValues: one field value per RabbitMQ type code, with its exact encoding after the key.
var goldenValues = []struct {
	name string
	v    any
	wire []byte
}{
	{"t true", true, b('t', 1)},
	{"t false", false, b('t', 0)},
	{"b int8", int8(-2), b('b', 0xfe)},
	{"B uint8", uint8(200), b('B', 200)},
	{"s int16", int16(-2), b('s', 0xff, 0xfe)},
	{"u uint16", uint16(0xabcd), b('u', 0xab, 0xcd)},
	{"I int32", int32(-2), b('I', 0xff, 0xff, 0xff, 0xfe)},
	{"i uint32", uint32(0xdeadbeef), b('i', 0xde, 0xad, 0xbe, 0xef)},
	{"l int64", int64(-2), b('l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe)},
	{"f float32", float32(1.5), b('f', 0x3f, 0xc0, 0, 0)},
	{"d float64", 2.25, b('d', 0x40, 0x02, 0, 0, 0, 0, 0, 0)},
	{"D decimal", Decimal{Scale: 2, Value: 12345}, b('D', 2, 0, 0, 0x30, 0x39)},
	{"S string", "hello", b('S', 0, 0, 0, 5, "hello")},
	{"S empty", "", b('S', 0, 0, 0, 0)},
	{"x bytes", []byte{0, 0xff}, b('x', 0, 0, 0, 2, 0, 0xff)},
	{"A array", []any{int32(1), "two", true}, b('A', 0, 0, 0, 15, 'I', 0, 0, 0, 1, 'S', 0, 0, 0, 3, "two", 't', 1)},
	{"A empty", []any{}, b('A', 0, 0, 0, 0)},
	{"T timestamp", time.Unix(1700000001, 0).UTC(), b('T', 0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x01)},
	{"F table", Table{"nested": "yes"}, b('F', 0, 0, 0, 15, 6, "nested", 'S', 0, 0, 0, 3, "yes")},
	{"F empty", Table{}, b('F', 0, 0, 0, 0)},
	{"V void", nil, b('V')},
}

func TestGoldenTableValues(t *testing.T) {
	for _, tc := range goldenValues {
		t.Run(tc.name, func(t *testing.T) {
			entry := b(1, "k", tc.wire)
			want := b(0, 0, 0, len(entry), entry)
			got, err := AppendTable(nil, Table{"k": tc.v})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("AppendTable:\n got %x\nwant %x", got, want)
			}
			tbl, rest, err := ReadTable(append(want, "rest"...))
			if err != nil {
				t.Fatal(err)
			}
			if string(rest) != "rest" {
				t.Fatalf("rest = %q", rest)
			}
			if !reflect.DeepEqual(tbl, Table{"k": tc.v}) {
				t.Fatalf("ReadTable = %#v, want %#v", tbl, Table{"k": tc.v})
			}
			body, err := ReadTableBody(entry)
			if err != nil || !reflect.DeepEqual(body, tbl) {
				t.Fatalf("ReadTableBody = %#v, %v", body, err)
			}
		})
	}
}

func TestAppendTableGoTypes(t *testing.T) {
	tests := []struct {
		name string
		v    any
		wire []byte
		err  error
	}{
		// amqp091-go writes a Go int as 'I'.
		{"int fits int32", 1000, b('I', 0, 0, 0x03, 0xe8), nil},
		{"negative int", -1, b('I', 0xff, 0xff, 0xff, 0xff), nil},
		{"int beyond int32 widens", 1 << 40, b('l', 0, 0, 1, 0, 0, 0, 0, 0), nil},
		{"map[string]any", map[string]any{}, b('F', 0, 0, 0, 0), nil},
		{"uint64 unsupported", uint64(1), nil, ErrUnsupportedType},
		{"struct unsupported", struct{}{}, nil, ErrUnsupportedType},
		{"nested unsupported", Table{"a": []any{complex(1, 1)}}, nil, ErrUnsupportedType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AppendTable([]byte("pre"), Table{"k": tc.v})
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err != nil {
				if string(got) != "pre" {
					t.Fatalf("on error dst = %q, want it unchanged", got)
				}
				return
			}
			want := b("pre", 0, 0, 0, 2+len(tc.wire), 1, "k", tc.wire)
			if !bytes.Equal(got, want) {
				t.Fatalf("got %x\nwant %x", got, want)
			}
		})
	}
	if _, err := AppendTable(nil, Table{string(bytes.Repeat([]byte("k"), 256)): 1}); !errors.Is(err, ErrSyntax) {
		t.Fatalf("long key: err = %v", err)
	}
}

func TestAppendTableSortsKeys(t *testing.T) {
	tbl := Table{}
	for _, k := range []string{"z", "a", "m", "b", "y", "c"} {
		tbl[k] = true
	}
	first, _ := AppendTable(nil, tbl)
	for range 20 {
		again, _ := AppendTable(nil, tbl)
		if !bytes.Equal(first, again) {
			t.Fatal("encoding is not deterministic")
		}
	}
	if !bytes.HasPrefix(first[4:], b(1, "a", 't', 1, 1, "b")) {
		t.Fatalf("keys not sorted: %q", first)
	}
}

func TestReadTableErrors(t *testing.T) {
	deep := Table{}
	cur := deep
	for range maxTableDepth + 2 {
		next := Table{}
		cur["n"] = next
		cur = next
	}
	var deepWire []byte
	{
		// Build an over-deep table by hand: AppendTable refuses to.
		inner := b(0, 0, 0, 0)
		for range maxTableDepth + 2 {
			entry := b(1, "n", 'F', inner)
			inner = append(appendLong(nil, uint32(len(entry))), entry...)
		}
		deepWire = inner
	}
	if _, err := AppendTable(nil, deep); !errors.Is(err, ErrSyntax) {
		t.Fatalf("AppendTable of a too deep table: err = %v", err)
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"no size", b(0, 0)},
		{"size beyond input", b(0xff, 0xff, 0xff, 0xff, 1, "k", 'V')},
		{"4 GB string in a short table", b(0, 0, 0, 7, 1, "k", 'S', 0xff, 0xff)},
		{"string length beyond table", b(0, 0, 0, 11, 1, "k", 'S', 0xff, 0xff, 0xff, 0xff, "abc")},
		{"key beyond table", b(0, 0, 0, 2, 9, "k")},
		{"missing value", b(0, 0, 0, 2, 1, "k")},
		{"unknown type", b(0, 0, 0, 3, 1, "k", 'Z')},
		{"truncated int", b(0, 0, 0, 5, 1, "k", 'I', 0, 0)},
		{"bad nested table", b(0, 0, 0, 9, 1, "k", 'F', 0, 0, 0, 2, 1, "x")},
		{"bad array element", b(0, 0, 0, 8, 1, "k", 'A', 0, 0, 0, 1, 'Z')},
		{"array length beyond", b(0, 0, 0, 8, 1, "k", 'A', 0, 0, 0, 9, 'V')},
		{"too deep", deepWire},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ReadTable(tc.in); !errors.Is(err, ErrSyntax) {
				t.Fatalf("err = %v, want ErrSyntax", err)
			}
		})
	}
}

func TestReadTableEmptyAndNaN(t *testing.T) {
	tbl, rest, err := ReadTable(b(0, 0, 0, 0))
	if err != nil || tbl != nil || len(rest) != 0 {
		t.Fatalf("empty table: %v %v %v", tbl, rest, err)
	}
	enc, _ := AppendTable(nil, Table{"nan": math.NaN()})
	tbl, _, err = ReadTable(enc)
	if err != nil || !math.IsNaN(tbl["nan"].(float64)) {
		t.Fatalf("NaN: %v %v", tbl, err)
	}
}

func TestReadTableDoesNotAlias(t *testing.T) {
	in := b(0, 0, 0, 16, 1, "s", 'S', 0, 0, 0, 1, "a", 1, "x", 'x', 0, 0, 0, 1, "b")
	tbl, _, err := ReadTable(in)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 0
	}
	if tbl["s"] != "a" || !bytes.Equal(tbl["x"].([]byte), []byte("b")) {
		t.Fatalf("table aliases its input: %v", tbl)
	}
}

// A decimal of another package with Decimal's shape (the core's message.Decimal, carried by
// messages recovered from the log) is written as a decimal, not dropped.
func TestAppendTableDecimalShaped(t *testing.T) {
	type coreDecimal struct {
		Scale uint8
		Value int32
	}
	want, err := AppendTable(nil, Table{"d": Decimal{Scale: 2, Value: -12345}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := AppendTable(nil, Table{"d": coreDecimal{Scale: 2, Value: -12345}})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("decimal-shaped value encoded as %x, want %x", got, want)
	}
	if _, err := AppendTable(nil, Table{"x": struct{ A, B int }{}}); err == nil {
		t.Fatal("a struct of another shape was accepted")
	}
}
