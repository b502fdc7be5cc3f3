package wire

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// b concatenates byte fragments; strings are taken verbatim.
func b(parts ...any) []byte {
	var out []byte
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			out = append(out, v...)
		case []byte:
			out = append(out, v...)
		case int:
			out = append(out, byte(v))
		case rune:
			out = append(out, byte(v))
		default:
			panic("b: bad part")
		}
	}
	return out
}

// goldenMethods pairs method structs with their exact payloads (class-id, method-id, arguments),
// written out by hand from AMQP 0-9-1 §4.2.5 and the spec's field lists.
var goldenMethods = []struct {
	name    string
	m       Method
	payload []byte
}{
	{"basic.publish", &BasicPublish{Exchange: "amq.direct", RoutingKey: "rk", Mandatory: true},
		b(0, 60, 0, 40, 0, 0, 10, "amq.direct", 2, "rk", 0x01)},
	{"basic.publish immediate", &BasicPublish{Immediate: true},
		b(0, 60, 0, 40, 0, 0, 0, 0, 0x02)},
	{"basic.deliver", &BasicDeliver{ConsumerTag: "ctag", DeliveryTag: 0x0102030405060708, Redelivered: true, Exchange: "", RoutingKey: "q"},
		b(0, 60, 0, 60, 4, "ctag", 1, 2, 3, 4, 5, 6, 7, 8, 1, 0, 1, "q")},
	{"basic.ack", &BasicAck{DeliveryTag: 7, Multiple: true},
		b(0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 7, 1)},
	{"basic.nack", &BasicNack{DeliveryTag: 9, Multiple: false, Requeue: true},
		b(0, 60, 0, 120, 0, 0, 0, 0, 0, 0, 0, 9, 2)},
	{"basic.reject", &BasicReject{DeliveryTag: 1, Requeue: true},
		b(0, 60, 0, 90, 0, 0, 0, 0, 0, 0, 0, 1, 1)},
	{"basic.qos", &BasicQos{PrefetchSize: 0, PrefetchCount: 10, Global: true},
		b(0, 60, 0, 10, 0, 0, 0, 0, 0, 10, 1)},
	{"basic.consume", &BasicConsume{Queue: "q", ConsumerTag: "", NoLocal: false, NoAck: true, Exclusive: true, NoWait: true, Arguments: Table{"x-priority": int32(1)}},
		b(0, 60, 0, 20, 0, 0, 1, "q", 0, 0x0e, 0, 0, 0, 16, 10, "x-priority", 'I', 0, 0, 0, 1)},
	{"basic.get-ok", &BasicGetOk{DeliveryTag: 5, Exchange: "x", RoutingKey: "k", MessageCount: 3},
		b(0, 60, 0, 71, 0, 0, 0, 0, 0, 0, 0, 5, 0, 1, "x", 1, "k", 0, 0, 0, 3)},
	{"basic.get-empty", &BasicGetEmpty{}, b(0, 60, 0, 72, 0)},
	{"basic.return", &BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", Exchange: "", RoutingKey: "nowhere"},
		b(0, 60, 0, 50, 0x01, 0x38, 8, "NO_ROUTE", 0, 7, "nowhere")},
	{"basic.recover-async", &BasicRecoverAsync{Requeue: true}, b(0, 60, 0, 100, 1)},
	{"basic.recover", &BasicRecover{Requeue: false}, b(0, 60, 0, 110, 0)},
	{"basic.recover-ok", &BasicRecoverOk{}, b(0, 60, 0, 111)},
	{"connection.tune", &ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60},
		b(0, 10, 0, 30, 0x07, 0xff, 0, 2, 0, 0, 0, 60)},
	{"connection.start-ok", &ConnectionStartOk{ClientProperties: Table{"product": "x"}, Mechanism: "PLAIN", Response: []byte("\x00guest\x00guest"), Locale: "en_US"},
		b(0, 10, 0, 11, 0, 0, 0, 14, 7, "product", 'S', 0, 0, 0, 1, "x", 5, "PLAIN", 0, 0, 0, 12, "\x00guest\x00guest", 5, "en_US")},
	{"connection.open", &ConnectionOpen{VirtualHost: "/"}, b(0, 10, 0, 40, 1, "/", 0, 0)},
	{"connection.close", &ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED - bye", ClassId: 0, MethodId: 0},
		b(0, 10, 0, 50, 0x01, 0x40, 23, "CONNECTION_FORCED - bye", 0, 0, 0, 0)},
	{"connection.blocked", &ConnectionBlocked{Reason: "low on memory"}, b(0, 10, 0, 60, 13, "low on memory")},
	{"connection.unblocked", &ConnectionUnblocked{}, b(0, 10, 0, 61)},
	{"connection.update-secret", &ConnectionUpdateSecret{NewSecret: "tok", Reason: "r"}, b(0, 10, 0, 70, 0, 0, 0, 3, "tok", 1, "r")},
	{"channel.open-ok", &ChannelOpenOk{}, b(0, 20, 0, 11, 0, 0, 0, 0)},
	{"channel.flow", &ChannelFlow{Active: true}, b(0, 20, 0, 20, 1)},
	{"channel.close", &ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND", ClassId: 50, MethodId: 10},
		b(0, 20, 0, 40, 0x01, 0x94, 9, "NOT_FOUND", 0, 50, 0, 10)},
	{"exchange.declare", &ExchangeDeclare{Exchange: "e", Type: "topic", Durable: true, Internal: true},
		b(0, 40, 0, 10, 0, 0, 1, "e", 5, "topic", 0x0a, 0, 0, 0, 0)},
	{"exchange.bind", &ExchangeBind{Destination: "d", Source: "s", RoutingKey: "#", NoWait: true},
		b(0, 40, 0, 30, 0, 0, 1, "d", 1, "s", 1, "#", 1, 0, 0, 0, 0)},
	{"exchange.unbind-ok", &ExchangeUnbindOk{}, b(0, 40, 0, 51)},
	{"queue.declare", &QueueDeclare{Queue: "q", Passive: true, Durable: false, Exclusive: true, AutoDelete: true, NoWait: false},
		b(0, 50, 0, 10, 0, 0, 1, "q", 0x0d, 0, 0, 0, 0)},
	{"queue.declare-ok", &QueueDeclareOk{Queue: "q", MessageCount: 2, ConsumerCount: 1},
		b(0, 50, 0, 11, 1, "q", 0, 0, 0, 2, 0, 0, 0, 1)},
	{"queue.delete", &QueueDelete{Queue: "q", IfUnused: true, IfEmpty: true, NoWait: true},
		b(0, 50, 0, 40, 0, 0, 1, "q", 0x07)},
	{"queue.unbind", &QueueUnbind{Queue: "q", Exchange: "e", RoutingKey: "k"},
		b(0, 50, 0, 50, 0, 0, 1, "q", 1, "e", 1, "k", 0, 0, 0, 0)},
	{"tx.select", &TxSelect{}, b(0, 90, 0, 10)},
	{"tx.rollback-ok", &TxRollbackOk{}, b(0, 90, 0, 31)},
	{"confirm.select", &ConfirmSelect{Nowait: true}, b(0, 85, 0, 10, 1)},
	{"confirm.select-ok", &ConfirmSelectOk{}, b(0, 85, 0, 11)},
}

