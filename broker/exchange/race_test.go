package exchange

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrentReadersAndWriter publishes snapshots while readers route through whichever
// is current, as the broker does; run with -race to check that updates never touch a
// published snapshot.
func TestConcurrentReadersAndWriter(t *testing.T) {
	var cur atomic.Pointer[Router]
	r := NewRouter().WithExchange(ExchangeInfo{Name: "t", Type: Topic}).
		WithExchange(ExchangeInfo{Name: "d", Type: Direct})
	cur.Store(r)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]string, 0, 64)
			for !stop.Load() {
				snap := cur.Load()
				out = snap.Route("t", "a.b.c", nil, out[:0])
				out = snap.Route("d", "k7", nil, out[:0])
				_ = snap.HasBindings("t")
			}
		}()
	}
	for i := range 400 {
		key := fmt.Sprintf("k%d", i%50)
		r = r.WithBinding(Binding{Source: "d", Dest: q(fmt.Sprint("q", i)), Key: key})
		r = r.WithBinding(Binding{Source: "t", Dest: q(fmt.Sprint("q", i)), Key: fmt.Sprintf("a.*.%d", i)})
		if i%3 == 0 {
			r = r.WithoutDest(q(fmt.Sprint("q", i/2)))
		}
		cur.Store(r)
	}
	stop.Store(true)
	wg.Wait()
}
