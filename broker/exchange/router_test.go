package exchange

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleymq/parley/broker/message"
)

func q(name string) Dest { return Dest{Name: name} }
func x(name string) Dest { return Dest{Name: name, Exchange: true} }

func route(r *Router, ex, key string, h message.Table) []string {
	out := r.Route(ex, key, h, nil)
	slices.Sort(out)
	return out
}

// topicKeys and topicMatches were recorded against RabbitMQ 3.10.8: each binding key bound
// to amq.topic, each routing key published once.
var topicKeys = []string{"", "a", "a.b", "a.b.c", "a..c", ".", "a.", "ab", "b.a", "a.b.b", "a.x.y.b", "a.x",
	"a..b", "*", "#", "..", "x.b.y", "b"}

var topicMatches = []struct {
	bind    string
	matches []string
}{
	{"a.b.c", []string{"a.b.c"}},
	{"a.*.c", []string{"a.b.c", "a..c"}},
	{"#", topicKeys},
	{"", []string{""}},
	{"*", []string{"a", "ab", "*", "#", "b"}},
	{"*.*", []string{"a.b", ".", "a.", "b.a", "a.x"}},
	{"a.#", []string{"a", "a.b", "a.b.c", "a..c", "a.", "a.b.b", "a.x.y.b", "a.x", "a..b"}},
	{"#.a", []string{"a", "b.a"}},
	{"a.#.b", []string{"a.b", "a.b.b", "a.x.y.b", "a..b"}},
	{"#.#", topicKeys},
	{"a.*.#", []string{"a.b", "a.b.c", "a..c", "a.", "a.b.b", "a.x.y.b", "a.x", "a..b"}},
	{"*.#", []string{"a", "a.b", "a.b.c", "a..c", ".", "a.", "ab", "b.a", "a.b.b", "a.x.y.b", "a.x", "a..b", "*", "#", "..", "x.b.y", "b"}},
	{"#.*", []string{"a", "a.b", "a.b.c", "a..c", ".", "a.", "ab", "b.a", "a.b.b", "a.x.y.b", "a.x", "a..b", "*", "#", "..", "x.b.y", "b"}},
	{"a", []string{"a"}},
	{"a.", []string{"a."}},
	{".", []string{"."}},
	{"a..b", []string{"a..b"}},
	{"a.*.b", []string{"a.b.b", "a..b"}},
	{"#.#.a", []string{"a", "b.a"}},
	{"*.*.#", []string{"a.b", "a.b.c", "a..c", ".", "a.", "b.a", "a.b.b", "a.x.y.b", "a.x", "a..b", "..", "x.b.y"}},
	{"#.b.#", []string{"a.b", "a.b.c", "b.a", "a.b.b", "a.x.y.b", "a..b", "x.b.y", "b"}},
}

func TestTopicMatchesRabbitMQ(t *testing.T) {
	// One queue per binding key, all on one exchange, as in the recording.
	r := NewRouter().WithExchange(ExchangeInfo{Name: "t", Type: Topic})
	for i, c := range topicMatches {
		r = r.WithBinding(Binding{Source: "t", Dest: q(fmt.Sprint(i)), Key: c.bind})
	}
	for _, key := range topicKeys {
		got := route(r, "t", key, nil)
		var want []string
		for i, c := range topicMatches {
			if slices.Contains(c.matches, key) {
				want = append(want, fmt.Sprint(i))
			}
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("routing key %q: got queues %v, want %v", key, got, want)
		}
	}
	// And each binding alone on its own exchange.
	for _, c := range topicMatches {
		r := NewRouter().WithExchange(ExchangeInfo{Name: "t", Type: Topic}).
			WithBinding(Binding{Source: "t", Dest: q("q"), Key: c.bind})
		for _, key := range topicKeys {
			got := len(r.Route("t", key, nil, nil)) == 1
			if want := slices.Contains(c.matches, key); got != want {
				t.Errorf("binding %q, routing key %q: matched %v, want %v", c.bind, key, got, want)
			}
		}
	}
}

