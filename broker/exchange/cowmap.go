package exchange

// cowMap is a persistent string-keyed map: with and without return a new map and leave the
// receiver untouched, so snapshots can share it. A small map is one Go map copied on write; a
// large one is split into shards by key hash so a write copies one shard, not every key. That
// keeps a bind to an exchange with many thousands of keys (MQTT subscriptions on amq.topic)
// from costing a copy of all of them.
type cowMap[V any] struct {
	small  map[string]V
	shards *[cowShards]map[string]V
	n      int
}

const (
	cowShards    = 256
	cowShardFrom = 128 // a small map grows into shards beyond this many keys
)

// shardOf is FNV-1a: deterministic (the package is pure) and allocation-free.
func shardOf(k string) int {
	h := uint32(2166136261)
	for i := 0; i < len(k); i++ {
		h ^= uint32(k[i])
		h *= 16777619
	}
	return int(h % cowShards)
}

func (m *cowMap[V]) len() int { return m.n }

func (m *cowMap[V]) get(k string) (V, bool) {
	if m.shards == nil {
		v, ok := m.small[k]
		return v, ok
	}
	v, ok := m.shards[shardOf(k)][k]
	return v, ok
}

func cloneMap[V any](m map[string]V, extra int) map[string]V {
	c := make(map[string]V, len(m)+extra)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// with returns a map where k maps to v.
func (m cowMap[V]) with(k string, v V) cowMap[V] {
	if m.shards == nil {
		_, exists := m.small[k]
		if exists || len(m.small) < cowShardFrom {
			c := cloneMap(m.small, 1)
			c[k] = v
			return cowMap[V]{small: c, n: len(c)}
		}
		var sh [cowShards]map[string]V
		for kk, vv := range m.small {
			s := shardOf(kk)
			if sh[s] == nil {
				sh[s] = make(map[string]V)
			}
			sh[s][kk] = vv
		}
		s := shardOf(k)
		if sh[s] == nil {
			sh[s] = make(map[string]V)
		}
		sh[s][k] = v
		return cowMap[V]{shards: &sh, n: m.n + 1}
	}
	sh := *m.shards
	s := shardOf(k)
	_, exists := sh[s][k]
	c := cloneMap(sh[s], 1)
	c[k] = v
	sh[s] = c
	n := m.n
	if !exists {
		n++
	}
	return cowMap[V]{shards: &sh, n: n}
}

// without returns a map without k.
func (m cowMap[V]) without(k string) cowMap[V] {
	if _, ok := m.get(k); !ok {
		return m
	}
	if m.shards == nil {
		c := cloneMap(m.small, 0)
		delete(c, k)
		return cowMap[V]{small: c, n: len(c)}
	}
	sh := *m.shards
	s := shardOf(k)
	c := cloneMap(sh[s], 0)
	delete(c, k)
	if len(c) == 0 {
		c = nil
	}
	sh[s] = c
	return cowMap[V]{shards: &sh, n: m.n - 1}
}

// each calls fn for every entry, in no particular order, until fn returns false.
func (m *cowMap[V]) each(fn func(k string, v V) bool) {
	if m.shards == nil {
		for k, v := range m.small {
			if !fn(k, v) {
				return
			}
		}
		return
	}
	for _, sh := range m.shards {
		for k, v := range sh {
			if !fn(k, v) {
				return
			}
		}
	}
}
