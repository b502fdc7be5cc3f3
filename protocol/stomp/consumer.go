package stomp

import (
	"strconv"
	"sync/atomic"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/protocol/stomp/wire"
)

type ackMode uint8

const (
	ackAuto             ackMode = iota
	ackClient                   // cumulative
	ackClientIndividual         // one message at a time
)

func parseAckMode(s string) (ackMode, error) {
	switch s {
	case "", "auto":
		return ackAuto, nil
	case "client":
		return ackClient, nil
	case "client-individual":
		return ackClientIndividual, nil
	}
	return 0, errorf("Invalid header", "'ack' must be auto, client or client-individual, not '%s'\n", s)
}

// subscription is one SUBSCRIBE: the broker.Consumer its queue delivers to. Its methods run
// on the queue's goroutine and never block: they take the connection's mutex and the writer's.
type subscription struct {
	c       *conn
	id      string
	dest    string
	q       *broker.Queue
	cid     atomic.Uint64
	mode    ackMode
	durable bool // a durable topic subscription: UNSUBSCRIBE durable:true deletes its queue

	cancelled atomic.Bool
}

// pendingAck is a delivery waiting for ACK or NACK.
type pendingAck struct {
	tag   uint64
	q     *broker.Queue
	id    queue.DeliveryID
	multi bool
}

// Allow implements broker.Consumer: the connection's output back-pressure.
func (s *subscription) Allow() bool {
	if s.cancelled.Load() {
		return false
	}
	w := s.c.w
	if w.Overloaded() {
		// Store, then look again: the writer drains, then reads starved.
		s.c.starved.Store(true)
		if w.Overloaded() {
			if s.q != nil {
				s.q.RefusedForOutput() // its publishers may wait (broker.FlowGate)
			}
			return false
		}
	}
	return true
}

// Deliver implements broker.Consumer: one MESSAGE frame.
func (s *subscription) Deliver(q *broker.Queue, d queue.Delivery) {
	c := s.c
	track := s.mode != ackAuto
	c.mu.Lock()
	if c.closing || s.cancelled.Load() {
		c.mu.Unlock()
		if track {
			// Raced with UNSUBSCRIBE or close: give it back. Not from this goroutine: Settle
			// may block on the queue's inbox, which only this goroutine drains.
			go q.Settle([]queue.DeliveryID{d.ID}, queue.Requeue)
		}
		return
	}
	tag := c.nextTag
	c.nextTag++
	if track {
		c.unacked = append(c.unacked, pendingAck{tag: tag, q: q, id: d.ID, multi: s.mode == ackClient})
	}
	m := d.Msg
	msgID := "T_" + s.id + "@@" + c.session + "@@" + strconv.FormatUint(tag, 10)
	b := c.w.Lock()
	v := c.version
	b = wire.AppendCommand(b, frame.MESSAGE)
	b = wire.AppendHeader(b, frame.Subscription, s.id, v)
	b = wire.AppendHeader(b, frame.Destination, formatDestination(m.Exchange, m.RoutingKey), v)
	b = wire.AppendHeader(b, frame.MessageId, msgID, v)
	b = wire.AppendHeader(b, hdrRedelivered, strconv.FormatBool(d.Redelivered), v)
	if track && v >= wire.V12 {
		b = wire.AppendHeader(b, frame.Ack, msgID, v)
	}
	b = appendProperties(b, &m.Properties, v)
	b = wire.AppendHeader(b, frame.ContentLength, strconv.Itoa(len(m.Body)), v)
	b = wire.AppendBody(b, m.Body)
	c.w.Unlock(b)
	c.mu.Unlock()
}

// Cancelled implements broker.Consumer: the queue was deleted. RabbitMQ tells the client with
// an ERROR frame naming the subscription and keeps the connection open.
func (s *subscription) Cancelled(*broker.Queue) {
	if s.cancelled.Swap(true) {
		return
	}
	c := s.c
	c.mu.Lock()
	if c.subs[s.id] == s {
		delete(c.subs, s.id)
	}
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return
	}
	detail := "The server has canceled a subscription.\nNo more messages will be delivered for id='" + s.id + "'.\n"
	b := c.w.Lock()
	b = wire.AppendCommand(b, frame.ERROR)
	b = wire.AppendHeader(b, "message", "Server cancelled subscription", c.version)
	b = wire.AppendHeader(b, frame.Subscription, s.id, c.version)
	b = wire.AppendHeader(b, frame.ContentType, "text/plain", c.version)
	b = wire.AppendHeader(b, frame.ContentLength, strconv.Itoa(len(detail)), c.version)
	b = wire.AppendBody(b, []byte(detail))
	c.w.Unlock(b)
}

// settle settles deliveries with one Settle call per queue, in delivery order.
func settle(ps []pendingAck, o queue.Outcome) {
	broker.SettleByQueue(ps, o, func(p pendingAck) (*broker.Queue, queue.DeliveryID) { return p.q, p.id })
}

// requeue gives unacknowledged deliveries back to their queues (connection closed).
func requeue(ps []pendingAck) { settle(ps, queue.Requeue) }