func TestGoldenMethods(t *testing.T) {
	for _, tc := range goldenMethods {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.m.Append(nil); !bytes.Equal(got, tc.payload) {
				t.Errorf("Append:\n got %x\nwant %x", got, tc.payload)
			}
			got, err := DecodeMethod(tc.payload)
			if err != nil {
				t.Fatalf("DecodeMethod: %v", err)
			}
			if !reflect.DeepEqual(got, tc.m) {
				t.Errorf("DecodeMethod:\n got %+v\nwant %+v", got, tc.m)
			}
			var d Decoder
			got, err = d.Decode(tc.payload)
			if err != nil {
				t.Fatalf("Decoder.Decode: %v", err)
			}
			if !reflect.DeepEqual(got, tc.m) {
				t.Errorf("Decoder.Decode:\n got %+v\nwant %+v", got, tc.m)
			}
			if got.Name() != tc.m.Name() || got.ClassID() != tc.m.ClassID() || got.MethodID() != tc.m.MethodID() {
				t.Errorf("identity: %s %d.%d", got.Name(), got.ClassID(), got.MethodID())
			}
			// Every strict prefix is truncated input.
			for i := 4; i < len(tc.payload); i++ {
				if _, err := DecodeMethod(tc.payload[:i]); !errors.Is(err, ErrSyntax) {
					t.Fatalf("prefix of %d octets: err = %v, want ErrSyntax", i, err)
				}
			}
			// Trailing octets are rejected too.
			if _, err := DecodeMethod(append(append([]byte{}, tc.payload...), 0)); !errors.Is(err, ErrSyntax) {
				t.Fatalf("trailing octet: err = %v, want ErrSyntax", err)
			}
		})
	}
}

