package meta

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/parleymq/parley/broker/exchange"
)

func TestSnapshotRoundTrip(t *testing.T) {
	s := New()
	args := T{
		"x-message-ttl": int32(100), "x-max-length": int64(5), "b": int8(-1), "B": uint8(2), "s": int16(-3),
		"u": uint16(4), "i": uint32(6), "f": float32(1.5), "d": 2.25, "bytes": []byte{0, 1}, "bool": true,
		"void": nil, "ts": time.Unix(1700000000, 0).UTC(), "tbl": T{"k": "v"}, "arr": []any{int32(1), "two"},
	}
	steps := []func(*State) error{
		xdecl("dx", "topic", true, false, false, T{"alternate-exchange": "ae"}),
		xdecl("tx", "fanout", false, false, false, nil),
		qdecl("dq", true, false, false, 1, args),
		qdecl("tq", false, false, false, 1, nil),
		bind("dx", "dq", false, "a.#", T{"k": int32(1)}, 1),
		bind("dx", "tq", false, "a.#", nil, 1), // transient queue: not kept
		bind("tx", "dq", false, "", nil, 1),    // transient exchange: not kept
		bind("amq.topic", "dx", true, "x.*", nil, 1),
	}
	for _, st := range steps {
		if err := st(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddVHost("v2"); err != nil {
		t.Fatal(err)
	}
	data, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Restore(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.VHosts(); !reflect.DeepEqual(got, []string{"/", "v2"}) {
		t.Fatalf("vhosts %v", got)
	}
	q, ok := r.Queue("/", "dq")
	if !ok || !q.Durable || !reflect.DeepEqual(q.Args, args) {
		t.Fatalf("restored queue %+v, want args %v", q, args)
	}
	if _, ok := r.Queue("/", "tq"); ok {
		t.Fatal("transient queue restored")
	}
	if _, ok := r.Exchange("/", "tx"); ok {
		t.Fatal("transient exchange restored")
	}
	x, ok := r.Exchange("/", "dx")
	if !ok || x.Type != "topic" || x.Args["alternate-exchange"] != "ae" {
		t.Fatalf("restored exchange %+v", x)
	}
	want := []BindingDef{
		{VHost: "/", Source: "amq.topic", Dest: exchange.Dest{Name: "dx", Exchange: true}, Key: "x.*"},
		{VHost: "/", Source: "dx", Dest: exchange.Dest{Name: "dq"}, Key: "a.#", Args: T{"k": int32(1)}},
	}
	if got := r.Bindings("/"); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored bindings %+v\nwant %+v", got, want)
	}
	if got := r.Router("/").Route("dx", "a.b", nil, nil); !reflect.DeepEqual(got, []string{"dq"}) {
		t.Fatalf("restored routing: %v", got)
	}
	// Redeclaring with the original arguments is equivalent: the types survived.
	if _, _, err := r.DeclareQueue(QueueDef{VHost: "/", Name: "dq", Durable: true, Args: args}, false); err != nil {
		t.Fatalf("redeclare after restore: %v", err)
	}
}

func TestSnapshotErrors(t *testing.T) {
	type decimal struct{ scale, value int }
	s := New()
	if err := qdecl("q", true, false, false, 1, T{"d": decimal{1, 2}})(s); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot(); !errors.Is(err, ErrUnsupportedValue) {
		t.Fatalf("Snapshot with an unknown value type: %v", err)
	}
	for _, bad := range []string{"", "{", `{"version":99}`, `{"version":1,"vhosts":[{"name":"/","queues":[{"name":"q","args":{"a":{"t":"?"}}}]}]}`} {
		if _, err := Restore([]byte(bad)); err == nil {
			t.Errorf("Restore(%q) succeeded", bad)
		}
	}
}
