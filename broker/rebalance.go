package broker

// Rebalancing (issue 7 item 2: leaders spread over the nodes). Each spread queue's placement is
// recorded in its metadata (meta.QueueDef.Place, chosen least-loaded at declare), and a queue
// runs on its group's leader. A failover moves a queue's process to another voter (the proxy
// re-attaches wherever the group elects a leader, remote.go), so after a node died its queues
// run on the others; the serving node's rebalancer moves them back once the node is reachable
// again (and has been for rebalanceSettle): the proxy detaches from the stand-in host and asks
// the placed node to host the queue, which takes the group's lead (remote.go's move). The
// queues the serving node runs itself (placed here) take their groups' lead back the same way
// when another node has it.
//
// A move is a planned failover: no confirmed message is lost (the new host leads only once its
// copy has applied every committed entry), the consumers stay attached, and what they held
// unacked comes again redelivered; their old delivery ids belong to the ended session and
// settle nothing (remote.go's epochs). Only queues whose current host answers are moved, a few
// per round, so a node that comes back is not handed every queue at once while it catches up.

import (
	"context"
	"time"

	"go.uber.org/zap"
)

const (
	// rebalanceInterval is how often the serving node checks that queues run where placed.
	rebalanceInterval = 500 * time.Millisecond
	// rebalanceSettle is how long a node must have been reachable before queues move back to
	// it: a node that flaps does not drag queues back and forth, and one that just restarted
	// has caught up with its groups' logs meanwhile (a move waits for the new host to lead).
	rebalanceSettle = 3 * time.Second
	// rebalanceBatch bounds the moves started per round.
	rebalanceBatch = 8
)

// startRebalancer runs the rebalancer of a serving broker with Spread, until Close.
func (b *Broker) startRebalancer() {
	if b.cfg.Spread == nil || b.metaGroup == nil || b.stopc != nil {
		return
	}
	b.stopc = make(chan struct{})
	go b.rebalance(b.stopc)
}

func (b *Broker) rebalance(stop <-chan struct{}) {
	t := time.NewTicker(rebalanceInterval)
	defer t.Stop()
	self := b.cfg.Host.NodeID()
	upSince := map[uint64]time.Time{}
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if b.deposed() || !b.metaGroup.IsLeader() {
			continue
		}
		now := time.Now()
		for _, n := range b.cfg.Spread.Nodes() {
			if !b.reachable(n) {
				delete(upSince, n)
			} else if _, ok := upSince[n]; !ok {
				upSince[n] = now
			}
		}
		settled := func(n uint64) bool {
			since, ok := upSince[n]
			return ok && now.Sub(since) >= rebalanceSettle
		}
		moved := 0
		for _, rq := range b.proxyList() {
			to := rq.q.def.Place
			if to == 0 || to == self || !settled(to) {
				continue
			}
			rq.mu.Lock()
			from, attached := rq.host, rq.attached
			rq.mu.Unlock()
			if !attached || from == to || !b.reachable(from) {
				continue
			}
			if rq.move(to) {
				moved++
				if moved == rebalanceBatch {
					break
				}
			}
		}
		b.leadLocalQueues(self)
	}
}

// leadLocalQueues asks for the lead of each group whose queue this node runs because it is
// placed here, when another reachable node leads it.
func (b *Broker) leadLocalQueues(self uint64) {
	for _, v := range *b.vhosts.Load() {
		for _, q := range v.queueMap() {
			if q.remote != nil || q.group == nil || q.def.Place != self {
				continue
			}
			if l := q.group.Leader(); l != 0 && l != self && b.reachable(l) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if err := b.cfg.Host.TransferLeadership(ctx, q.group.ID(), self); err != nil {
					b.log.Debug("lead of a local queue's group not asked for", zap.String("queue", q.def.Name), zap.Error(err))
				}
				cancel()
			}
		}
	}
}
