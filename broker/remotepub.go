package broker

// Forwarded publishes of a proxy (remote.go), in order.
//
// RabbitMQ keeps the order of one channel's messages to one queue, and so must a spread queue
// across a change of host. Publishes go to the host asynchronously (many in flight), and the
// RPC channel keeps their order to one node (cluster/rpc.go). A publish the host did not take
// (it was not sent: the host is unreachable; or the host answered that it no longer runs the
// queue, having lost its group's lead) goes again to the next host, and so do the ones sent
// after it to the same host, which are refused too (a host that stops running a queue runs it
// again only when asked through this proxy, after their refusals). The order holds because
// those are sent again in publish order, before any publish made after them:
//
//   - every publish gets a sequence number, in the order the publishers call publish (one
//     channel's publishes call it one after the other);
//   - a publish is sent at once only if nothing waits to be sent again and nothing is in flight
//     in another session than the current one (whose refusal would have to go first);
//   - otherwise it waits in redo, ordered by sequence number, with the refused ones; the
//     resender sends redo, in order, once every publish sent in an earlier session has been
//     answered (a refusal puts it in redo at its place).
//
// A publish whose answer was lost with the connection (it may have been enqueued) is nacked,
// as one that found no host before its deadline (attachWait after it was published): the
// publisher decides whether to publish it again. The ones after it keep their order.

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/cluster"
)

// pubOrder is a proxy's forwarded publishes that are unanswered or wait to be sent.
type pubOrder struct {
	// sendMu is held while publishes are sent, so that the check of the order and the send
	// are one step. Lock order: sendMu, then mu; rq.mu is not held with either.
	sendMu sync.Mutex

	mu       sync.Mutex
	seq      uint64
	inflight map[uint64]int // sent and unanswered, by the session epoch they were sent in
	redo     []*outPub      // to send (again), by seq
	kick     chan struct{}
}

// outPub is one forwarded publish.
type outPub struct {
	seq      uint64
	body     []byte // the rpcPublish call's body
	t        *confirmTracker
	deadline time.Time
}

func (p *outPub) done(ok bool) {
	if p.t != nil {
		p.t.done(ok)
	}
}

func (o *pubOrder) init() {
	o.inflight = map[uint64]int{}
	o.kick = make(chan struct{}, 1)
}

func (o *pubOrder) wake() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// onlyIn reports whether every publish in flight was sent in session epoch. o.mu held.
func (o *pubOrder) onlyIn(epoch uint64) bool {
	for e, n := range o.inflight {
		if n > 0 && e != epoch {
			return false
		}
	}
	return true
}

// answeredLocked counts one publish of epoch as answered. o.mu held.
func (o *pubOrder) answeredLocked(epoch uint64, n int) {
	if o.inflight[epoch] -= n; o.inflight[epoch] <= 0 {
		delete(o.inflight, epoch)
	}
}

