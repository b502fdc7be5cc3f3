package message

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func fullMessage() *Message {
	return &Message{
		Exchange:   "amq.topic",
		RoutingKey: "a.b.c",
		Properties: Properties{
			Flags: FlagContentType | FlagContentEncoding | FlagHeaders | FlagDeliveryMode | FlagPriority |
				FlagCorrelationID | FlagReplyTo | FlagExpiration | FlagMessageID | FlagTimestamp | FlagType |
				FlagUserID | FlagAppID,
			ContentType: "text/plain", ContentEncoding: "gzip", DeliveryMode: 2, Priority: 7,
			CorrelationID: "c1", ReplyTo: "amq.rabbitmq.reply-to.x", Expiration: "60000", MessageID: "m1",
			Timestamp: 1700000000, Type: "t", UserID: "guest", AppID: "app",
			Headers: Table{
				"bool": true, "i8": int8(-8), "u8": uint8(8), "i16": int16(-16), "u16": uint16(16),
				"i32": int32(-32), "u32": uint32(32), "i64": int64(-64), "f32": float32(1.5), "f64": 2.25,
				"str": "s", "bytes": []byte{0, 1, 2}, "arr": []any{int32(1), "two", nil},
				"time": time.Unix(1700000000, 0).UTC(), "nested": Table{"k": "v"}, "void": nil,
				"dec": Decimal{Scale: 2, Value: -314},
			},
		},
		Body: []byte("hello\x00world"),
	}
}

// wireDecimal stands for the AMQP codec's decimal type, which broker must not import.
type wireDecimal struct {
	Scale uint8
	Value int32
}

func TestBinaryRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name string
		m    *Message
	}{
		{"full", fullMessage()},
		{"zero", &Message{}},
		{"empty body", &Message{Body: []byte{}}},
		{"delivery mode only", &Message{Exchange: "x", Properties: Properties{Flags: FlagDeliveryMode, DeliveryMode: 1}}},
		{"empty headers", &Message{Properties: Properties{Flags: FlagHeaders, Headers: Table{}}, Body: []byte("b")}},
		{"large body", &Message{RoutingKey: "q", Body: bytes.Repeat([]byte{0xff}, 1<<20)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := AppendBinary([]byte("prefix"), tt.m)
			if err != nil {
				t.Fatal(err)
			}
			got, rest, err := DecodeBinary(append(b[len("prefix"):], "tail"...))
			if err != nil {
				t.Fatal(err)
			}
			if string(rest) != "tail" {
				t.Fatalf("rest %q", rest)
			}
			if len(tt.m.Body) == 0 && len(got.Body) == 0 {
				got.Body = tt.m.Body // an empty body decodes as nil
			}
			if !reflect.DeepEqual(got, tt.m) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, tt.m)
			}
		})
	}
}

// TestBinaryValueTypes round-trips every header value type on its own, at the top level, in
// an array and in a nested table.
func TestBinaryValueTypes(t *testing.T) {
	nanos := time.Date(2024, 2, 29, 12, 0, 0, 999, time.FixedZone("x", 3600))
	for _, tt := range []struct {
		name string
		in   any
		want any // nil: same as in
	}{
		{"bool true", true, nil},
		{"bool false", false, nil},
		{"int8", int8(math.MinInt8), nil},
		{"uint8", uint8(math.MaxUint8), nil},
		{"int16", int16(math.MinInt16), nil},
		{"uint16", uint16(math.MaxUint16), nil},
		{"int32", int32(math.MinInt32), nil},
		{"uint32", uint32(math.MaxUint32), nil},
		{"int64 min", int64(math.MinInt64), nil},
		{"int64 max", int64(math.MaxInt64), nil},
		{"float32", float32(-3.25e-7), nil},
		{"float32 inf", float32(math.Inf(-1)), nil},
		{"float64", math.SmallestNonzeroFloat64, nil},
		{"float64 -0", math.Copysign(0, -1), nil},
		{"string", "héllo\x00", nil},
		{"empty string", "", nil},
		{"bytes", []byte{0, 0xff}, nil},
		{"empty bytes", []byte{}, nil},
		{"array", []any{true, int64(1), "x", []any{nil}}, nil},
		{"empty array", []any{}, nil},
		{"time", time.Unix(-1, 0).UTC(), nil},
		{"time to UTC seconds", nanos, time.Unix(nanos.Unix(), 0).UTC()},
		{"table", Table{"a": Table{"b": int32(2)}}, nil},
		{"empty table", Table{}, nil},
		{"void", nil, nil},
		{"decimal", Decimal{Scale: 255, Value: math.MinInt32}, nil},
		{"foreign decimal", wireDecimal{Scale: 3, Value: 1234}, Decimal{Scale: 3, Value: 1234}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == nil {
				want = tt.in
			}
			m := &Message{Properties: Properties{Flags: FlagHeaders, Headers: Table{
				"v": tt.in, "a": []any{tt.in}, "t": Table{"v": tt.in},
			}}}
			b, err := AppendBinary(nil, m)
			if err != nil {
				t.Fatal(err)
			}
			got, rest, err := DecodeBinary(b)
			if err != nil || len(rest) != 0 {
				t.Fatalf("decode: %v, %d bytes left", err, len(rest))
			}
			h := got.Properties.Headers
			for _, v := range []any{h["v"], h["a"].([]any)[0], h["t"].(Table)["v"]} {
				if !reflect.DeepEqual(v, want) {
					t.Fatalf("got %#v (%T), want %#v (%T)", v, v, want, want)
				}
			}
		})
	}
}

