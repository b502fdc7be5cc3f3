package broker

// Dead-lettering and x-expires of spread queues (issue 7).
//
// A queue decides by itself to dead-letter a message (rejected without requeue, expired by its
// TTL, dropped by a length limit) and to delete itself when unused for its x-expires; both
// need what only the serving node has: the routing a dead-lettered message is published
// through, and the metadata a queue is deleted from. A queue host (NewQueueHost, hostOnly) has
// neither, so its queues hand both to the serving node:
//
//   - Dead letters: the host's queue builds each dead-lettered message as a local queue does
//     (queue.DeadLetterMessage: x-death with reason, count, queue, time; x-first-death-*), and
//     its dead-letter goroutine, which keeps their order, sends them in an rpcDead call to the
//     node of the queue's proxy (the serving node; or, with no session, group 0's leader). That
//     node publishes them through the dead-letter exchange and answers; a call that fails is
//     sent again (to whichever node serves then) for up to deadRetryFor, so a move of the
//     queue or a change of serving node loses none; an answer lost with the connection may
//     route one twice (at least once). As on a local queue, a dead letter is not confirmed
//     to anyone, and one still in the host's memory when the host crashes is lost: RabbitMQ's
//     at-most-once dead-lettering, which quorum queues also use by default.
//   - x-expires: the host's queue runs the timer (it sees the gets, consumers and cancels; the
//     timer starts again when the queue starts on a new host, after a move or a failover) and,
//     when it runs out, tells the serving node (rpcExpired) and starts a new period. The
//     serving node deletes the queue, through the proxy as any deletion, if the proxy has no
//     consumer either and was not used (declared, got from, consumed) within the period.
//
// Message TTLs (x-message-ttl, a message's expiration) need nothing: the host's queue expires
// its messages itself, as a local queue does.

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker/message"
)

// deadRetryFor bounds how long a host keeps sending a batch of dead letters no node takes.
const deadRetryFor = time.Minute

// servingPeer is the node a hosted queue's dead letters and expiry go to: the node of one of
// the queue's sessions (the proxy's), else the leader of group 0 as this node knows it (0:
// none known).
func (s *queueServer) servingPeer(group uint64) uint64 {
	s.mu.Lock()
	for k := range s.sessions {
		if k.group == group {
			s.mu.Unlock()
			return k.peer
		}
	}
	s.mu.Unlock()
	if g := s.b.cfg.Host.Group(MetaGroup); g != nil {
		if l := g.Leader(); l != s.b.cfg.Host.NodeID() {
			return l
		}
	}
	return 0
}

// sendDead hands q's dead letters (Exchange and RoutingKey set to where they go) to the
// serving node, in order; see the file comment. It runs on q's dead-letter goroutine.
func (s *queueServer) sendDead(q *Queue, batch []*message.Message) {
	w := wbuf{}
	w.uint(q.group.ID())
	w.str(q.v.name)
	w.uint(uint64(len(batch)))
	for _, m := range batch {
		w.str(m.Exchange)
		w.str(m.RoutingKey)
		if err := w.msg(m); err != nil {
			s.b.log.Error("dead letters not encodable; dropped", zap.String("queue", q.def.Name), zap.Error(err))
			return
		}
	}
	deadline := time.Now().Add(deadRetryFor)
	for {
		peer := s.servingPeer(q.group.ID())
		var err error
		if peer != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			_, err = s.rpc.Call(ctx, peer, rpcDead, w.b)
			cancel()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			s.b.log.Warn("dead letters of a hosted queue not taken by any serving node; dropped",
				zap.String("queue", q.def.Name), zap.Int("messages", len(batch)), zap.Error(err))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// expired tells the serving node that q went unused for its x-expires.
func (s *queueServer) expired(q *Queue) {
	peer := s.servingPeer(q.group.ID())
	if peer == 0 {
		return // asked again after another period
	}
	w := wbuf{}
	w.uint(q.group.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.rpc.Notify(ctx, peer, rpcExpired, w.b); err != nil {
		s.b.log.Debug("queue expiry not told to the serving node", zap.String("queue", q.def.Name), zap.Error(err))
	}
}

// handleDead publishes a hosted queue's dead letters through their exchange, in order, and
// answers once they are routed. Off the RPC dispatcher: publishing may wait (a full queue, a
// proxy waiting for its host), and the host waits for the answer before it sends more.
func (b *Broker) handleDead(_ context.Context, from uint64, body []byte, reply func([]byte, error)) {
	r := newReader(body)
	r.Uint() // group
	vhost := r.Str()
	n := r.Count()
	type dead struct {
		ex, rk string
		m      *message.Message
	}
	ds := make([]dead, 0, n)
	for range n {
		d := dead{ex: r.Str(), rk: r.Str()}
		d.m = readMsg(r)
		ds = append(ds, d)
	}
	if r.Err() != nil {
		b.log.Warn("bad dead letters from a queue host; ignored", zap.Uint64("peer", from), zap.Error(r.Err()))
		reply(nil, r.Err())
		return
	}
	v, ok := b.VHost(vhost)
	if !ok || b.deposed() {
		reply(nil, errNotHosted) // the host tries the node that serves
		return
	}
	go func() {
		var s PublishScratch
		for _, d := range ds {
			d.m.Exchange, d.m.RoutingKey = d.ex, d.rk
			_, _ = v.Publish(d.m, nil, &s)
		}
		reply(nil, nil)
	}()
}

// handleExpired deletes an x-expires queue its host found unused, if the proxy agrees.
func (b *Broker) handleExpired(_ context.Context, _ uint64, body []byte, _ func([]byte, error)) {
	r := newReader(body)
	group := r.Uint()
	rq := b.proxy(group)
	if r.Err() != nil || rq == nil || b.deposed() {
		return
	}
	q := rq.q
	exp, ok := message.Int(q.def.Args["x-expires"])
	if !ok || rq.consumerCount() > 0 || b.now()-q.lastUsed.Load() < exp {
		return
	}
	b.log.Info("spread queue expired (x-expires)", zap.String("queue", q.def.Name))
	go q.v.deleteQueueIf(q)
}