// redoLocked puts ps back in redo at their places. o.mu held.
func (o *pubOrder) redoLocked(ps ...*outPub) {
	o.redo = append(o.redo, ps...)
	slices.SortFunc(o.redo, func(a, b *outPub) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
}

// publish forwards a publish to the queue's host, in order (see the file comment). It waits
// for a host while none is attached (up to attachWait: the publisher's connection waits, as
// for a full queue), and returns once the publish is sent or waits to be sent again; t hears
// the host's answer.
func (rq *remoteQueue) publish(m *message.Message, t *confirmTracker) {
	w := wbuf{}
	w.uint(rq.group)
	if err := w.msg(m); err != nil {
		rq.b.log.Error("message not encodable for its queue's node", zap.Error(err))
		if t != nil {
			t.done(false)
		}
		return
	}
	p := &outPub{body: w.b, t: t, deadline: time.Now().Add(attachWait)}
	if _, _, ok := rq.session(p.deadline); !ok {
		p.done(false)
		return
	}
	o := &rq.pub
	o.sendMu.Lock()
	defer o.sendMu.Unlock()
	rq.mu.Lock()
	host, epoch, attached := rq.host, rq.epoch, rq.attached
	rq.mu.Unlock()
	o.mu.Lock()
	o.seq++
	p.seq = o.seq
	if !attached || len(o.redo) > 0 || !o.onlyIn(epoch) {
		o.redo = append(o.redo, p) // the highest seq: redo stays in order
		o.mu.Unlock()
		o.wake()
		return
	}
	o.inflight[epoch]++
	o.mu.Unlock()
	rq.sendPub(host, epoch, []*outPub{p})
}

// sendPub sends ps, counted in flight in epoch, to host, in order. o.sendMu held. Those not
// sent go back to redo (the host is unreachable: the next one takes them) or are nacked.
func (rq *remoteQueue) sendPub(host, epoch uint64, ps []*outPub) {
	o := &rq.pub
	for i, p := range ps {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		err := rq.rpc.CallAsync(ctx, host, rpcPublish, p.body, func(rep []byte, err error) {
			rq.pubAnswered(p, epoch, rep, err)
		})
		cancel()
		if err == nil {
			continue
		}
		rq.failed(epoch, err)
		rest := ps[i:]
		o.mu.Lock()
		o.answeredLocked(epoch, len(rest))
		if errors.Is(err, cluster.ErrPeerUnavailable) {
			o.redoLocked(rest...)
			rest = nil
		}
		o.mu.Unlock()
		for _, p := range rest {
			p.done(false) // the wait for room ended (callTimeout): give up on them
		}
		o.wake()
		return
	}
}

// pubAnswered handles the host's answer to p, sent in epoch. It runs on the transport's
// reader: it must not block (o.mu is only ever held briefly).
func (rq *remoteQueue) pubAnswered(p *outPub, epoch uint64, rep []byte, err error) {
	o := &rq.pub
	if err != nil {
		rq.failed(epoch, err)
		var re *cluster.RemoteError
		notTaken := errors.As(err, &re) && re.Msg == errNotHosted.Error()
		o.mu.Lock()
		o.answeredLocked(epoch, 1)
		if notTaken && time.Now().Before(p.deadline) {
			o.redoLocked(p) // the next host takes it, before what was published after it
			p = nil
		}
		o.mu.Unlock()
		o.wake()
		if p != nil {
			p.done(false) // may have been enqueued (the answer was lost), or too late
		}
		return
	}
	r := newReader(rep)
	ok := readBool(r)
	if n := r.Uint(); r.Err() == nil {
		rq.ready.Store(int64(n))
	} else {
		ok = false
	}
	o.mu.Lock()
	o.answeredLocked(epoch, 1)
	waiting := len(o.redo) > 0
	o.mu.Unlock()
	if waiting {
		o.wake()
	}
	p.done(ok)
}

// resendPubs sends the publishes waiting in redo, in order, until the proxy stops; then it
// nacks what still waits.
func (rq *remoteQueue) resendPubs() {
	o := &rq.pub
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-o.kick:
		case <-tick.C:
		case <-rq.stopc:
			o.mu.Lock()
			left := o.redo
			o.redo = nil
			o.mu.Unlock()
			for _, p := range left {
				p.done(false)
			}
			return
		}
		for rq.resendRound() {
		}
	}
}

// resendRound sends redo once a host is attached and nothing of an earlier session is in
// flight; it nacks the first waiting publish when no host comes before its deadline. It
// reports whether to go on at once.
func (rq *remoteQueue) resendRound() bool {
	o := &rq.pub
	o.mu.Lock()
	if len(o.redo) == 0 {
		o.mu.Unlock()
		return false
	}
	first := o.redo[0]
	o.mu.Unlock()
	if _, _, ok := rq.session(first.deadline); !ok {
		o.mu.Lock()
		if len(o.redo) > 0 && o.redo[0] == first {
			o.redo = o.redo[1:]
		} else {
			first = nil
		}
		o.mu.Unlock()
		if first != nil {
			first.done(false)
		}
		return true
	}
	o.sendMu.Lock()
	defer o.sendMu.Unlock()
	rq.mu.Lock()
	host, epoch, attached := rq.host, rq.epoch, rq.attached
	rq.mu.Unlock()
	o.mu.Lock()
	if !attached || !o.onlyIn(epoch) {
		o.mu.Unlock()
		return false // the answers of the earlier session come first (they wake us)
	}
	batch := o.redo
	o.redo = nil
	o.inflight[epoch] += len(batch)
	o.mu.Unlock()
	rq.sendPub(host, epoch, batch)
	return false
}