func TestTopicUnbindPrunes(t *testing.T) {
	r0 := NewRouter().WithExchange(ExchangeInfo{Name: "t", Type: Topic})
	keys := []string{"a.b", "a.*", "a.#", "#", "*.b", "", "a..b", "a.b"}
	r := r0
	for i, k := range keys {
		r = r.WithBinding(Binding{Source: "t", Dest: q(fmt.Sprint(i % 3)), Key: k})
	}
	for i, k := range keys {
		r = r.WithoutBinding(Binding{Source: "t", Dest: q(fmt.Sprint(i % 3)), Key: k})
	}
	x, _ := r.xs.get("t")
	if x.trie != nil || x.n != 0 || x.byKey.len() != 0 {
		t.Fatalf("trie not pruned after removing every binding: %+v", x)
	}
	if got := r.Route("t", "a.b", nil, nil); len(got) != 0 {
		t.Fatalf("routed to %v after unbinding everything", got)
	}
}

func TestDirectFanoutDefault(t *testing.T) {
	r := NewRouter().
		WithExchange(ExchangeInfo{Name: "d", Type: Direct}).
		WithExchange(ExchangeInfo{Name: "f", Type: Fanout}).
		WithBinding(Binding{Source: "d", Dest: q("q1"), Key: "k"}).
		WithBinding(Binding{Source: "d", Dest: q("q2"), Key: "k"}).
		WithBinding(Binding{Source: "d", Dest: q("q3"), Key: "other"}).
		WithBinding(Binding{Source: "d", Dest: q("q1"), Key: "k", Args: message.Table{"a": int32(1)}}).
		WithBinding(Binding{Source: "f", Dest: q("q1"), Key: "x"}).
		WithBinding(Binding{Source: "f", Dest: q("q2"), Key: "y"}).
		WithBinding(Binding{Source: "f", Dest: q("q1"), Key: "z"})
	tests := []struct {
		ex, key string
		want    []string
	}{
		{"d", "k", []string{"q1", "q2"}},
		{"d", "other", []string{"q3"}},
		{"d", "nope", nil},
		{"d", "", nil},
		{"f", "anything", []string{"q1", "q2"}},
		{"", "some-queue", []string{"some-queue"}},
		{"", "", []string{""}},
		{"missing", "k", nil},
	}
	for _, tc := range tests {
		if got := route(r, tc.ex, tc.key, nil); !slices.Equal(got, tc.want) {
			t.Errorf("Route(%q, %q) = %v, want %v", tc.ex, tc.key, got, tc.want)
		}
	}
}

func TestRouteAppendsToOut(t *testing.T) {
	r := NewRouter().WithExchange(ExchangeInfo{Name: "t", Type: Topic}).
		WithBinding(Binding{Source: "t", Dest: q("b"), Key: "#"}).
		WithBinding(Binding{Source: "t", Dest: q("a"), Key: "x"})
	out := r.Route("t", "x", nil, []string{"keep", "zzz"})
	if !slices.Equal(out, []string{"keep", "zzz", "a", "b"}) {
		t.Fatalf("Route did not append after existing elements: %v", out)
	}
}

