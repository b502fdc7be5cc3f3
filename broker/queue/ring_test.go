package queue

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRingMatchesSlice drives a ring and a plain slice with the same random operations.
func TestRingMatchesSlice(t *testing.T) {
	for seed := uint64(0); seed < 50; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		var r ring[int]
		var model []int
		for step := 0; step < 2000; step++ {
			v := rng.Int()
			switch op := rng.IntN(6); {
			case op == 0:
				r.pushBack(v)
				model = append(model, v)
			case op == 1:
				r.pushFront(v)
				model = slices.Insert(model, 0, v)
			case op == 2 && len(model) > 0:
				if got := r.popFront(); got != model[0] {
					t.Fatalf("seed %d step %d: popFront = %d, want %d", seed, step, got, model[0])
				}
				model = model[1:]
			case op == 3 && len(model) > 0:
				if got := r.popBack(); got != model[len(model)-1] {
					t.Fatalf("seed %d step %d: popBack = %d, want %d", seed, step, got, model[len(model)-1])
				}
				model = model[:len(model)-1]
			case op == 4:
				i := rng.IntN(len(model) + 1)
				r.insert(i, v)
				model = slices.Insert(model, i, v)
			case op == 5 && rng.IntN(100) == 0:
				r.clear()
				model = model[:0]
			}
			if r.len() != len(model) {
				t.Fatalf("seed %d step %d: len %d, want %d", seed, step, r.len(), len(model))
			}
		}
		for i, want := range model {
			if got := *r.at(i); got != want {
				t.Fatalf("seed %d: at(%d) = %d, want %d", seed, i, got, want)
			}
		}
	}
}
