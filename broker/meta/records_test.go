package meta

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/parleymq/parley/broker/exchange"
)

func TestChangesRoundTrip(t *testing.T) {
	cases := [][]Change{
		nil,
		{{Key: "\x01", Value: []byte{5}}},
		{{Key: "\x02\x01/", Value: []byte{}}, {Key: "\x06\x01/\x03a/b", Delete: true}},
		{{Key: strings.Repeat("k", 300), Value: bytes.Repeat([]byte{0, 0xff}, 200)}, {Key: "\x00", Delete: true}},
	}
	for i, cs := range cases {
		enc := EncodeChanges(cs)
		if enc[0] != recordsVersion {
			t.Fatalf("case %d: version byte %d", i, enc[0])
		}
		got, err := DecodeChanges(enc)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if len(got) != len(cs) {
			t.Fatalf("case %d: %d changes, want %d", i, len(got), len(cs))
		}
		for j := range cs {
			if got[j].Key != cs[j].Key || got[j].Delete != cs[j].Delete || !bytes.Equal(got[j].Value, cs[j].Value) {
				t.Fatalf("case %d change %d: %+v, want %+v", i, j, got[j], cs[j])
			}
		}
	}
	for _, bad := range [][]byte{nil, {}, {2, 0}, {recordsVersion}, {recordsVersion, 1}, {recordsVersion, 1, opPut, 1, 'k'},
		{recordsVersion, 1, 7, 1, 'k'}, {recordsVersion, 1, opDelete, 0}, {recordsVersion, 0, 0}, {recordsVersion, 0xff, 0xff, 0xff, 0xff, 0x0f}} {
		if _, err := DecodeChanges(bad); err == nil {
			t.Errorf("DecodeChanges(%v) succeeded", bad)
		}
	}
}

// randomOps drives a State through n random operations (most fail their checks, which must
// leave no trace either), calling after() after each.
func randomOps(rng *rand.Rand, s *State, n int, after func(op string)) {
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	xnames := []string{"x1", "x2", "x3", "amq.topic", "amq.headers"}
	qnames := []string{"q1", "q2", "q3", "q4"}
	for range n {
		vh := pick("/", "/", "/", "v2")
		owner := uint64(1 + rng.IntN(2))
		var op string
		switch rng.IntN(11) {
		case 0:
			op = "declare exchange"
			_, _ = s.DeclareExchange(ExchangeDef{VHost: vh, Name: pick(xnames[:3]...), Type: pick("direct", "topic", "fanout", "headers"),
				Durable: rng.IntN(3) > 0, AutoDelete: rng.IntN(3) == 0}, false)
		case 1:
			op = "delete exchange"
			_ = s.DeleteExchange(vh, pick(xnames[:3]...), rng.IntN(2) == 0)
		case 2, 3:
			op = "declare queue"
			var args T
			if rng.IntN(3) == 0 {
				args = T{"x-message-ttl": int32(rng.IntN(3)), "x-dead-letter-exchange": "dlx"}
			}
			_, _, _ = s.DeclareQueue(QueueDef{VHost: vh, Name: pick(qnames...), Durable: rng.IntN(3) > 0, Exclusive: rng.IntN(4) == 0,
				AutoDelete: rng.IntN(4) == 0, Owner: owner, Args: args}, false)
		case 4:
			op = "delete queue"
			_, _ = s.DeleteQueue(vh, pick(qnames...), owner)
		case 5, 6:
			op = "bind"
			_ = s.Bind(randomBinding(rng, vh, xnames, qnames), owner)
		case 7:
			op = "unbind"
			_ = s.Unbind(randomBinding(rng, vh, xnames, qnames), owner)
		case 8:
			op = "retained"
			var msg []byte
			if rng.IntN(3) > 0 {
				msg = []byte(pick("a", "b", "c"))
			}
			s.SetRetained(vh, pick("t/1", "t/2", "t/3"), msg)
		case 9:
			op = "connection closed"
			s.ConnectionClosed(owner)
		case 10:
			if s.HasVHost("v2") && rng.IntN(3) == 0 {
				op = "delete vhost"
				_ = s.DeleteVHost("v2")
			} else {
				op = "add vhost"
				_ = s.AddVHost("v2")
			}
		}
		after(op)
	}
}

