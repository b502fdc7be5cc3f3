package stomp

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/protocol/stomp/wire"
)

func TestParseDestination(t *testing.T) {
	for _, c := range []struct {
		in        string
		kind      destKind
		name, key string
		errMsg    string
	}{
		{in: "/queue/a", kind: destQueue, name: "a"},
		{in: "/queue/a%2Fb", kind: destQueue, name: "a/b"},
		{in: "/topic/x.y.#", kind: destTopic, name: "x.y.#"},
		{in: "/exchange/amq.direct/k", kind: destExchange, name: "amq.direct", key: "k"},
		{in: "/exchange/logs", kind: destExchange, name: "logs"},
		{in: "/amq/queue/existing", kind: destAmqQueue, name: "existing"},
		{in: "/temp-queue/replies", kind: destTempQueue, name: "replies"},
		{in: "/reply-queue/stomp.gen-x/y", kind: destReplyQueue, name: "stomp.gen-x/y"},
		{in: "/queue/", errMsg: "Invalid destination"},
		{in: "/queue/a/b", errMsg: "Invalid destination"},
		{in: "/exchange//k", errMsg: "Invalid destination"},
		{in: "/exchange/a/b/c", errMsg: "Invalid destination"},
		{in: "queue/a", errMsg: "Unknown destination"},
		{in: "", errMsg: "Unknown destination"},
	} {
		d, err := parseDestination(c.in)
		if c.errMsg != "" {
			var se *stompError
			if !errors.As(err, &se) || se.msg != c.errMsg {
				t.Errorf("%q: got %v, want %s", c.in, err, c.errMsg)
			}
			continue
		}
		if err != nil || d.kind != c.kind || d.name != c.name || d.key != c.key {
			t.Errorf("%q: got %+v %v", c.in, d, err)
		}
	}
}

func TestFormatDestination(t *testing.T) {
	for _, c := range []struct{ ex, key, want string }{
		{"", "q", "/queue/q"},
		{"amq.topic", "a.b", "/topic/a.b"},
		{"logs", "", "/exchange/logs"},
		{"logs", "k/1", "/exchange/logs/k%2F1"},
		{"", "100%", "/queue/100%25"},
	} {
		if got := formatDestination(c.ex, c.key); got != c.want {
			t.Errorf("%q %q: got %q, want %q", c.ex, c.key, got, c.want)
		}
	}
}

func TestNegotiate(t *testing.T) {
	for _, c := range []struct {
		accept string
		want   wire.Version
		ok     bool
	}{
		{"", wire.V10, true},
		{"1.0", wire.V10, true},
		{"1.0,1.1", wire.V11, true},
		{"1.2,1.0", wire.V12, true},
		{"1.1, 1.2", wire.V12, true},
		{"2.0", 0, false},
	} {
		v, ok := negotiate(c.accept)
		if ok != c.ok || (ok && v != c.want) {
			t.Errorf("%q: got %v %v", c.accept, v, ok)
		}
	}
}

func TestHeartBeatRounding(t *testing.T) {
	// rabbit_stomp_processor:millis_to_seconds.
	for ms, want := range map[int64]time.Duration{0: 0, -1: 0, 1: time.Second, 999: time.Second, 1000: time.Second, 2500: 2 * time.Second} {
		if got := beatInterval(ms); got != want {
			t.Errorf("%d ms: got %v, want %v", ms, got, want)
		}
	}
	if _, _, err := parseHeartBeat("10"); err == nil {
		t.Error("heart-beat without a comma accepted")
	}
	if cx, cy, err := parseHeartBeat("100,200"); err != nil || cx != 100 || cy != 200 {
		t.Errorf("got %d %d %v", cx, cy, err)
	}
}

// Headers become properties and back as RabbitMQ maps them.
func TestPropertiesRoundTrip(t *testing.T) {
	f := frame.New(frame.SEND, frame.Destination, "/queue/a", frame.ContentType, "text/plain",
		"persistent", "true", "priority", "5", "correlation-id", "c", "reply-to", "/queue/r",
		"expiration", "1000", "amqp-message-id", "m", "type", "t", "app-id", "app", "timestamp", "42",
		"custom", "v", "custom", "second is ignored", frame.Receipt, "r1")
	p, err := properties(f)
	if err != nil {
		t.Fatal(err)
	}
	if p.ContentType != "text/plain" || p.DeliveryMode != 2 || p.Priority != 5 || p.CorrelationID != "c" ||
		p.ReplyTo != "/queue/r" || p.Expiration != "1000" || p.MessageID != "m" || p.Type != "t" ||
		p.AppID != "app" || p.Timestamp != 42 || p.Headers["custom"] != "v" {
		t.Fatalf("properties %+v", p)
	}
	if _, ok := p.Headers[frame.Receipt]; ok {
		t.Fatal("receipt header became an AMQP header")
	}
	if _, ok := p.Headers[frame.Destination]; ok {
		t.Fatal("destination header became an AMQP header")
	}
	b := wire.AppendCommand(nil, frame.MESSAGE)
	b = appendProperties(b, &p, wire.V12)
	b = wire.AppendBody(b, nil)
	r := wire.NewReader(bytes.NewReader(b), wire.Limits{})
	r.SetVersion(wire.V12)
	g, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{frame.ContentType, "persistent", "priority", "correlation-id", "reply-to", "expiration", "amqp-message-id", "type", "app-id", "timestamp", "custom"} {
		if g.Header.Get(k) != f.Header.Get(k) {
			t.Errorf("%s: got %q, want %q", k, g.Header.Get(k), f.Header.Get(k))
		}
	}
	for _, bad := range [][]string{{"priority", "300"}, {"expiration", "-1"}, {"timestamp", "x"}} {
		if _, err := properties(frame.New(frame.SEND, bad...)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestQueueArgs(t *testing.T) {
	args, err := queueArgs(frame.NewHeader("x-max-length", "10", "x-dead-letter-exchange", "dlx",
		"x-single-active-consumer", "true", "x-unknown", "ignored"))
	if err != nil {
		t.Fatal(err)
	}
	want := message.Table{"x-max-length": int64(10), "x-dead-letter-exchange": "dlx", "x-single-active-consumer": true}
	if len(args) != len(want) {
		t.Fatalf("got %v", args)
	}
	for k, v := range want {
		if args[k] != v {
			t.Errorf("%s: got %#v, want %#v", k, args[k], v)
		}
	}
	if _, err := queueArgs(frame.NewHeader("x-message-ttl", "soon")); err == nil {
		t.Error("a non-integer x-message-ttl accepted")
	}
}