func TestHeadersMatchesRabbitMQ(t *testing.T) {
	// Recorded against RabbitMQ 3.10.8 (amq.headers).
	tests := []struct {
		name string
		args message.Table
		hdrs message.Table
		want bool
	}{
		{"all a=1 / a=int32 1", message.Table{"a": int32(1)}, message.Table{"a": int32(1)}, true},
		{"all int32 / int64", message.Table{"a": int32(1)}, message.Table{"a": int64(1)}, true},
		{"all int32 / double", message.Table{"a": int32(1)}, message.Table{"a": float64(1)}, true},
		{"all str / int", message.Table{"a": "1"}, message.Table{"a": int32(1)}, false},
		{"all str / bytes", message.Table{"a": "x"}, message.Table{"a": []byte("x")}, true},
		{"all a,b / a only", message.Table{"a": "1", "b": "2"}, message.Table{"a": "1"}, false},
		{"all a,b / a,b,c", message.Table{"a": "1", "b": "2"}, message.Table{"a": "1", "b": "2", "c": "3"}, true},
		{"any a,b / a only", message.Table{"x-match": "any", "a": "1", "b": "2"}, message.Table{"a": "1"}, true},
		{"any a,b / none", message.Table{"x-match": "any", "a": "1", "b": "2"}, nil, false},
		{"any a,b / wrong values", message.Table{"x-match": "any", "a": "1", "b": "2"}, message.Table{"a": "2", "b": "1"}, false},
		{"all empty / none", message.Table{}, nil, true},
		{"all xmatch only / none", message.Table{"x-match": "all"}, nil, true},
		{"any xmatch only / a", message.Table{"x-match": "any"}, message.Table{"a": "1"}, false},
		{"all x-foo / none", message.Table{"x-foo": "1"}, nil, true},
		{"all x-foo / x-foo=2", message.Table{"x-foo": "1"}, message.Table{"x-foo": "2"}, true},
		{"all-with-x x-foo / x-foo=1", message.Table{"x-match": "all-with-x", "x-foo": "1"}, message.Table{"x-foo": "1"}, true},
		{"all-with-x x-foo / x-foo=2", message.Table{"x-match": "all-with-x", "x-foo": "1"}, message.Table{"x-foo": "2"}, false},
		{"all-with-x x-foo / none", message.Table{"x-match": "all-with-x", "x-foo": "1"}, nil, false},
		{"any-with-x x-foo,a / x-foo=1", message.Table{"x-match": "any-with-x", "x-foo": "1", "a": "9"}, message.Table{"x-foo": "1"}, true},
		{"any x-foo / x-foo=1", message.Table{"x-match": "any", "x-foo": "1"}, message.Table{"x-foo": "1"}, false},
		{"all void a / a=5", message.Table{"a": nil}, message.Table{"a": int32(5)}, true},
		{"all void a / none", message.Table{"a": nil}, nil, false},
		{"any void a / a=x", message.Table{"x-match": "any", "a": nil}, message.Table{"a": "x"}, true},
		{"all a=5 / a=void", message.Table{"a": int32(5)}, message.Table{"a": nil}, false},
		{"all bool / bool", message.Table{"a": true}, message.Table{"a": true}, true},
		{"all bool / str true", message.Table{"a": true}, message.Table{"a": "true"}, false},
		{"all table / table", message.Table{"a": message.Table{"k": int32(1)}}, message.Table{"a": message.Table{"k": int32(1)}}, true},
		{"all table / table long", message.Table{"a": message.Table{"k": int32(1)}}, message.Table{"a": message.Table{"k": int64(1)}}, false},
		{"all / extra headers", message.Table{"x-match": "all", "a": "1"}, message.Table{"a": "1", "b": "2"}, true},
		{"all timestamp / int", message.Table{"a": time.Unix(5, 0)}, message.Table{"a": int64(5)}, true},
		{"all float / double", message.Table{"a": float32(1.5)}, message.Table{"a": float64(1.5)}, true},
		{"unknown x-match is all", message.Table{"x-match": "bogus", "a": "1", "b": "2"}, message.Table{"a": "1"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRouter().WithExchange(ExchangeInfo{Name: "h", Type: Headers}).
				WithBinding(Binding{Source: "h", Dest: q("q"), Args: tc.args})
			if got := len(r.Route("h", "ignored", tc.hdrs, nil)) == 1; got != tc.want {
				t.Fatalf("matched %v, want %v", got, tc.want)
			}
		})
	}
}

func TestExchangeToExchangeAndCycles(t *testing.T) {
	r := NewRouter()
	for _, n := range []string{"a", "b", "c"} {
		r = r.WithExchange(ExchangeInfo{Name: n, Type: Fanout})
	}
	r = r.WithExchange(ExchangeInfo{Name: "t", Type: Topic})
	r = r.WithBinding(Binding{Source: "a", Dest: x("b")}).
		WithBinding(Binding{Source: "b", Dest: x("c")}).
		WithBinding(Binding{Source: "c", Dest: x("a")}). // cycle
		WithBinding(Binding{Source: "b", Dest: x("b")}). // self loop
		WithBinding(Binding{Source: "a", Dest: q("qa")}).
		WithBinding(Binding{Source: "b", Dest: q("qb")}).
		WithBinding(Binding{Source: "c", Dest: q("qc")}).
		WithBinding(Binding{Source: "c", Dest: q("qa")}).
		WithBinding(Binding{Source: "c", Dest: x("t")}).
		WithBinding(Binding{Source: "c", Dest: x("ghost")}). // destination exchange missing
		WithBinding(Binding{Source: "t", Dest: q("qt"), Key: "k.*"})
	tests := []struct {
		ex, key string
		want    []string
	}{
		{"a", "k.1", []string{"qa", "qb", "qc", "qt"}},
		{"b", "x", []string{"qa", "qb", "qc"}},
		{"c", "k.2", []string{"qa", "qb", "qc", "qt"}},
		{"t", "k.2", []string{"qt"}},
	}
	for _, tc := range tests {
		got := r.Route(tc.ex, tc.key, nil, nil)
		if !slices.IsSorted(got) {
			t.Errorf("Route(%q) not deduplicated in order: %v", tc.ex, got)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Route(%q, %q) = %v, want %v", tc.ex, tc.key, got, tc.want)
		}
	}
}

