package integration

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// TestClusterServingNodeLeadsItsQueues: without spread queues the serving node leads every
// durable queue's group (cmd/parley/cluster.go, broker/leads.go), so no proposal takes a detour
// through a standby. A new queue's group may first elect a standby, and after a failover and
// the old node's return a standby may keep a lead it won meanwhile: the serving node takes each
// back. Checked through the status API (what `parleyctl cluster status` prints) after queues
// were declared, and again after the serving node was killed (-9), another took over, and the
// killed node came back.
func TestClusterServingNodeLeadsItsQueues(t *testing.T) {
	nodes := StartClusterArgs(t, 3, spreadArgs(t, false)...)
	declare := func(n *Node, prefix string, count int) {
		t.Helper()
		c := dialRetry(t, n)
		defer c.Close()
		ch := channel(t, c)
		for i := range count {
			if _, err := ch.QueueDeclare(Name(t, prefix+strconv.Itoa(i)), true, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	// waitLeads waits until serving's status shows it leading every group, with every node
	// agreeing; it reports how many groups another node led (not none: an election) when it
	// first looked.
	waitLeads := func(serving *Node, all []*Node, groups int) int {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		first := -1
		for {
			why := ""
			for _, n := range all {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				st, err := n.Status(ctx)
				cancel()
				if err != nil {
					why = fmt.Sprintf("node %d: %v", n.ID, err)
					break
				}
				if len(st.Groups) < groups {
					why = fmt.Sprintf("node %d runs %d groups, want %d", n.ID, len(st.Groups), groups)
					break
				}
				elsewhere := 0
				for _, g := range st.Groups {
					if g.Leader != uint64(serving.ID) {
						if g.Leader != 0 {
							elsewhere++
						}
						why = fmt.Sprintf("node %d sees group %d led by %d, not by the serving node %d", n.ID, g.ID, g.Leader, serving.ID)
					}
				}
				if n == serving && first < 0 {
					first = elsewhere
				}
			}
			if why == "" {
				return first
			}
			if time.Now().After(deadline) {
				t.Fatalf("the serving node does not lead every group after 60s: %s", why)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	const queues = 16
	serving := WaitServing(t, nodes)
	declare(serving, "lead-", queues)
	n := waitLeads(serving, nodes, queues+1)
	t.Logf("after %d declarations, %d groups were first led by another node than the serving node %d", queues, n, serving.ID)

	serving.Kill()
	var rest []*Node
	for _, x := range nodes {
		if x != serving {
			rest = append(rest, x)
		}
	}
	next := WaitServing(t, rest)
	declare(next, "lead-after-", queues/2)
	serving.Restart()
	n = waitLeads(next, nodes, queues+queues/2+1)
	t.Logf("after the failover to node %d and node %d's return, %d groups were first led by another node", next.ID, serving.ID, n)
}