func randomBinding(rng *rand.Rand, vh string, xnames, qnames []string) BindingDef {
	b := BindingDef{VHost: vh, Source: xnames[rng.IntN(len(xnames))], Key: []string{"a", "b.#", ""}[rng.IntN(3)]}
	if rng.IntN(3) == 0 {
		b.Dest = exchange.Dest{Name: xnames[rng.IntN(len(xnames))], Exchange: true}
	} else {
		b.Dest = exchange.Dest{Name: qnames[rng.IntN(len(qnames))]}
	}
	if rng.IntN(3) == 0 {
		b.Args = T{"x-match": "any", "h": int32(rng.IntN(2))}
	}
	return b
}

// The record changes of any sequence of operations, applied in order to an empty record set,
// give the records of the final state (and every state on the way); the records rebuild a
// state with the same records; an entry with every change to date restores the same state.
func TestChangesFollowState(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		rng := rand.New(rand.NewPCG(seed, seed*7919))
		s := New()
		rs := NewRecordSet()
		step := 0
		randomOps(rng, s, 300, func(op string) {
			step++
			cs, err := s.TakeChanges()
			if err != nil {
				t.Fatalf("seed %d step %d (%s): %v", seed, step, op, err)
			}
			// An entry round trip, as group 0 does it.
			if _, err := rs.ApplyEntry(EncodeChanges(cs)); err != nil {
				t.Fatalf("seed %d step %d (%s): %v", seed, step, op, err)
			}
			want, err := s.Records()
			if err != nil {
				t.Fatal(err)
			}
			if !rs.Equal(want) {
				t.Fatalf("seed %d step %d (%s): records from changes differ from the state's:\n got %s\nwant %s",
					seed, step, op, dumpRecords(rs), dumpRecords(want))
			}
		})
		r, err := rs.State()
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		again, err := r.Records()
		if err != nil {
			t.Fatal(err)
		}
		if !again.Equal(rs) {
			t.Fatalf("seed %d: a state rebuilt from records has other records:\n got %s\nwant %s", seed, dumpRecords(again), dumpRecords(rs))
		}
		if cs, _ := r.TakeChanges(); len(cs) != 0 {
			t.Fatalf("seed %d: a restored state reports %d changes", seed, len(cs))
		}
		for _, vh := range s.VHosts() {
			if !sameBindings(r.Bindings(vh), durableBindings(s, vh)) {
				t.Fatalf("seed %d vhost %s: restored bindings %v, want %v", seed, vh, r.Bindings(vh), durableBindings(s, vh))
			}
		}
	}
}