func TestAlternateExchanges(t *testing.T) {
	r := NewRouter().
		WithExchange(ExchangeInfo{Name: "main", Type: Direct, AlternateExchange: "ae1"}).
		WithExchange(ExchangeInfo{Name: "ae1", Type: Direct, AlternateExchange: "ae2"}).
		WithExchange(ExchangeInfo{Name: "ae2", Type: Fanout, AlternateExchange: "main"}). // cycle
		WithExchange(ExchangeInfo{Name: "loop", Type: Direct, AlternateExchange: "loop"}).
		WithExchange(ExchangeInfo{Name: "dangling", Type: Direct, AlternateExchange: "nope"}).
		WithExchange(ExchangeInfo{Name: "e2e", Type: Direct, AlternateExchange: "ae2"}).
		WithExchange(ExchangeInfo{Name: "empty", Type: Direct}).
		WithExchange(ExchangeInfo{Name: "toDefault", Type: Direct, AlternateExchange: ""}).
		WithBinding(Binding{Source: "main", Dest: q("qmain"), Key: "m"}).
		WithBinding(Binding{Source: "ae1", Dest: q("qae1"), Key: "a"}).
		WithBinding(Binding{Source: "e2e", Dest: x("empty"), Key: "e"})
	tests := []struct {
		ex, key string
		want    []string
	}{
		{"main", "m", []string{"qmain"}},
		{"main", "a", []string{"qae1"}}, // main matched nothing: ae1 matched
		{"main", "zzz", nil},            // ae1 -> ae2 (fanout, no bindings) -> main again: stop
		{"ae1", "m", nil},               // ae1 -> ae2 -> main matches m... main is reached via AE
		{"loop", "k", nil},              // self-referencing AE
		{"dangling", "k", nil},          // AE does not exist
		{"e2e", "e", nil},               // e2e matched an exchange: no AE, even though nothing was reached
		{"e2e", "other", nil},           // e2e matched nothing: ae2, then main with "other": nothing
	}
	tests[3].want = []string{"qmain"}
	for _, tc := range tests {
		if got := route(r, tc.ex, tc.key, nil); !slices.Equal(got, tc.want) {
			t.Errorf("Route(%q, %q) = %v, want %v", tc.ex, tc.key, got, tc.want)
		}
	}
}

func TestSnapshotsAreImmutable(t *testing.T) {
	r0 := NewRouter().WithExchange(ExchangeInfo{Name: "t", Type: Topic})
	r1 := r0.WithBinding(Binding{Source: "t", Dest: q("q1"), Key: "a.*"})
	r2 := r1.WithBinding(Binding{Source: "t", Dest: q("q2"), Key: "a.b"})
	r3 := r2.WithoutDest(q("q1"))
	r4 := r3.WithoutExchange("t")
	checks := []struct {
		r    *Router
		want []string
	}{
		{r0, nil}, {r1, []string{"q1"}}, {r2, []string{"q1", "q2"}}, {r3, []string{"q2"}}, {r4, nil},
	}
	for i, c := range checks {
		if got := route(c.r, "t", "a.b", nil); !slices.Equal(got, c.want) {
			t.Errorf("snapshot %d routes to %v, want %v", i, got, c.want)
		}
	}
	if r2.HasBindings("t") != true || r4.HasBindings("t") {
		t.Error("HasBindings wrong")
	}
	if n := len(r2.Bindings()); n != 2 {
		t.Errorf("r2 has %d bindings, want 2", n)
	}
	if r2.WithBinding(Binding{Source: "t", Dest: q("q2"), Key: "a.b"}) != r2 {
		t.Error("adding an existing binding must return the same router")
	}
	if r2.WithoutBinding(Binding{Source: "t", Dest: q("q2"), Key: "nope"}) != r2 {
		t.Error("removing a missing binding must return the same router")
	}
}

