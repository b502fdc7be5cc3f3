package exchange

import (
	"slices"
	"strings"

	"github.com/parleymq/parley/broker/message"
)

// xstate is one exchange and its bindings as source. byKey holds every binding by routing key
// (the direct index, and the source of truth for listing); topic and headers exchanges also
// keep their own index.
type xstate struct {
	info    ExchangeInfo
	n       int
	byKey   cowMap[[]entry]
	trie    *node      // Topic
	headers []hbinding // Headers
	// mayDup is set once some destination is bound twice from this exchange, so routing must
	// deduplicate even when this exchange alone was visited.
	mayDup bool
	// toExchange is set once some binding of this exchange has an exchange destination.
	toExchange bool
}

// Router is an immutable routing snapshot for one vhost. It is safe for any number of
// concurrent readers without locks; every With/Without method returns a new Router that shares
// what it did not change (copy-on-write per exchange), so a bind costs O(bindings of that
// exchange with that key), not O(all bindings).
type Router struct {
	xs     cowMap[*xstate]
	byDest cowMap[[]Binding] // destKey -> bindings to that destination, for WithoutDest
}

// NewRouter returns an empty router. The default exchange "" needs no entry: it routes by name.
func NewRouter() *Router { return &Router{} }

func destKey(d Dest) string {
	if d.Exchange {
		return "e:" + d.Name
	}
	return "q:" + d.Name
}

// Exchange returns what the router knows about an exchange.
func (r *Router) Exchange(name string) (ExchangeInfo, bool) {
	x, ok := r.xs.get(name)
	if !ok {
		return ExchangeInfo{}, false
	}
	return x.info, true
}

// WithExchange adds an exchange, or replaces its info keeping its bindings.
func (r *Router) WithExchange(e ExchangeInfo) *Router {
	nr := *r
	old, ok := r.xs.get(e.Name)
	if !ok {
		nr.xs = r.xs.with(e.Name, &xstate{info: e})
		return &nr
	}
	x := *old
	x.info = e
	if old.info.Type != e.Type {
		// Rebuild the type's index from the bindings: only a restore would do this.
		x.trie, x.headers = nil, nil
		x.byKey.each(func(k string, es []entry) bool {
			for _, en := range es {
				x.index(k, en)
			}
			return true
		})
	}
	nr.xs = r.xs.with(e.Name, &x)
	return &nr
}

// index adds en to the type-specific index of x (which must already be a private copy).
func (x *xstate) index(key string, en entry) {
	switch x.info.Type {
	case Topic:
		x.trie = x.trie.with(key, firstWord(key), en)
	case Headers:
		hs := make([]hbinding, len(x.headers), len(x.headers)+1)
		copy(hs, x.headers)
		x.headers = append(hs, compileHeaders(en))
	}
}

// WithoutExchange removes an exchange with every binding that has it as source or destination.
func (r *Router) WithoutExchange(name string) *Router {
	nr := r.WithoutDest(Dest{Name: name, Exchange: true})
	x, ok := nr.xs.get(name)
	if !ok {
		return nr
	}
	out := *nr
	x.byKey.each(func(k string, es []entry) bool {
		for _, en := range es {
			out.byDest = dropDestBinding(out.byDest, Binding{Source: name, Dest: en.dest, Key: k, Args: en.args})
		}
		return true
	})
	out.xs = out.xs.without(name)
	return &out
}

func dropDestBinding(m cowMap[[]Binding], b Binding) cowMap[[]Binding] {
	k := destKey(b.Dest)
	bs, _ := m.get(k)
	for i, x := range bs {
		if x.Source == b.Source && x.Key == b.Key && TablesEqual(x.Args, b.Args) {
			if len(bs) == 1 {
				return m.without(k)
			}
			nb := make([]Binding, 0, len(bs)-1)
			nb = append(nb, bs[:i]...)
			nb = append(nb, bs[i+1:]...)
			return m.with(k, nb)
		}
	}
	return m
}