// TestBinaryGolden pins the stored format: log entries and snapshots written by one version
// are read by the next.
func TestBinaryGolden(t *testing.T) {
	for _, tt := range []struct {
		name string
		m    *Message
		hex  string
	}{
		{"zero", &Message{}, "00" + "00" + "0000" + "00"},
		{"body", &Message{Exchange: "x", RoutingKey: "k", Body: []byte("hi")}, "0178" + "016b" + "0000" + "026869"},
		{"decimal header and delivery mode", &Message{
			Exchange: "x", RoutingKey: "k",
			Properties: Properties{Flags: FlagHeaders | FlagDeliveryMode, DeliveryMode: 2, Headers: Table{"d": Decimal{Scale: 2, Value: -314}}},
			Body:       []byte("hi"),
		}, "0178" + "016b" + "3000" + "01" + "0164" + "44" + "02" + "f304" + "02" + "026869"},
		{"keys sorted, every scalar", &Message{Properties: Properties{Flags: FlagHeaders, Headers: Table{
			"t": true, "b": int8(-1), "B": uint8(255), "s": int16(-2), "u": uint16(300), "I": int32(-3), "i": uint32(4),
			"l": int64(-5), "f": float32(1), "d": float64(-2), "S": "s", "x": []byte{7}, "A": []any{nil}, "T": time.Unix(1, 0),
			"F": Table{}, "V": nil,
		}}}, "00" + "00" + "2000" + "10" +
			"0141" + "41" + "01" + "56" + // A: [void]
			"0142" + "42" + "ff01" + // B: uvarint 255
			"0146" + "46" + "00" + // F: empty table
			"0149" + "49" + "05" + // I: zig-zag -3
			"0153" + "53" + "0173" + // S
			"0154" + "54" + "02" + // T: zig-zag 1
			"0156" + "56" + // V
			"0162" + "62" + "01" + // b: zig-zag -1
			"0164" + "64" + "c000000000000000" + // d: -2.0
			"0166" + "66" + "3ff0000000000000" + // f: 1.0 widened
			"0169" + "69" + "04" + // i
			"016c" + "6c" + "09" + // l: zig-zag -5
			"0173" + "73" + "03" + // s: zig-zag -2
			"0174" + "74" + "01" + // t
			"0175" + "75" + "ac02" + // u: uvarint 300
			"0178" + "78" + "0107" + // x
			"00"},
		{"every property", fullMessage(), "09616d712e746f70696305612e622e63fff80a746578742f706c61696e04677a6970110361727241034902530374776f5604626f6f6c74010562797465737803000102036465634402f30403663332663ff80000000000000366363464400200000000000003693136731f03693332493f036936346c7f026938620f066e65737465644601016b530176037374725301730474696d655480c49fd50c037531367510037533326920027538420804766f696456020702633117616d712e7261626269746d712e7265706c792d746f2e78053630303030026d3180c49fd50c0174056775657374036170700b68656c6c6f00776f726c64"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := AppendBinary(nil, tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(b); got != tt.hex {
				t.Fatalf("encoding changed:\n got %s\nwant %s", got, tt.hex)
			}
		})
	}
}

func TestBinaryIsDeterministic(t *testing.T) {
	a, _ := AppendBinary(nil, fullMessage())
	for range 10 { // map iteration order differs from run to run
		if b, _ := AppendBinary(nil, fullMessage()); !bytes.Equal(a, b) {
			t.Fatal("the same message encoded to different bytes")
		}
	}
}

// TestDecodeBinaryAliasesBody pins the documented contract: the body is not copied.
func TestDecodeBinaryAliasesBody(t *testing.T) {
	b, _ := AppendBinary(nil, &Message{Body: []byte("body")})
	m, _, err := DecodeBinary(b)
	if err != nil {
		t.Fatal(err)
	}
	if &m.Body[0] != &b[len(b)-4] || cap(m.Body) != 4 {
		t.Fatal("body copied, or its capacity reaches past it")
	}
}