func TestBindingIdentityIncludesArgs(t *testing.T) {
	r := NewRouter().WithExchange(ExchangeInfo{Name: "h", Type: Headers})
	b1 := Binding{Source: "h", Dest: q("q"), Args: message.Table{"a": "1"}}
	b2 := Binding{Source: "h", Dest: q("q"), Args: message.Table{"a": "2"}}
	r = r.WithBinding(b1).WithBinding(b2)
	if got := len(r.Bindings()); got != 2 {
		t.Fatalf("%d bindings, want 2", got)
	}
	if got := r.Route("h", "", message.Table{"a": "2"}, nil); !slices.Equal(got, []string{"q"}) {
		t.Fatalf("got %v", got)
	}
	if got := r.Route("h", "", message.Table{"a": "1", "b": 1}, nil); !slices.Equal(got, []string{"q"}) {
		t.Fatalf("got %v", got)
	}
	r = r.WithoutBinding(Binding{Source: "h", Dest: q("q"), Args: message.Table{"a": int32(1)}}) // type differs
	if got := len(r.Bindings()); got != 2 {
		t.Fatalf("removed a binding whose args differ in type: %d left", got)
	}
	r = r.WithoutBinding(b1)
	if got := r.Route("h", "", message.Table{"a": "1"}, nil); len(got) != 0 {
		t.Fatalf("removed binding still routes: %v", got)
	}
	if got := r.BindingsTo(q("q")); len(got) != 1 || got[0].Args["a"] != "2" {
		t.Fatalf("BindingsTo = %v", got)
	}
}

func TestWithoutExchangeDropsBothEnds(t *testing.T) {
	r := NewRouter().
		WithExchange(ExchangeInfo{Name: "a", Type: Fanout}).
		WithExchange(ExchangeInfo{Name: "b", Type: Fanout}).
		WithBinding(Binding{Source: "a", Dest: x("b")}).
		WithBinding(Binding{Source: "b", Dest: q("q")})
	r = r.WithoutExchange("b")
	if r.HasBindings("a") {
		t.Fatal("binding a->b survived the deletion of b")
	}
	if len(r.BindingsTo(q("q"))) != 0 || len(r.Bindings()) != 0 {
		t.Fatalf("bindings left: %v", r.Bindings())
	}
	r = r.WithExchange(ExchangeInfo{Name: "b", Type: Fanout})
	if got := r.Route("a", "", nil, nil); len(got) != 0 {
		t.Fatalf("recreated b inherited old bindings: %v", got)
	}
}

func TestManyKeysShard(t *testing.T) {
	r := NewRouter().WithExchange(ExchangeInfo{Name: "d", Type: Direct}).
		WithExchange(ExchangeInfo{Name: "t", Type: Topic})
	const n = 3000
	for i := range n {
		k := fmt.Sprintf("k%d", i)
		r = r.WithBinding(Binding{Source: "d", Dest: q("q" + k), Key: k})
		r = r.WithBinding(Binding{Source: "t", Dest: q("q" + k), Key: "dev." + k + ".*"})
	}
	for i := 0; i < n; i += 7 {
		k := fmt.Sprintf("k%d", i)
		if got := r.Route("d", k, nil, nil); !slices.Equal(got, []string{"q" + k}) {
			t.Fatalf("direct %s -> %v", k, got)
		}
		if got := r.Route("t", "dev."+k+".temp", nil, nil); !slices.Equal(got, []string{"q" + k}) {
			t.Fatalf("topic %s -> %v", k, got)
		}
	}
	for i := 0; i < n; i += 2 {
		k := fmt.Sprintf("k%d", i)
		r = r.WithoutDest(q("q" + k))
	}
	if got := len(r.Bindings()); got != n {
		t.Fatalf("%d bindings left, want %d", got, n)
	}
	if got := r.Route("d", "k2", nil, nil); len(got) != 0 {
		t.Fatalf("deleted queue still routed: %v", got)
	}
	if got := r.Route("t", "dev.k3.x", nil, nil); !slices.Equal(got, []string{"qk3"}) {
		t.Fatalf("got %v", got)
	}
}

