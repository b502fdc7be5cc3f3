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

import "time"

const (
	// rebalanceInterval is how often the serving node checks that queues run where placed.
	rebalanceInterval = 500 * time.Millisecond
	// rebalanceSettle is how long a node must have been reachable before queues move back to
	// it: a node that flaps does not drag queues back and forth, and one that just restarted
	// has caught up with its groups' logs meanwhile (a move waits for the new host to lead).
	rebalanceSettle = 3 * time.Second
	// rebalanceBatch bounds the moves started per round.
	rebalanceBatch = 8
	// leadAskAgain spaces a local queue's requests for its group's lead (leadLocalQueues).
	leadAskAgain = 30 * time.Second
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
	asked := map[uint64]time.Time{} // group -> when its local queue last asked for the lead
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
		b.leadLocalQueues(self, now, asked)
	}
}

// leadLocalQueues has each queue this node runs because it is placed here take its group's
// lead when another reachable node has it.
// A queue asks at most every leadAskAgain: while it waits for the lead it holds its publishes
// back (up to leadHoldMax), which must not become the rule if the lead cannot be had.
func (b *Broker) leadLocalQueues(self uint64, now time.Time, asked map[uint64]time.Time) {
	for _, v := range *b.vhosts.Load() {
		for _, q := range v.queueMap() {
			if q.remote != nil || q.group == nil || q.def.Place != self {
				continue
			}
			l := q.group.Leader()
			if l == 0 || l == self || !b.reachable(l) || now.Sub(asked[q.group.ID()]) < leadAskAgain {
				continue
			}
			asked[q.group.ID()] = now
			q.askLead() // without dropping a publish in flight (leadhold.go)
		}
	}
	for g, at := range asked {
		if now.Sub(at) > 2*leadAskAgain {
			delete(asked, g)
		}
	}
}
