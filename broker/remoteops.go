package broker

// The *Queue operations of a proxy (remote.go): each is forwarded to the queue's host in the
// current session; see remote.go's file comment for what happens while none is attached.

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/cluster"
)

func (rq *remoteQueue) consume(o ConsumeOptions, c Consumer) (queue.ConsumerID, error) {
	host, epoch, ok := rq.session(time.Now().Add(attachWait))
	if !ok {
		return 0, meta.Errorf(meta.InternalError, "queue '%s' in vhost '%s': its node is not reachable", rq.q.def.Name, rq.q.v.name)
	}
	pc := &proxyConsumer{id: queue.ConsumerID(rq.b.nextConsumer.Add(1)), c: c, o: o}
	rq.mu.Lock()
	rq.consumers[pc.id] = pc
	rq.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := rq.register(ctx, pc, host, epoch); err != nil {
		var me *meta.Error
		if errors.As(err, &me) && me.Code != meta.InternalError {
			rq.mu.Lock()
			delete(rq.consumers, pc.id)
			rq.mu.Unlock()
			return 0, err
		}
		// The host was lost: the re-attachment registers the consumer.
	}
	return pc.id, nil
}

func (rq *remoteQueue) cancel(id queue.ConsumerID) {
	rq.dmu.Lock()
	rq.mu.Lock()
	pc := rq.consumers[id]
	if pc != nil {
		pc.cancelled = true // run drops it, and gives back what it has not handed over
	}
	host, epoch, attached := rq.host, rq.epoch, rq.attached
	rq.mu.Unlock()
	rq.dmu.Unlock()
	rq.poke()
	if pc == nil || !attached || pc.hostEpoch != epoch {
		return
	}
	w := wbuf{}
	w.uint(rq.group)
	w.uint(epoch)
	w.uint(uint64(pc.hostID))
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := rq.rpc.Call(ctx, host, rpcCancel, w.b); err != nil {
		rq.failed(epoch, err)
	}
}

