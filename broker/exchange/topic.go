package exchange

import "strings"

// The topic exchange is a trie over the words of binding keys, as RabbitMQ's
// rabbit_exchange_type_topic builds it: a key splits on '.', keeping empty words ("a..b" is
// "a", "", "b"; "a." is "a", ""), except that the empty key has no words at all. '*' matches
// exactly one word and '#' zero or more. Nodes are persistent: an insert or a removal copies
// the path from the root to the binding's node and shares everything else.
//
// A position i in a key walks the words without allocating: i is where the next word starts,
// and i > len(key) means no words are left.

// entry is one binding as an exchange's index holds it.
type entry struct {
	dest Dest
	args map[string]any
}

func (e entry) equal(o entry) bool { return e.dest == o.dest && TablesEqual(e.args, o.args) }

type node struct {
	children cowMap[*node] // literal words
	star     *node
	hash     *node
	entries  []entry
}

// firstWord is the position of a key's first word.
func firstWord(key string) int {
	if key == "" {
		return 1 // RabbitMQ: the empty key splits into no words at all
	}
	return 0
}

// nextWord returns the word at position i and the position after it. i <= len(key).
func nextWord(key string, i int) (word string, next int) {
	j := strings.IndexByte(key[i:], '.')
	if j < 0 {
		return key[i:], len(key) + 1
	}
	return key[i : i+j], i + j + 1
}

func (n *node) empty() bool {
	return len(n.entries) == 0 && n.children.len() == 0 && n.star == nil && n.hash == nil
}

// with returns a copy of the trie rooted at n with e bound at the words of key from i on.
func (n *node) with(key string, i int, e entry) *node {
	c := &node{}
	if n != nil {
		*c = *n
	}
	if i > len(key) {
		es := make([]entry, len(c.entries), len(c.entries)+1)
		copy(es, c.entries)
		c.entries = append(es, e)
		return c
	}
	w, next := nextWord(key, i)
	switch w {
	case "*":
		c.star = c.star.with(key, next, e)
	case "#":
		c.hash = c.hash.with(key, next, e)
	default:
		child, _ := c.children.get(w)
		c.children = c.children.with(w, child.with(key, next, e))
	}
	return c
}

// without returns a copy of the trie without e at key, pruning emptied nodes (nil when the
// whole trie is empty), and whether e was there.
func (n *node) without(key string, i int, e entry) (*node, bool) {
	if n == nil {
		return nil, false
	}
	c := *n
	if i > len(key) {
		k := -1
		for j, x := range n.entries {
			if x.equal(e) {
				k = j
				break
			}
		}
		if k < 0 {
			return n, false
		}
		es := make([]entry, 0, len(n.entries)-1)
		es = append(es, n.entries[:k]...)
		c.entries = append(es, n.entries[k+1:]...)
	} else {
		w, next := nextWord(key, i)
		switch w {
		case "*":
			s, ok := n.star.without(key, next, e)
			if !ok {
				return n, false
			}
			c.star = s
		case "#":
			h, ok := n.hash.without(key, next, e)
			if !ok {
				return n, false
			}
			c.hash = h
		default:
			child, _ := n.children.get(w)
			nc, ok := child.without(key, next, e)
			if !ok {
				return n, false
			}
			if nc == nil {
				c.children = c.children.without(w)
			} else {
				c.children = c.children.with(w, nc)
			}
		}
	}
	if c.empty() {
		return nil, true
	}
	return &c, true
}

// match adds the bindings matching the words of key from position i, following
// rabbit_exchange_type_topic:trie_match: the literal word, then '*', then '#' absorbing any
// number of words (including none).
func (n *node) match(key string, i int, a *acc) {
	if i > len(key) {
		a.add(n.entries)
		if n.hash != nil {
			n.hash.match(key, i, a)
		}
		return
	}
	w, next := nextWord(key, i)
	if c, ok := n.children.get(w); ok {
		c.match(key, next, a)
	}
	if n.star != nil {
		n.star.match(key, next, a)
	}
	if n.hash != nil {
		for j := i; ; {
			n.hash.match(key, j, a)
			if j > len(key) {
				break
			}
			_, j = nextWord(key, j)
		}
	}
}