// WithBinding adds a binding. A binding already present (same source, destination, key and
// arguments) and a binding whose source the router does not know leave the router unchanged;
// the default exchange cannot have explicit bindings.
func (r *Router) WithBinding(b Binding) *Router {
	old, ok := r.xs.get(b.Source)
	if !ok {
		return r
	}
	en := entry{dest: b.Dest, args: b.Args}
	es, _ := old.byKey.get(b.Key)
	for _, x := range es {
		if x.equal(en) {
			return r
		}
	}
	x := *old
	nes := make([]entry, len(es), len(es)+1)
	copy(nes, es)
	x.byKey = x.byKey.with(b.Key, append(nes, en))
	x.n++
	x.index(b.Key, en)
	if b.Dest.Exchange {
		x.toExchange = true
	}
	dk := destKey(b.Dest)
	bs, _ := r.byDest.get(dk)
	for _, o := range bs {
		if o.Source == b.Source {
			x.mayDup = true
			break
		}
	}
	nr := *r
	nr.xs = r.xs.with(b.Source, &x)
	nbs := make([]Binding, len(bs), len(bs)+1)
	copy(nbs, bs)
	nr.byDest = r.byDest.with(dk, append(nbs, b))
	return &nr
}

// HasBinding reports whether the binding equal to b (source, destination, key, deep-equal
// arguments) exists.
func (r *Router) HasBinding(b Binding) bool {
	x, ok := r.xs.get(b.Source)
	if !ok {
		return false
	}
	en := entry{dest: b.Dest, args: b.Args}
	es, _ := x.byKey.get(b.Key)
	for _, e := range es {
		if e.equal(en) {
			return true
		}
	}
	return false
}

// WithoutBinding removes the binding equal to b (source, destination, key and deep-equal
// arguments). Removing a binding that does not exist leaves the router unchanged.
func (r *Router) WithoutBinding(b Binding) *Router {
	old, ok := r.xs.get(b.Source)
	if !ok {
		return r
	}
	en := entry{dest: b.Dest, args: b.Args}
	es, _ := old.byKey.get(b.Key)
	k := -1
	for i, x := range es {
		if x.equal(en) {
			k = i
			break
		}
	}
	if k < 0 {
		return r
	}
	x := *old
	if len(es) == 1 {
		x.byKey = x.byKey.without(b.Key)
	} else {
		nes := make([]entry, 0, len(es)-1)
		nes = append(nes, es[:k]...)
		x.byKey = x.byKey.with(b.Key, append(nes, es[k+1:]...))
	}
	x.n--
	switch x.info.Type {
	case Topic:
		x.trie, _ = x.trie.without(b.Key, firstWord(b.Key), es[k])
	case Headers:
		hs := make([]hbinding, 0, len(x.headers))
		removed := false
		for _, h := range x.headers {
			if !removed && h.entry.equal(es[k]) {
				removed = true
				continue
			}
			hs = append(hs, h)
		}
		x.headers = hs
	}
	nr := *r
	nr.xs = r.xs.with(b.Source, &x)
	nr.byDest = dropDestBinding(r.byDest, b)
	return &nr
}

// WithoutDest removes every binding to d: the queue or exchange d was deleted.
func (r *Router) WithoutDest(d Dest) *Router {
	bs, ok := r.byDest.get(destKey(d))
	if !ok {
		return r
	}
	nr := r
	for _, b := range bs {
		nr = nr.WithoutBinding(b)
	}
	return nr
}

// HasBindings reports whether the exchange is the source of any binding, the test
// exchange.delete if-unused makes (RabbitMQ: rabbit_binding:has_for_source).
func (r *Router) HasBindings(exchange string) bool {
	x, ok := r.xs.get(exchange)
	return ok && x.n > 0
}

// BindingsTo returns the bindings whose destination is d.
func (r *Router) BindingsTo(d Dest) []Binding {
	bs, _ := r.byDest.get(destKey(d))
	return slices.Clone(bs)
}

// BindingsFrom returns the bindings whose source is the exchange, in no particular order.
func (r *Router) BindingsFrom(source string) []Binding {
	x, ok := r.xs.get(source)
	if !ok {
		return nil
	}
	var out []Binding
	x.byKey.each(func(k string, es []entry) bool {
		for _, en := range es {
			out = append(out, Binding{Source: source, Dest: en.dest, Key: k, Args: en.args})
		}
		return true
	})
	return out
}

