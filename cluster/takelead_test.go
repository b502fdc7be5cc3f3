package cluster

import (
	"fmt"
	"testing"
)

// TestTakeLeadDropsNothing: a follower that takes a group's lead while it proposes loses no
// proposal to the transfer (a plain transfer fails what is in flight): TakeLead asks only when
// nothing is in flight and holds the proposals made meanwhile until it leads. Over real TCP.
func TestTakeLeadDropsNothing(t *testing.T) {
	ctx := testContext(t)
	c := startQCluster(t, ctx, 4)
	n2 := c.nodes[2]
	for _, gid := range c.ids {
		asked := false
		waitFor(t, ctx, "node 2 asking for the lead", func() bool {
			var err error
			asked, err = n2.host.TakeLead(ctx, gid)
			if err != nil {
				t.Fatal(err)
			}
			return asked
		})
		// Proposed right after asking, while the lead moves: each must be applied.
		var futures []*Future
		for i := range 20 {
			f, err := n2.groups[gid].Propose(ctx, fmt.Appendf(nil, "k%d=v", i))
			if err != nil {
				t.Fatal(err)
			}
			futures = append(futures, f)
		}
		for i, f := range futures {
			if _, err := f.Wait(ctx); err != nil {
				t.Fatalf("group %d: proposal %d during the transfer: %v", gid, i, err)
			}
		}
		waitFor(t, ctx, "node 2 leading", func() bool { return n2.groups[gid].IsLeader() })
		if asked, err := n2.host.TakeLead(ctx, gid); err != nil || asked {
			t.Fatalf("group %d: TakeLead by its leader asked %v, %v", gid, asked, err)
		}
	}
	if d := n2.host.Metrics().Dropped; d != 0 {
		t.Fatalf("node 2 dropped %d proposals", d)
	}
}
