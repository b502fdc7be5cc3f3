package broker

// Leading a local spread queue's group without dropping a publish, and the fence of a queue
// that must not deliver.
//
// With Spread, a queue runs on the node that leads its group (remote.go). A queue the serving
// node runs itself (placed here) starts on a new group whose first election any voter may win,
// and a failover elsewhere may leave its group led by another node; the queue then asks for the
// lead (TransferLeadership). But a change of leader fails every proposal in flight (its entry
// may or may not commit: the publisher gets a nack), so a publisher right after the
// declaration got a nack for no fault at all. Instead the queue holds its persistent publishes
// back (they wait in its FIFO, unconfirmed, as they would for an election) and asks for the
// lead only while none of its proposals is in flight; it proposes again once it leads, after
// leadHoldMax, or when a full batch is waiting (a batch cannot grow past what one entry holds).

import (
	"context"
	"time"
)

const (
	// leadHoldMax bounds how long a queue holds its publishes back waiting to lead its group;
	// after it they are proposed through whichever node leads (raft forwards them).
	leadHoldMax = 5 * time.Second
	// leadRetryMs is how often a queue that holds publishes back looks again (ms).
	leadRetryMs = 20
	// leadAskEvery spaces the queue's requests for its group's lead.
	leadAskEvery = 200 * time.Millisecond
)

// askLead makes q take its group's lead as soon as no proposal of it is in flight (see the
// file comment). Any goroutine.
func (q *Queue) askLead() {
	if q.group == nil || q.remote != nil || q.group.IsLeader() {
		return
	}
	q.wantLead.Store(true)
	q.Kick()
}

// holdProposals reports whether the queue holds its persistent publishes back this round,
// waiting to lead its group; it asks for the lead when nothing of the queue is in flight. The
// queue's goroutine only.
func (q *Queue) holdProposals() bool {
	if q.group == nil {
		return false
	}
	now := time.Now()
	if q.wantLead.Swap(false) && q.leadBy.IsZero() {
		q.leadBy = now.Add(leadHoldMax)
	}
	if q.leadBy.IsZero() {
		return false
	}
	if q.group.IsLeader() || now.After(q.leadBy) {
		q.leadBy = time.Time{}
		return false
	}
	if l := q.group.Leader(); l != 0 && now.After(q.leadAsk) && !q.proposing() {
		q.leadAsk = now.Add(leadAskEvery)
		host := q.v.b.cfg.Host
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := host.TransferLeadership(ctx, q.group.ID(), host.NodeID()); err != nil {
			q.leadBy = time.Time{} // the group is gone or the host stopped: nothing to wait for
		}
		cancel()
	}
	return !q.leadBy.IsZero()
}

// proposing reports whether an enqueue proposal of the queue is in flight.
func (q *Queue) proposing() bool {
	for _, p := range q.waiting {
		if p.logged && !p.done.Load() {
			return true
		}
	}
	return false
}

// fenced reports whether q must deliver nothing: its node no longer serves (Broker.deposed),
// or q runs for another node's proxy (a queue host's broker, queuehost.go, which has no group
// 0) and this node does not lead q's group any more: another node took the lead (a failover,
// or the rebalancer moving the queue to its placement) and may deliver the same messages, or
// the group lost its majority and its leader stepped down (CheckQuorum). The queue host's
// watch parks such a queue within leaderCheckInterval; this stops it at once.
func (q *Queue) fenced() bool {
	b := q.v.b
	if b.deposed() {
		return true
	}
	return b.metaGroup == nil && b.server != nil && q.group != nil && !q.group.IsLeader()
}