func TestParseType(t *testing.T) {
	for _, s := range []string{"direct", "fanout", "topic", "headers"} {
		ty, ok := ParseType(s)
		if !ok || ty.String() != s {
			t.Errorf("ParseType(%q) = %v, %v", s, ty, ok)
		}
	}
	for _, s := range []string{"", "Direct", "x-delayed-message", "match"} {
		if _, ok := ParseType(s); ok {
			t.Errorf("ParseType(%q) accepted", s)
		}
	}
}

func TestRouteAllocations(t *testing.T) {
	r := NewRouter().
		WithExchange(ExchangeInfo{Name: "d", Type: Direct}).
		WithExchange(ExchangeInfo{Name: "f", Type: Fanout}).
		WithExchange(ExchangeInfo{Name: "t", Type: Topic})
	for i := range 200 {
		r = r.WithBinding(Binding{Source: "d", Dest: q(fmt.Sprint("q", i)), Key: fmt.Sprint("k", i)})
		r = r.WithBinding(Binding{Source: "t", Dest: q(fmt.Sprint("q", i)), Key: fmt.Sprintf("a.%d.#", i)})
	}
	r = r.WithBinding(Binding{Source: "f", Dest: q("q1")}).WithBinding(Binding{Source: "f", Dest: q("q2")})
	out := make([]string, 0, 16)
	for _, c := range []struct{ ex, key string }{{"d", "k5"}, {"f", ""}, {"t", "a.5.x.y"}} {
		n := testing.AllocsPerRun(100, func() { out = r.Route(c.ex, c.key, nil, out[:0]) })
		if n != 0 {
			t.Errorf("Route(%q, %q) allocates %.1f times", c.ex, c.key, n)
		}
	}
}

func BenchmarkRouteDirect(b *testing.B) {
	r := NewRouter().WithExchange(ExchangeInfo{Name: "d", Type: Direct})
	for i := range 10000 {
		r = r.WithBinding(Binding{Source: "d", Dest: q(fmt.Sprint("q", i)), Key: fmt.Sprint("k", i)})
	}
	out := make([]string, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		out = r.Route("d", "k4242", nil, out[:0])
	}
}

func BenchmarkRouteTopic10k(b *testing.B) {
	r := NewRouter().WithExchange(ExchangeInfo{Name: "t", Type: Topic})
	for i := range 10000 {
		var key string
		switch i % 4 {
		case 0:
			key = fmt.Sprintf("sensor.%d.temp", i)
		case 1:
			key = fmt.Sprintf("sensor.%d.*", i)
		case 2:
			key = fmt.Sprintf("sensor.*.%d", i)
		default:
			key = fmt.Sprintf("sensor.%d.#", i)
		}
		r = r.WithBinding(Binding{Source: "t", Dest: q(fmt.Sprint("q", i)), Key: key})
	}
	out := make([]string, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		out = r.Route("t", "sensor.4241.temp", nil, out[:0])
	}
}

func BenchmarkRouteFanout100(b *testing.B) {
	r := NewRouter().WithExchange(ExchangeInfo{Name: "f", Type: Fanout})
	for i := range 100 {
		r = r.WithBinding(Binding{Source: "f", Dest: q(fmt.Sprint("q", i))})
	}
	out := make([]string, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		out = r.Route("f", "", nil, out[:0])
	}
}

func BenchmarkRouteHeaders100(b *testing.B) {
	r := NewRouter().WithExchange(ExchangeInfo{Name: "h", Type: Headers})
	for i := range 100 {
		r = r.WithBinding(Binding{Source: "h", Dest: q(fmt.Sprint("q", i)),
			Args: message.Table{"x-match": "all", "id": int32(i), "kind": "temp"}})
	}
	h := message.Table{"id": int32(42), "kind": "temp", "x-extra": "y"}
	out := make([]string, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		out = r.Route("h", "", h, out[:0])
	}
}

func BenchmarkBindTopic10k(b *testing.B) {
	for b.Loop() {
		r := NewRouter().WithExchange(ExchangeInfo{Name: "t", Type: Topic})
		for i := range 10000 {
			r = r.WithBinding(Binding{Source: "t", Dest: q(fmt.Sprint("q", i)), Key: "dev." + strings.Repeat("x", i%5) + fmt.Sprint(i) + ".#"})
		}
	}
}