// Bindings lists every binding, ordered by source, destination kind and name, key.
func (r *Router) Bindings() []Binding {
	var out []Binding
	r.xs.each(func(name string, x *xstate) bool {
		x.byKey.each(func(k string, es []entry) bool {
			for _, en := range es {
				out = append(out, Binding{Source: name, Dest: en.dest, Key: k, Args: en.args})
			}
			return true
		})
		return true
	})
	slices.SortFunc(out, func(a, b Binding) int {
		if c := strings.Compare(a.Source, b.Source); c != 0 {
			return c
		}
		if a.Dest.Exchange != b.Dest.Exchange {
			if a.Dest.Exchange {
				return 1
			}
			return -1
		}
		if c := strings.Compare(a.Dest.Name, b.Dest.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	return out
}

// acc accumulates one Route call: queue names found, exchanges still to visit, and whether
// the exchange being visited matched anything at all. Pending exchanges live in a fixed array
// inside acc so that Route does not allocate for the usual handful of them.
type acc struct {
	out  []string
	xs   [8]string
	nxs  int
	more []string // pending exchanges beyond len(xs)
	hit  bool
}

func (a *acc) push(name string) {
	if a.nxs < len(a.xs) {
		a.xs[a.nxs] = name
		a.nxs++
		return
	}
	a.more = append(a.more, name)
}

func (a *acc) pop() (string, bool) {
	if n := len(a.more); n > 0 {
		name := a.more[n-1]
		a.more = a.more[:n-1]
		return name, true
	}
	if a.nxs == 0 {
		return "", false
	}
	a.nxs--
	return a.xs[a.nxs], true
}

func (a *acc) add(es []entry) {
	for i := range es {
		a.hit = true
		if es[i].dest.Exchange {
			a.push(es[i].dest.Name)
		} else {
			a.out = append(a.out, es[i].dest.Name)
		}
	}
}

func (x *xstate) route(routingKey string, headers message.Table, a *acc) {
	switch x.info.Type {
	case Direct:
		if es, ok := x.byKey.get(routingKey); ok {
			a.add(es)
		}
	case Fanout:
		if x.byKey.shards == nil {
			for _, es := range x.byKey.small {
				a.add(es)
			}
		} else {
			for _, sh := range x.byKey.shards {
				for _, es := range sh {
					a.add(es)
				}
			}
		}
	case Topic:
		if x.trie != nil {
			x.trie.match(routingKey, firstWord(routingKey), a)
		}
	case Headers:
		for i := range x.headers {
			h := &x.headers[i]
			if h.matches(headers) {
				a.hit = true
				if h.dest.Exchange {
					a.push(h.dest.Name)
				} else {
					a.out = append(a.out, h.dest.Name)
				}
			}
		}
	}
}

// Route appends to out the distinct names of the queues a message published to exchange with
// routingKey and headers reaches, in no particular order, and returns the extended slice. It
// follows RabbitMQ's rabbit_exchange:route:
//
//   - The default exchange "" routes to the queue named by the routing key, unconditionally
//     (the caller drops names that are not queues, and handles amq.rabbitmq.reply-to).
//   - Exchange-to-exchange bindings are followed; each exchange is visited at most once, so
//     cycles are harmless. Destinations that do not exist are skipped.
//   - An exchange whose own bindings match nothing at all (neither queue nor exchange) passes
//     the message to its alternate exchange, if that exists; alternates chain, cycle-safe.
//
// An unknown exchange routes nowhere. Route does not allocate for direct, fanout and topic
// exchanges when out has room and few exchanges are involved.
func (r *Router) Route(exchange, routingKey string, headers message.Table, out []string) []string {
	if exchange == "" {
		return append(out, routingKey)
	}
	x, ok := r.xs.get(exchange)
	if !ok {
		return out
	}
	start := len(out)
	var seenBuf [8]string
	a := acc{out: out}
	seen := append(seenBuf[:0], exchange)
	dedup := x.mayDup || x.info.Type == Topic || x.info.Type == Headers
	for {
		a.hit = false
		x.route(routingKey, headers, &a)
		if !a.hit && x.info.AlternateExchange != "" {
			a.push(x.info.AlternateExchange)
		}
		x = nil
		for x == nil {
			name, ok := a.pop()
			if !ok {
				break
			}
			if slices.Contains(seen, name) {
				continue
			}
			seen = append(seen, name)
			if name == "" {
				// An alternate exchange may be the default exchange.
				a.out = append(a.out, routingKey)
				continue
			}
			x, _ = r.xs.get(name)
		}
		if x == nil {
			break
		}
		dedup = true
	}
	out = a.out
	if dedup && len(out)-start > 1 {
		slices.Sort(out[start:])
		c := slices.Compact(out[start:])
		out = out[:start+len(c)]
	}
	return out
}
