package cluster

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestEntryBufferSizes(t *testing.T) {
	for _, n := range []int{0, 1, 100, 512 - EntryHeaderRoom, 512, 1000, 1 << 15, 1<<16 - EntryHeaderRoom, 1 << 16, 1 << 20} {
		b := EntryBuffer(n)
		if len(b) != EntryHeaderRoom || cap(b) < EntryHeaderRoom+n {
			t.Fatalf("EntryBuffer(%d): len %d cap %d", n, len(b), cap(b))
		}
		if c, ok := entryClass(cap(b)); ok && cap(b) != 1<<(c+minEntryClass) {
			t.Fatalf("EntryBuffer(%d): capacity %d is no class's size", n, cap(b))
		}
		recycleEntry(b)
	}
	// A buffer that is not exactly a class's size is not kept.
	recycleEntry(make([]byte, 0, 1000))
}

// Entries proposed in place, from recycled buffers, on the leader and (forwarded) on the
// followers, arrive intact on every node: a buffer is reused only once raft has its own copy,
// and never while a follower's forwarded proposal still points at it.
func TestProposeInPlaceRecycledThreeNodes(t *testing.T) {
	ctx := testContext(t)
	net := NewLocalNetwork()
	peers := map[uint64]string{1: "n1", 2: "n2", 3: "n3"}
	hosts := map[uint64]*Host{}
	sms := map[uint64]*kv{}
	groups := map[uint64]*Group{}
	for id := range peers {
		eng := openEngine(t, t.TempDir(), vfs.Default)
		t.Cleanup(func() { _ = eng.Close() })
		h := startHost(t, Config{NodeID: id, Peers: peers, Transport: net.Transport(id), TickInterval: 5 * time.Millisecond}, eng)
		net.Attach(h)
		hosts[id] = h
		sms[id] = newKV()
		groups[id] = addGroup(t, ctx, h, 100, sms[id])
	}
	t.Cleanup(func() {
		for _, h := range hosts {
			h.Stop()
		}
	})
	waitFor(t, ctx, "a leader", func() bool {
		l := groups[1].Leader()
		return l != 0 && groups[l].IsLeader() && groups[2].Leader() == l && groups[3].Leader() == l
	})

	const perNode = 300
	value := func(id uint64, i int) string {
		return fmt.Sprintf("%d-%d-", id, i) + strings.Repeat(string(rune('a'+i%26)), 900+i%200)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3*perNode)
	for id, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A leader change (a loaded machine can miss heartbeats at 5 ms ticks) drops
			// proposals in flight: those are proposed again, from fresh buffers, until every
			// entry is in. What the test checks is that none arrives corrupted.
			todo := make([]int, perNode)
			for i := range todo {
				todo[i] = i
			}
			for len(todo) > 0 && ctx.Err() == nil {
				var mu sync.Mutex
				var again []int
				var done sync.WaitGroup
				for _, i := range todo {
					entry := fmt.Appendf(EntryBuffer(1200), "k%d.%d=%s", id, i, value(id, i))
					done.Add(1)
					err := g.ProposeAsyncInPlace(entry, func(_ any, err error) {
						defer done.Done()
						if errors.Is(err, ErrDropped) {
							mu.Lock()
							again = append(again, i)
							mu.Unlock()
						} else if err != nil {
							errs <- fmt.Errorf("node %d entry %d: %w", id, i, err)
						}
					})
					if errors.Is(err, ErrDropped) {
						mu.Lock()
						again = append(again, i)
						mu.Unlock()
						done.Done()
					} else if err != nil {
						errs <- err
						done.Done()
					}
				}
				done.Wait()
				todo = again
				if len(todo) > 0 {
					time.Sleep(10 * time.Millisecond) // let the election settle
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, ctx, "every entry on every node", func() bool {
		for _, sm := range sms {
			if _, n := sm.state(); n < 3*perNode {
				return false
			}
		}
		return true
	})
	for node, sm := range sms {
		for id := range groups {
			for i := range perNode {
				if got, _ := sm.get(fmt.Sprintf("k%d.%d", id, i)); got != value(id, i) {
					t.Fatalf("node %d: entry %d of node %d: %.40q..., want %.40q...", node, i, id, got, value(id, i))
				}
			}
		}
	}
}
