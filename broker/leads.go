package broker

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// The serving node leads its queues' groups (DESIGN.md §5, cmd/parley/cluster.go).
//
// AddGroup takes the lead of each durable queue's group when the broker starts (it adopts the
// standby's replicas), but the lead can move later: a new queue's group elects whichever voter
// times out first (a standby, as often as not), and after a failover and the old node's return
// a standby may keep the lead it won meanwhile. A queue whose group a standby leads still
// works, but every proposal is forwarded to the standby and back. keepLeads moves those leads
// back here: every leadCheckInterval it asks, for each durable queue this broker runs itself, that
// the group's leader hand its leadership over, unless this node is fenced (it may be cut off:
// a transfer to it would not complete anyway) or the group has no known leader (an election is
// under way). It asks through Host.TakeLead, which asks only while none of this node's
// proposals to the group is in flight and holds new ones until the transfer is done, so no
// publish is nacked for it (a transfer drops what is in flight). A transfer is only a request:
// raft drops it if this node is not caught up, and the next round asks again; a group busy
// without a pause stays where it is until it pauses.

// leadCheckInterval is how often keepLeads looks: a few election timeouts, so that a transfer
// raft dropped is asked again soon, and cheap (one atomic load per queue).
const leadCheckInterval = 500 * time.Millisecond

// keepLeads runs until the broker closes; started by New when the broker has group 0 with peers
// and queues are not spread (cluster.spread_queues: then where a queue runs is where its group's
// leader is, and the rebalancer, rebalance.go, places the leads; spread queues are left alone).
func (b *Broker) keepLeads() {
	t := time.NewTicker(leadCheckInterval)
	defer t.Stop()
	host := b.cfg.Host
	self := host.NodeID()
	for range t.C {
		if b.closed.Load() {
			return
		}
		if b.fenced() {
			continue
		}
		for _, v := range *b.vhosts.Load() {
			for _, q := range v.queueMap() {
				g := q.group
				if g == nil || q.remote != nil {
					continue
				}
				lead := g.Leader()
				if lead == 0 || lead == self {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				asked, err := host.TakeLead(ctx, g.ID())
				cancel()
				if err != nil {
					b.log.Debug("queue group's lead not asked for", zap.Uint64("group", g.ID()), zap.Error(err))
					continue
				}
				if !asked {
					continue // something in flight: a transfer would drop it; next round
				}
				b.log.Info("taking the lead of a queue's group back from another node",
					zap.String("queue", q.def.Name), zap.Uint64("group", g.ID()), zap.Uint64("leader", lead))
			}
		}
	}
}
