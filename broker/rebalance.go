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
// A node that joins (parleyctl cluster join) gets the queues declared afterwards (placeNew
// picks the least-loaded member), and its share of the older ones: reshare records a new
// placement for one queue at a time, taken from the node placed the most queues, once the new
// node is a voter of the queue's group (promoted) and has been reachable for rebalanceSettle,
// and the move below carries it out. Only queues other nodes run for this one change
// placement: the serving node's own (placed on it, run locally) stay, as turning a local
// queue into a proxy under its consumers is not written; so the serving node keeps its share
// and the other members' shares even out over them and the newcomer.
//
// A move is a planned failover: no confirmed message is lost (the new host leads only once its
// copy has applied every committed entry), the consumers stay attached, and what they held
// unacked comes again redelivered; their old delivery ids belong to the ended session and
// settle nothing (remote.go's epochs). Only queues whose current host answers are moved, a few
// per round, so a node that comes back is not handed every queue at once while it catches up.

import (
	"slices"
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
		b.reshare(self, settled)
		moved := 0
		for _, rq := range b.proxyList() {
			to := rq.place.Load()
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

// reshare gives an under-loaded member (a node that joined, typically) one spread queue of the
// member placed the most, when their counts differ by two or more: it records the queue's new
// placement in group 0 (meta.SetQueuePlace, so a new serving node agrees) and the rebalancer's
// move (rebalance) takes it there. Only proxied queues (placed on another node) are given, and
// only to a node that is a voter of the queue's group and settled. One per round: a node that
// joins is not handed many queues at once while it catches up.
func (b *Broker) reshare(self uint64, settled func(uint64) bool) {
	nodes := b.cfg.Spread.Nodes()
	if len(nodes) < 2 {
		return
	}
	load := map[uint64]int{}
	b.mu.Lock()
	for _, vh := range b.meta.VHosts() {
		for _, def := range b.meta.Queues(vh) {
			if def.Place != 0 && b.isMember(def.Place) {
				load[def.Place]++
			}
		}
	}
	b.mu.Unlock()
	var under uint64
	for _, n := range nodes {
		if n != self && settled(n) && (under == 0 || load[n] < load[under]) {
			under = n
		}
	}
	if under == 0 {
		return
	}
	// The most-loaded other node with a queue that can go to under.
	var pick *remoteQueue
	for _, rq := range b.proxyList() {
		from := rq.place.Load()
		if from == 0 || from == self || from == under || load[from]-load[under] < 2 {
			continue
		}
		if pick != nil && load[from] <= load[pick.place.Load()] {
			continue
		}
		rq.mu.Lock()
		ok := rq.attached && rq.moveTo == 0 && !rq.stopped
		rq.mu.Unlock()
		if ok && slices.Contains(rq.q.group.Voters(), under) {
			pick = rq
		}
	}
	if pick == nil {
		return
	}
	from := pick.place.Load()
	vhost, name := pick.q.v.name, pick.q.def.Name
	b.mu.Lock()
	_, err := b.meta.SetQueuePlace(vhost, name, under)
	if err == nil {
		if err = b.persistMetaLocked(); err != nil {
			// Not stored: as before (the record stays marked, and is written with its old
			// placement by the next metadata change).
			_, _ = b.meta.SetQueuePlace(vhost, name, from)
		}
	}
	b.mu.Unlock()
	if err != nil {
		b.log.Warn("queue's new placement not recorded", zap.String("queue", pick.q.def.Name), zap.Error(err))
		return
	}
	pick.place.Store(under)
	pick.target.Store(under)
	b.log.Info("queue placed on a less loaded node", zap.String("queue", pick.q.def.Name),
		zap.Uint64("from", from), zap.Uint64("to", under), zap.Int("from_load", load[from]), zap.Int("to_load", load[under]))
}