func TestMethodFlags(t *testing.T) {
	tests := []struct {
		m             Method
		name          string
		content, sync bool
	}{
		{&BasicPublish{}, "basic.publish", true, false},
		{&BasicReturn{}, "basic.return", true, false},
		{&BasicDeliver{}, "basic.deliver", true, false},
		{&BasicGetOk{}, "basic.get-ok", true, true},
		{&BasicGet{}, "basic.get", false, true},
		{&BasicAck{}, "basic.ack", false, false},
		{&ConnectionStartOk{}, "connection.start-ok", false, true},
		{&ConnectionBlocked{}, "connection.blocked", false, false},
		{&QueueDeclare{}, "queue.declare", false, true},
		{&ChannelFlowOk{}, "channel.flow-ok", false, false},
		{&ConfirmSelect{}, "confirm.select", false, true},
	}
	for _, tc := range tests {
		if tc.m.Name() != tc.name || tc.m.HasContent() != tc.content || tc.m.Synchronous() != tc.sync {
			t.Errorf("%T: name %q content %v sync %v; want %q %v %v", tc.m, tc.m.Name(), tc.m.HasContent(),
				tc.m.Synchronous(), tc.name, tc.content, tc.sync)
		}
	}
}

func TestDecodeMethodErrors(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		want    error
	}{
		{"empty", nil, ErrSyntax},
		{"no method id", b(0, 60, 0), ErrSyntax},
		{"unknown class", b(0, 99, 0, 10), ErrUnknownMethod},
		{"unknown method", b(0, 60, 0, 99), ErrUnknownMethod},
		{"access class is not in 0-9-1", b(0, 30, 0, 10), ErrUnknownMethod},
		{"shortstr past the end", b(0, 60, 0, 40, 0, 0, 200, "abc"), ErrSyntax},
		{"table size past the end", b(0, 50, 0, 10, 0, 0, 1, "q", 0, 0xff, 0xff, 0xff, 0xff), ErrSyntax},
		{"bad table type", b(0, 50, 0, 10, 0, 0, 1, "q", 0, 0, 0, 0, 3, 1, "k", '?'), ErrSyntax},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeMethod(tc.payload)
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeMethod: err = %v, want %v", err, tc.want)
			}
			var d Decoder
			if _, err := d.Decode(tc.payload); !errors.Is(err, tc.want) {
				t.Fatalf("Decoder.Decode: err = %v, want %v", err, tc.want)
			}
		})
	}
	_, err := DecodeMethod(b(0, 60, 0, 99))
	if err == nil || err.Error() != "class 60 method 99: amqp091: unknown method" {
		t.Fatalf("unknown method message = %v", err)
	}
	_, err = DecodeMethod(b(0, 60, 0, 80, 0))
	if err == nil || err.Error() != "basic.ack: truncated or malformed arguments: amqp091: syntax error" {
		t.Fatalf("syntax error message = %v", err)
	}
}

func TestAppendShortstrTruncates(t *testing.T) {
	long := string(bytes.Repeat([]byte("a"), 300))
	payload := (&BasicConsumeOk{ConsumerTag: long}).Append(nil)
	m, err := DecodeMethod(payload)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.(*BasicConsumeOk).ConsumerTag; got != long[:255] {
		t.Fatalf("tag of %d octets, want 255", len(got))
	}
}

func TestDecoderReusesAndInterns(t *testing.T) {
	var d Decoder
	p1 := (&BasicPublish{Exchange: "ex", RoutingKey: "rk"}).Append(nil)
	m1, err := d.Decode(p1)
	if err != nil {
		t.Fatal(err)
	}
	ex1 := m1.(*BasicPublish).Exchange
	m2, err := d.Decode(p1)
	if err != nil {
		t.Fatal(err)
	}
	if m1 != m2 {
		t.Fatal("Decoder did not reuse its basic.publish struct")
	}
	if ex2 := m2.(*BasicPublish).Exchange; unsafeData(ex1) != unsafeData(ex2) {
		t.Fatal("exchange name not interned")
	}
	// The decoded strings must not alias the payload.
	p1[7] = 'X'
	if m2.(*BasicPublish).Exchange != "ex" {
		t.Fatal("decoded string aliases the payload")
	}
}

func TestDecoderInternTableIsBounded(t *testing.T) {
	var d Decoder
	for i := range internMax * 3 {
		p := (&BasicPublish{Exchange: "x", RoutingKey: string(rune('a'+i%26)) + string(appendLong(nil, uint32(i)))}).Append(nil)
		if _, err := d.Decode(p); err != nil {
			t.Fatal(err)
		}
		if len(d.intern) > internMax {
			t.Fatalf("intern table grew to %d", len(d.intern))
		}
	}
}