// sameBindings compares as sets: Bindings does not order bindings that differ only in
// their arguments.
func sameBindings(a, b []BindingDef) bool {
	count := map[string]int{}
	for _, x := range a {
		count[fmt.Sprintf("%#v", x)]++
	}
	for _, x := range b {
		count[fmt.Sprintf("%#v", x)]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return len(a) == len(b)
}

func durableBindings(s *State, vh string) []BindingDef {
	v := s.vhosts[vh]
	out := []BindingDef{}
	for _, b := range s.Bindings(vh) {
		if v.bindingDurable(exchange.Binding{Source: b.Source, Dest: b.Dest, Key: b.Key, Args: b.Args}) {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return make([]BindingDef, 0)
	}
	return out
}

func dumpRecords(rs *RecordSet) string {
	var b strings.Builder
	for _, k := range sortedKeys(rs) {
		fmt.Fprintf(&b, "\n  %q=%q", k, rs.recs[k])
	}
	return b.String()
}

func sortedKeys(rs *RecordSet) []string {
	var ks []string
	for k := range rs.recs {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}

// Changes that touch nothing durable produce no change, so the broker writes nothing.
func TestTransientChangesProduceNone(t *testing.T) {
	s := New()
	if cs, err := s.TakeChanges(); err != nil || len(cs) != 8 { // vhost "/" and its 7 exchanges
		t.Fatalf("a new state's changes: %d, %v", len(cs), err)
	}
	steps := []func(*State) error{
		qdecl("tq", false, false, false, 1, nil),
		qdecl("eq", true, true, false, 1, nil), // exclusive: never durable
		bind("amq.topic", "tq", false, "a.#", nil, 1),
		xdecl("tx", "fanout", false, false, false, nil),
		bind("tx", "eq", false, "", nil, 1),
		unbind("amq.topic", "tq", false, "a.#", nil, 1),
		qdel("tq", 1),
		xdel("tx", false),
		xdecl("amq.topic", "topic", true, false, false, nil), // equivalent redeclare
	}
	for i, st := range steps {
		if err := st(s); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if cs, _ := s.TakeChanges(); len(cs) != 0 {
			t.Fatalf("step %d: changes %+v", i, cs)
		}
	}
	if err := qdecl("dq", true, false, false, 1, nil)(s); err != nil {
		t.Fatal(err)
	}
	if err := bind("amq.topic", "dq", false, "k", nil, 1)(s); err != nil {
		t.Fatal(err)
	}
	if cs, _ := s.TakeChanges(); len(cs) != 3 { // the group counter, the queue, the binding
		t.Fatalf("durable declare and bind: %+v", cs)
	}
	if err := bind("amq.topic", "dq", false, "k", nil, 1)(s); err != nil {
		t.Fatal(err)
	}
	if cs, _ := s.TakeChanges(); len(cs) != 0 {
		t.Fatalf("binding again: %+v", cs)
	}
	s.SetRetained(DefaultVHost, "a/b", []byte("m"))
	cs, _ := s.TakeChanges()
	if len(cs) != 1 || cs[0].Delete || string(cs[0].Value) != "m" {
		t.Fatalf("set retained: %+v", cs)
	}
	s.Untake(cs)
	if again, _ := s.TakeChanges(); !reflect.DeepEqual(again, cs) {
		t.Fatalf("untaken changes came back as %+v", again)
	}
}

// Metadata written before records (the whole metadata as JSON, in every entry and snapshot of
// group 0) still restores, and as an entry it replaces every record.
func TestLegacySnapshotRestores(t *testing.T) {
	data, err := os.ReadFile("testdata/legacy-snapshot.json")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Restore(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.VHosts(); !reflect.DeepEqual(got, []string{"/", "v2"}) {
		t.Fatalf("vhosts %v", got)
	}
	dq, ok := s.Queue("/", "dq")
	if !ok || dq.Group != QueueGroupBase+1 || dq.Args["x-message-ttl"] != int32(100) {
		t.Fatalf("queue dq %+v", dq)
	}
	if q, ok := s.Queue("/", "dq2"); !ok || q.Group != QueueGroupBase+3 {
		t.Fatalf("queue dq2 %+v", q)
	}
	if _, ok := s.Queue("/", "gone"); ok {
		t.Fatal("deleted queue restored")
	}
	if x, ok := s.Exchange("/", "adx"); !ok || !x.AutoDelete {
		t.Fatalf("exchange adx %+v", x)
	}
	if n := len(s.Bindings("/")); n != 4 {
		t.Fatalf("%d bindings: %v", n, s.Bindings("/"))
	}
	got := map[string]string{}
	for _, vh := range []string{"/", "v2"} {
		s.RetainedMessages(vh, func(topic string, msg []byte) bool {
			got[vh+" "+topic] = string(msg)
			return true
		})
	}
	if len(got) != 2 || got["/ a/b"] != "one" || got["v2 c"] != "\x00\x01\x02" {
		t.Fatalf("retained %q", got)
	}
	// A redeclared queue after the restore does not reuse a group.
	if q, _, err := s.DeclareQueue(QueueDef{VHost: "/", Name: "gone", Durable: true}, false); err != nil || q.Group != QueueGroupBase+4 {
		t.Fatalf("redeclare after restore: %+v %v", q, err)
	}

	rs := NewRecordSet()
	rs.put("\x06\x01/\x05stale", []byte("x"))
	queues, err := rs.ApplyEntry(data)
	if err != nil || !queues {
		t.Fatalf("legacy entry: %v, queues %v", err, queues)
	}
	want, _ := Restore(data)
	wantRecs, _ := want.Records()
	if !rs.Equal(wantRecs) {
		t.Fatalf("a legacy entry did not replace the records: %s", dumpRecords(rs))
	}
	qs, err := rs.DurableQueues()
	if err != nil || len(qs) != 2 || qs[0].Name != "dq" || qs[1].Name != "dq2" || qs[1].Group != QueueGroupBase+3 {
		t.Fatalf("durable queues %+v %v", qs, err)
	}
}

// A snapshot is the records; any corruption is an error, never a panic (FuzzDecodeChanges
// looks further).
func TestRecordSetSnapshot(t *testing.T) {
	s := New()
	if err := qdecl("dq", true, false, false, 1, T{"x-max-length": int64(3)})(s); err != nil {
		t.Fatal(err)
	}
	s.SetRetained("/", "r", []byte("m"))
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := DecodeRecordSet(snap)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rs.Encode(), snap) {
		t.Fatal("a decoded snapshot encodes differently")
	}
	for _, bad := range [][]byte{
		EncodeChanges([]Change{{Key: "\x03\x01/\x01x", Value: []byte(`{"type":"direct"}`)}}), // exchange in no vhost
		EncodeChanges([]Change{{Key: "\x09", Value: nil}}),                                   // unknown kind
		EncodeChanges([]Change{{Key: "\x01", Value: []byte{0x80}}}),                          // bad counter
		EncodeChanges([]Change{{Key: "\x02\x01/", Delete: true}}),                            // a delete in a snapshot
	} {
		if _, err := Restore(bad); err == nil {
			t.Errorf("Restore(%q) succeeded", bad)
		}
	}
}

// FuzzDecodeChanges: whatever the bytes, decoding does not panic; what decodes re-encodes to
// the same changes, and applying it to a record set and rebuilding a state fails cleanly or
// gives a state whose records rebuild the same state. Seeds: testdata/fuzz/FuzzDecodeChanges.
func FuzzDecodeChanges(f *testing.F) {
	s := New()
	_ = qdecl("dq", true, false, false, 1, T{"x-max-length": int64(3)})(s)
	_ = bind("amq.headers", "dq", false, "", T{"x-match": "any", "a": "b"}, 1)(s)
	s.SetRetained("/", "r", []byte("m"))
	snap, _ := s.Snapshot()
	f.Add(snap)
	f.Fuzz(func(t *testing.T, data []byte) {
		cs, err := DecodeChanges(data)
		if err != nil {
			return
		}
		again, err := DecodeChanges(EncodeChanges(cs))
		if err != nil || len(again) != len(cs) {
			t.Fatalf("re-encoded changes do not decode: %v", err)
		}
		for i := range cs {
			if again[i].Key != cs[i].Key || again[i].Delete != cs[i].Delete || !bytes.Equal(again[i].Value, cs[i].Value) {
				t.Fatalf("change %d: %+v, was %+v", i, again[i], cs[i])
			}
		}
		rs := NewRecordSet()
		if _, err := rs.ApplyEntry(data); err != nil {
			t.Fatal(err)
		}
		st, err := rs.State()
		if err != nil {
			return
		}
		recs, err := st.Records()
		if err != nil {
			return
		}
		if _, err := recs.State(); err != nil {
			t.Fatalf("the records of a restored state do not restore: %v", err)
		}
		_, _ = rs.DurableQueues()
	})
}
