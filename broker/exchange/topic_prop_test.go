package exchange

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// splitKey is rabbit_exchange_type_topic:split_topic_key/1, written the obvious way.
func splitKey(k string) []string {
	if k == "" {
		return nil
	}
	return strings.Split(k, ".")
}

// naiveMatch is the definition of topic matching, without a trie: '*' is one word, '#' any
// number of words.
func naiveMatch(pattern, words []string) bool {
	if len(pattern) == 0 {
		return len(words) == 0
	}
	switch pattern[0] {
	case "#":
		for i := 0; i <= len(words); i++ {
			if naiveMatch(pattern[1:], words[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(words) > 0 && naiveMatch(pattern[1:], words[1:])
	}
	return len(words) > 0 && words[0] == pattern[0] && naiveMatch(pattern[1:], words[1:])
}

func randomKey(rng *rand.Rand, wildcards bool) string {
	alphabet := []string{"a", "b", "", "ab"}
	if wildcards {
		alphabet = append(alphabet, "*", "#", "#")
	}
	n := rng.IntN(5)
	words := make([]string, n)
	for i := range words {
		words[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return strings.Join(words, ".")
}

// TestTopicAgainstNaiveMatcher binds random patterns, routes random keys, and compares the
// trie with the definition; then unbinds half and compares again.
func TestTopicAgainstNaiveMatcher(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		r := NewRouter().WithExchange(ExchangeInfo{Name: "t", Type: Topic})
		patterns := make([]string, 40)
		for i := range patterns {
			patterns[i] = randomKey(rng, true)
			r = r.WithBinding(Binding{Source: "t", Dest: q(fmt.Sprint(i)), Key: patterns[i]})
		}
		live := make([]bool, len(patterns))
		for i := range live {
			live[i] = true
		}
		check := func(stage string) {
			for range 60 {
				key := randomKey(rng, false)
				var want []string
				for i, p := range patterns {
					if live[i] && naiveMatch(splitKey(p), splitKey(key)) {
						want = append(want, fmt.Sprint(i))
					}
				}
				slices.Sort(want)
				want = slices.Compact(want)
				if got := route(r, "t", key, nil); !slices.Equal(got, want) {
					t.Fatalf("round %d %s: key %q: got %v, want %v (patterns %q)", round, stage, key, got, want, patterns)
				}
			}
		}
		check("bound")
		for i := range patterns {
			if rng.IntN(2) == 0 {
				live[i] = false
				r = r.WithoutBinding(Binding{Source: "t", Dest: q(fmt.Sprint(i)), Key: patterns[i]})
			}
		}
		check("after unbinding half")
	}
}

func FuzzTopicMatch(f *testing.F) {
	for _, c := range topicMatches {
		f.Add(c.bind, "a.b.c")
	}
	f.Add("#.a.#", "x.a.y")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, pattern, key string) {
		if len(pattern) > 64 || len(key) > 64 || strings.Count(pattern, "#") > 4 {
			return
		}
		r := NewRouter().WithExchange(ExchangeInfo{Name: "t", Type: Topic}).
			WithBinding(Binding{Source: "t", Dest: q("q"), Key: pattern})
		got := len(r.Route("t", key, nil, nil)) == 1
		if want := naiveMatch(splitKey(pattern), splitKey(key)); got != want {
			t.Fatalf("pattern %q key %q: got %v, want %v", pattern, key, got, want)
		}
	})
}