func TestAppendBinaryUnsupported(t *testing.T) {
	for _, tt := range []struct {
		name string
		v    any
	}{
		{"struct", struct{ X int }{1}},
		{"int", 1},
		{"decimal-like with other names", struct {
			S uint8
			V int32
		}{}},
		{"decimal-like with other types", struct {
			Scale uint16
			Value int32
		}{}},
		{"map of another type", map[string]int{}},
		{"nested", []any{Table{"x": uint64(1)}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := &Message{Properties: Properties{Flags: FlagHeaders, Headers: Table{"h": tt.v}}}
			if b, err := AppendBinary([]byte("dst"), m); !errors.Is(err, ErrUnsupportedValue) || string(b) != "dst" {
				t.Fatalf("got %q, %v; want dst unchanged and ErrUnsupportedValue", b, err)
			}
		})
	}
}

func TestDecodeBinaryCorrupt(t *testing.T) {
	full, _ := AppendBinary(nil, fullMessage())
	deep := append([]byte{0, 0, 0x20, 0, 1, 1, 'k'}, bytes.Repeat([]byte{'A', 1}, maxDepth+1)...)
	deep = append(deep, 'V', 0)
	for _, tt := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown value type", []byte{0, 0, 0x20, 0, 1, 1, 'k', 'Z', 0}},
		{"table count past the end", []byte{0, 0, 0x20, 0, 0xff, 0xff, 0x03}},
		{"string past the end", []byte{5, 'a'}},
		{"body past the end", []byte{0, 0, 0, 0, 2, 'x'}},
		{"varint overflow", append([]byte{0, 0, 0x00, 0x40}, bytes.Repeat([]byte{0xff}, 11)...)},
		{"nesting too deep", deep},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if m, rest, err := DecodeBinary(tt.b); !errors.Is(err, ErrCorrupt) || m != nil || rest != nil {
				t.Fatalf("got %v, %q, %v; want ErrCorrupt", m, rest, err)
			}
		})
	}
	for i := range full {
		if _, _, err := DecodeBinary(full[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated at %d of %d: %v", i, len(full), err)
		}
	}
}

// TestFuzzCorpusIsMessages: the committed seed corpus holds encodings of real messages, so
// the fuzzer starts from valid input.
func TestFuzzCorpusIsMessages(t *testing.T) {
	files, _ := filepath.Glob("testdata/fuzz/FuzzDecodeBinary/*")
	if len(files) == 0 {
		t.Fatal("no seed corpus")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a go test fuzz v1 file with one []byte", f)
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if _, rest, err := DecodeBinary([]byte(s)); err != nil || len(rest) != 0 {
			t.Fatalf("%s: %v, %d bytes left", f, err, len(rest))
		}
	}
}

// FuzzDecodeBinary: any input decodes or fails cleanly, and what decodes re-encodes to bytes
// that decode and re-encode to the same bytes. (Bytes, not reflect.DeepEqual: a NaN header
// is never DeepEqual to itself.)
func FuzzDecodeBinary(f *testing.F) {
	for _, m := range []*Message{fullMessage(), {}, {RoutingKey: "q", Body: []byte("x")}} {
		b, _ := AppendBinary(nil, m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, rest, err := DecodeBinary(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		if len(rest) > len(data) {
			t.Fatal("rest longer than the input")
		}
		b, err := AppendBinary(nil, m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		m2, rest2, err := DecodeBinary(b)
		if err != nil || len(rest2) != 0 {
			t.Fatalf("re-encoding does not decode: %v, %d bytes left", err, len(rest2))
		}
		if b2, _ := AppendBinary(nil, m2); !bytes.Equal(b, b2) {
			t.Fatal("re-encoding changed the message")
		}
	})
}

func benchMessages() []struct {
	name string
	m    *Message
} {
	return []struct {
		name string
		m    *Message
	}{
		{"persistent1KiB", &Message{RoutingKey: "q", Properties: Properties{Flags: FlagDeliveryMode, DeliveryMode: 2}, Body: make([]byte, 1024)}},
		{"headers", fullMessage()},
	}
}

func BenchmarkAppendBinary(b *testing.B) {
	for _, bm := range benchMessages() {
		b.Run(bm.name, func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = AppendBinary(buf[:0], bm.m)
			}
		})
	}
}

func BenchmarkDecodeBinary(b *testing.B) {
	for _, bm := range benchMessages() {
		b.Run(bm.name, func(b *testing.B) {
			enc, _ := AppendBinary(nil, bm.m)
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := DecodeBinary(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
