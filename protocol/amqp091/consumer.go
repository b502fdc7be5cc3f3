package amqp091

import (
	"sort"
	"sync/atomic"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/protocol/amqp091/wire"
)

// consumer is one basic.consume: the broker.Consumer a queue delivers to. Its methods run on
// the queue's goroutine and never block: they take the channel mutex and the writer's.
type consumer struct {
	ch    *channel
	tag   string
	q     *broker.Queue
	id    queue.ConsumerID
	noAck bool

	// active is false until basic.consume-ok has been written, so no delivery overtakes it.
	active    atomic.Bool
	cancelled atomic.Bool
	// reserved counts channel-wide credit taken by Allow for deliveries not yet handed to
	// Deliver: the queue calls Allow for each delivery of a drain round, then Deliver for
	// each. Only the queue's goroutine touches it.
	reserved int
}

// Allow implements broker.Consumer: the channel-wide prefetch (basic.qos global=true) and the
// connection's output back-pressure.
func (k *consumer) Allow() bool {
	if !k.active.Load() || k.cancelled.Load() {
		return false
	}
	ch := k.ch
	if ch.c.w.Overloaded() {
		// Store, then look again: the writer drains, then reads starved, so one of us sees
		// the other and no wake-up is lost.
		ch.c.starved.Store(true)
		if ch.c.w.Overloaded() {
			if k.q != nil {
				k.q.RefusedForOutput() // its publishers may wait (broker.FlowGate)
			}
			return false
		}
	}
	if k.noAck {
		return true
	}
	limit := int32(ch.globalLimit.Load())
	if limit == 0 {
		return true
	}
	for {
		n := ch.inflight.Load()
		if n >= limit {
			// Store, then look again: releaseCredit lowers inflight, then reads starved, so
			// either it kicks us or we see the credit it returned.
			ch.starved.Store(true)
			if ch.inflight.Load() < limit {
				continue
			}
			return false
		}
		if ch.inflight.CompareAndSwap(n, n+1) {
			k.reserved++
			return true
		}
	}
}

// Deliver implements broker.Consumer: basic.deliver with the next delivery tag.
func (k *consumer) Deliver(q *broker.Queue, d queue.Delivery) {
	credit := k.reserved > 0
	if credit {
		k.reserved--
	}
	ch := k.ch
	ch.mu.Lock()
	if ch.closed || k.cancelled.Load() {
		ch.mu.Unlock()
		if credit {
			ch.inflight.Add(-1)
		}
		if !k.noAck && q != nil {
			// Raced with basic.cancel or channel close: give it back. Not from this goroutine:
			// Settle may block on the queue's inbox, which only this goroutine drains.
			go q.Settle([]queue.DeliveryID{d.ID}, queue.Requeue)
		}
		return
	}
	ch.deliverLocked(k.tag, q, d, !k.noAck, credit)
	ch.mu.Unlock()
}

// Cancelled implements broker.Consumer: the queue was deleted. RabbitMQ tells clients that
// advertise consumer_cancel_notify with a server-sent basic.cancel.
func (k *consumer) Cancelled(*broker.Queue) {
	ch := k.ch
	if k.cancelled.Swap(true) {
		return
	}
	ch.mu.Lock()
	if ch.consumers[k.tag] == k {
		delete(ch.consumers, k.tag)
	}
	closed := ch.closed
	ch.mu.Unlock()
	ch.c.unregisterConsumer(k)
	if !closed && ch.c.capCancelNotify {
		ch.send(&wire.BasicCancel{ConsumerTag: k.tag, NoWait: true})
	}
}

// deliverLocked writes basic.deliver plus content and records the unacked delivery. ch.mu held.
func (ch *channel) deliverLocked(tag string, q *broker.Queue, d queue.Delivery, track, credit bool) {
	dt := ch.nextTag
	ch.nextTag++
	if track {
		ch.unacked.push(pendingAck{tag: dt, q: q, id: d.ID, credit: credit})
	} else if credit {
		ch.inflight.Add(-1)
	}
	m := d.Msg
	ch.deliver = wire.BasicDeliver{
		ConsumerTag: tag, DeliveryTag: dt, Redelivered: d.Redelivered,
		Exchange: m.Exchange, RoutingKey: m.RoutingKey,
	}
	b := ch.c.w.Lock()
	b = wire.AppendContent(b, ch.id, &ch.deliver, (*wire.Properties)(&m.Properties), m.Body, ch.c.frameMax)
	ch.c.w.Unlock(b)
}

// replyConsumer is the direct reply-to pseudo-consumer (basic.consume on
// "amq.rabbitmq.reply-to", always no-ack).
type replyConsumer struct {
	ch         *channel
	tag        string
	address    string
	unregister func()
}

func (r *replyConsumer) Allow() bool { return true }

func (r *replyConsumer) Deliver(_ *broker.Queue, d queue.Delivery) {
	ch := r.ch
	ch.mu.Lock()
	if !ch.closed && ch.replyTo == r {
		ch.deliverLocked(r.tag, nil, d, false, false)
	}
	ch.mu.Unlock()
}

func (r *replyConsumer) Cancelled(*broker.Queue) {}

func (c *conn) registerConsumer(k *consumer) {
	c.kmu.Lock()
	c.consumers[k] = struct{}{}
	c.kmu.Unlock()
}

func (c *conn) unregisterConsumer(k *consumer) {
	c.kmu.Lock()
	delete(c.consumers, k)
	c.kmu.Unlock()
}

// unackedList holds a channel's unacknowledged deliveries in delivery-tag order. Acks mostly
// come oldest first, so removal at the head is O(1); elsewhere it shifts the tail.
type unackedList struct {
	items []pendingAck
	head  int
}

func (u *unackedList) push(p pendingAck) {
	if u.head > 0 && u.head >= len(u.items)/2 && u.head >= 64 {
		n := copy(u.items, u.items[u.head:])
		u.items = u.items[:n]
		u.head = 0
	}
	u.items = append(u.items, p)
}

// find returns the index of tag, or -1.
func (u *unackedList) find(tag uint64) int {
	live := u.items[u.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].tag >= tag })
	if i < len(live) && live[i].tag == tag {
		return u.head + i
	}
	return -1
}

// take removes tag (and, multiple, every earlier tag) and returns them in tag order.
// tag 0 with multiple means everything (AMQP 0-9-1 §1.8.3.13). ok is false for an unknown tag.
func (u *unackedList) take(tag uint64, multiple bool) ([]pendingAck, bool) {
	if multiple && tag == 0 {
		return u.takeAll(), true
	}
	i := u.find(tag)
	if i < 0 {
		return nil, false
	}
	if multiple {
		out := append([]pendingAck(nil), u.items[u.head:i+1]...)
		u.head = i + 1
		u.reset()
		return out, true
	}
	out := []pendingAck{u.items[i]}
	if i == u.head {
		u.head++
	} else {
		u.items = append(u.items[:i], u.items[i+1:]...)
	}
	u.reset()
	return out, true
}

func (u *unackedList) takeAll() []pendingAck {
	out := append([]pendingAck(nil), u.items[u.head:]...)
	u.items, u.head = u.items[:0], 0
	return out
}

func (u *unackedList) reset() {
	if u.head == len(u.items) {
		u.items, u.head = u.items[:0], 0
	}
}

// restore puts deliveries back (tx.rollback), keeping tag order.
func (u *unackedList) restore(ps []pendingAck) {
	all := append(u.items[u.head:len(u.items):len(u.items)], ps...)
	sort.Slice(all, func(i, j int) bool { return all[i].tag < all[j].tag })
	u.items, u.head = all, 0
}