// Settle forwards the settlement of the current epoch's ids; older ones are dropped (see the
// file comment).
//
// It also wakes the proxy's run goroutine: a settlement frees room in the consumer's prefetch
// (Consumer.Allow), and deliveries relayed while it had none wait in the proxy; the host relays
// no more (its credit is spent on them) until they are handed over, so nothing else would wake
// the proxy and the consumer would stall (TestClusterStandbySpaceComesBack: 548 of 131,072
// delivered with prefetch 512 over a relay window of 256).
func (rq *remoteQueue) Settle(ids []queue.DeliveryID, o queue.Outcome) {
	defer rq.poke()
	rq.mu.Lock()
	host, epoch, attached := rq.host, rq.epoch, rq.attached
	rq.mu.Unlock()
	w := wbuf{}
	w.uint(rq.group)
	w.uint(epoch)
	w.b = append(w.b, byte(o))
	keep := make([]uint64, 0, len(ids))
	for _, id := range ids {
		if uint64(id)>>epochShift == epoch {
			keep = append(keep, uint64(id)&hostIDMask)
		}
	}
	if dropped := len(ids) - len(keep); dropped > 0 {
		rq.b.log.Debug("stale delivery ids of an earlier host session dropped; their messages were requeued",
			zap.String("queue", rq.q.def.Name), zap.Int("ids", dropped))
	}
	if len(keep) == 0 || !attached {
		return
	}
	w.uint(uint64(len(keep)))
	for _, id := range keep {
		w.uint(id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := rq.rpc.Notify(ctx, host, rpcSettle, w.b); err != nil {
		rq.failed(epoch, err)
	}
}

func (rq *remoteQueue) get(noAck bool) (queue.Delivery, int, bool, error) {
	if rq.b.deposed() {
		// See deliver. Not "empty": the queue may hold messages, which the new serving node
		// hands out.
		return queue.Delivery{}, 0, false, rq.unavailable("this node no longer serves")
	}
	rep, epoch, err := rq.callHosted(rpcGet, func(w *wbuf, epoch uint64) {
		w.uint(rq.group)
		w.uint(epoch)
		w.bool(noAck)
	})
	if err != nil {
		// No host within attachWait, or the host failed the call: either way the queue's
		// content is unknown here, so the client hears it cannot be reached rather than
		// basic.get-empty. A get that reached the host and whose answer was lost left its
		// delivery unsettled in a session that ended with the connection: it is requeued
		// (noAck: it was taken, as a noAck get's message is once handed out).
		rq.b.log.Info("basic.get on a spread queue found no host", zap.String("queue", rq.q.def.Name), zap.Error(err))
		return queue.Delivery{}, 0, false, rq.unavailable("no node answered for it")
	}
	r := newReader(rep)
	got, remaining := readBool(r), int(r.Uint())
	if r.Err() != nil {
		return queue.Delivery{}, 0, false, rq.unavailable("bad reply from its node")
	}
	if !got {
		rq.ready.Store(int64(remaining))
		return queue.Delivery{}, remaining, false, nil
	}
	r.U8() // relayDeliver
	r.Uint()
	d := queue.Delivery{ID: queue.DeliveryID(epoch<<epochShift | r.Uint()&hostIDMask)}
	d.Redelivered = readBool(r)
	d.Expiry = r.Int()
	d.Msg = readMsg(r)
	if r.Err() != nil {
		return queue.Delivery{}, remaining, false, rq.unavailable("bad reply from its node")
	}
	rq.ready.Store(int64(remaining))
	return d, remaining, true, nil
}

// unavailable is the error of an operation the queue's host could not carry out: RabbitMQ's
// channel error for a durable queue whose home node is down (404 NOT_FOUND, "home node ... is
// down or inaccessible"), which clients already handle by reopening a channel and retrying.
func (rq *remoteQueue) unavailable(why string) error {
	return meta.Errorf(meta.NotFound, "home node of durable queue '%s' in vhost '%s' is down or inaccessible (%s)",
		rq.q.def.Name, rq.q.v.name, why)
}

// callHosted calls method at the queue's host, the body written by body for the session's
// epoch. A host that answers it does not run the queue (any more: it lost the group's lead,
// and a queue that does not lead its group must not hand out its messages) did nothing: the
// call goes again to the next session, until attachWait, so a basic.get during a move or a
// failover waits for the queue rather than answering empty. Any other failure is returned
// (the call may have been carried out).
func (rq *remoteQueue) callHosted(method string, body func(w *wbuf, epoch uint64)) ([]byte, uint64, error) {
	deadline := time.Now().Add(attachWait)
	for {
		host, epoch, ok := rq.session(deadline)
		if !ok {
			return nil, 0, errNotHosted
		}
		w := wbuf{}
		body(&w, epoch)
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		rep, err := rq.rpc.Call(ctx, host, method, w.b)
		cancel()
		if err == nil {
			return rep, epoch, nil
		}
		rq.failed(epoch, err)
		var re *cluster.RemoteError
		notSent := errors.Is(err, cluster.ErrPeerUnavailable)
		if !notSent && !(errors.As(err, &re) && re.Msg == errNotHosted.Error()) {
			return nil, 0, err
		}
	}
}

// count makes a call that answers a number (purge, delete, stat).
func (rq *remoteQueue) count(method string) (int, bool) {
	rep, _, err := rq.callHosted(method, func(w *wbuf, _ uint64) { w.uint(rq.group) })
	if err != nil {
		return 0, false
	}
	r := newReader(rep)
	n := int(r.Uint())
	return n, r.Err() == nil
}

func (rq *remoteQueue) length() int {
	rq.mu.Lock()
	attached := rq.attached
	rq.mu.Unlock()
	if attached {
		if n, ok := rq.count(rpcStat); ok {
			rq.ready.Store(int64(n))
		}
	}
	return int(rq.ready.Load())
}

func (rq *remoteQueue) consumerCount() int {
	rq.mu.Lock()
	defer rq.mu.Unlock()
	n := 0
	for _, pc := range rq.consumers {
		if !pc.cancelled {
			n++
		}
	}
	return n
}

// delete deletes the queue on its host, cancels the consumers and stops the proxy.
func (rq *remoteQueue) delete() int {
	n, _ := rq.count(rpcDelete)
	rq.dmu.Lock()
	rq.mu.Lock()
	cs := rq.consumers
	rq.consumers = map[queue.ConsumerID]*proxyConsumer{}
	var tell []*proxyConsumer
	for _, pc := range cs {
		if !pc.cancelled {
			pc.cancelled = true
			tell = append(tell, pc)
		}
	}
	rq.mu.Unlock()
	for _, pc := range tell {
		pc.c.Cancelled(rq.q)
	}
	rq.dmu.Unlock()
	rq.stop(false)
	return n
}

// stop ends the proxy; detach tells the host (a broker shutdown: the host keeps the queue).
func (rq *remoteQueue) stop(detach bool) {
	rq.mu.Lock()
	if rq.stopped {
		rq.mu.Unlock()
		return
	}
	rq.stopped = true
	host, epoch, attached := rq.host, rq.epoch, rq.attached
	rq.attached = false
	rq.mu.Unlock()
	rq.ctxCancel()
	close(rq.stopc)
	close(rq.q.done)
	rq.b.proxies.mu.Lock()
	if rq.b.proxies.byGrp[rq.group] == rq {
		delete(rq.b.proxies.byGrp, rq.group)
	}
	rq.b.proxies.mu.Unlock()
	if detach && attached {
		w := wbuf{}
		w.uint(rq.group)
		w.uint(epoch)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = rq.rpc.Notify(ctx, host, rpcDetach, w.b)
		cancel()
	}
}

// Host is the node that runs the queue's process: this one for a local queue, 0 while a
// remote queue's host is not attached.
func (q *Queue) Host() uint64 {
	if q.remote == nil {
		if q.v.b.cfg.Host != nil {
			return q.v.b.cfg.Host.NodeID()
		}
		return 0
	}
	q.remote.mu.Lock()
	defer q.remote.mu.Unlock()
	if !q.remote.attached {
		return 0
	}
	return q.remote.host
}
