package amqp091

// Lock order (outermost first; a goroutine holding one may take only those below it):
//
//  1. The core: a queue goroutine calls consumer.Deliver/Allow/Cancelled; the reader calls
//     Publish, Settle, Consume, Get, Kick and every VHost method. Never call into the core while
//     holding any lock below: those calls may block on a queue's inbox or wait for its goroutine,
//     which may itself be waiting for one of our locks in Deliver (broker/LOCKING.md).
//  2. channel.mu: delivery tags, unacked deliveries, consumer map, closed flag.
//  3. confirmTracker.mu: publisher confirm sequence numbers and outcomes.
//  4. conn.closeMu: the connection.close transition.
//  5. writer.mu: the output buffer (writer.lock/unlock). Nothing is taken while holding it.
//
// conn.kmu (the connection's consumer registry) is a leaf like writer.mu.
//
// The reader goroutine owns everything else in a channel (content assembly, tx buffers, qos
// settings, the consumer-tag map is shared and so lives under mu).

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/protocol/amqp091/wire"
	"go.uber.org/zap"
)

type chanState uint8

const (
	chOpen    chanState = iota
	chClosing           // we sent channel.close; waiting for close-ok
)

type assembly uint8

const (
	expectMethod assembly = iota
	expectHeader
	expectBody
)

// pendingAck is a delivery awaiting basic.ack/nack/reject.
type pendingAck struct {
	tag    uint64
	q      *broker.Queue
	id     queue.DeliveryID
	credit bool // counted against the channel-wide prefetch (basic.qos global)
}

// channel is one AMQP channel.
type channel struct {
	c     *conn
	id    uint16
	state chanState // reader only

	// Content assembly (reader only). AMQP 0-9-1 §4.2.6.
	expect     assembly
	pubExch    string
	pubKey     string
	pubMand    bool
	pubImm     bool
	pubProps   message.Properties
	body       []byte
	bodySize   uint64
	header     wire.ContentHeader
	scratch    broker.PublishScratch
	mrdq       string // most recently declared queue (RabbitMQ's queue-name shortcut)
	prefetch   uint32 // basic.qos global=false: applies to consumers created afterwards
	confirming bool
	tx         *txState
	writeOK    map[string]bool // exchanges the user may publish to (permission cache)
	// The exchange of the last publish that passed checkWrite (lastWriteOK: there was one).
	lastWrite   string
	lastWriteOK bool

	// Channel-wide prefetch (basic.qos global=true), enforced through Consumer.Allow.
	globalLimit atomic.Uint32
	inflight    atomic.Int32
	starved     atomic.Bool

	confirms confirmTracker

	mu        sync.Mutex
	closed    bool
	nextTag   uint64
	unacked   unackedList
	consumers map[string]*consumer
	replyTo   *replyConsumer
	deliver   wire.BasicDeliver // scratch, under mu
}

func newChannel(c *conn, id uint16) *channel {
	return &channel{c: c, id: id, nextTag: 1, consumers: map[string]*consumer{},
		scratch: broker.PublishScratch{Wakes: &c.wakes}}
}

// frame handles one frame addressed to this channel.
func (ch *channel) frame(f wire.Frame) error {
	if ch.state == chClosing {
		return ch.closingFrame(f)
	}
	var err error
	switch ch.expect {
	case expectMethod:
		if f.Type != wire.FrameMethod {
			return newError(unexpectedFrame, "expected method frame, got non method frame instead")
		}
		m, derr := ch.c.dec.Decode(f.Payload)
		if derr != nil {
			return ch.c.decodeError(f.Payload, derr)
		}
		err = ch.method(m)
		if err != nil {
			err = asAMQPError(err).withMethod(m.ClassID(), m.MethodID())
		}
	case expectHeader:
		err = ch.contentHeader(f)
	case expectBody:
		err = ch.contentBody(f)
	}
	if err == nil {
		return nil
	}
	ae := asAMQPError(err)
	if ae.code == 0 || isHard(ae.code) {
		return ae
	}
	ch.fail(ae)
	return nil
}

// closingFrame: after we sent channel.close, everything but close and close-ok is dropped
// (AMQP 0-9-1 §2.2.5.2; RabbitMQ's channel in state closing).
func (ch *channel) closingFrame(f wire.Frame) error {
	if f.Type != wire.FrameMethod {
		return nil
	}
	m, err := ch.c.dec.Decode(f.Payload)
	if err != nil {
		return nil
	}
	switch m.(type) {
	case *wire.ChannelCloseOk:
		delete(ch.c.channels, ch.id)
	case *wire.ChannelClose:
		ch.send(&wire.ChannelCloseOk{})
	}
	return nil
}

// fail closes the channel with a soft error: release its resources, send channel.close with
// the code, text and failing method, then wait for close-ok.
func (ch *channel) fail(e *amqpError) {
	ch.c.log.Debug("channel error", zap.Uint16("channel", ch.id), zap.Uint16("code", e.code), zap.String("text", e.text))
	ch.shutdown()
	ch.state = chClosing
	ch.expect = expectMethod
	ch.body = nil
	b := ch.c.w.Lock()
	b = wire.AppendMethodFrame(b, ch.id, &wire.ChannelClose{
		ReplyCode: e.code, ReplyText: e.text, ClassId: e.classID, MethodId: e.methodID,
	})
	ch.c.w.Unlock(b)
}

// send appends one method frame on this channel.
func (ch *channel) send(m wire.Method) {
	b := ch.c.w.Lock()
	ch.c.w.Unlock(wire.AppendMethodFrame(b, ch.id, m))
}

// shutdown releases what the channel holds in the core: its consumers are cancelled and every
// unacknowledged delivery is requeued (AMQP 0-9-1 §1.8.3.x basic.ack: "unacknowledged messages
// ... are requeued when the channel closes"). Idempotent. Reader goroutine only.
func (ch *channel) shutdown() {
	ch.mu.Lock()
	if ch.closed {
		ch.mu.Unlock()
		return
	}
	ch.closed = true
	cons := make([]*consumer, 0, len(ch.consumers))
	for tag, k := range ch.consumers {
		cons = append(cons, k)
		delete(ch.consumers, tag)
	}
	reply := ch.replyTo
	ch.replyTo = nil
	all := ch.unacked.takeAll()
	ch.mu.Unlock()
	ch.confirms.close()

	for _, k := range cons {
		k.cancelled.Store(true)
		ch.c.unregisterConsumer(k)
		k.q.Cancel(k.id)
	}
	if reply != nil {
		reply.unregister()
	}
	// Cancel before requeue: the queue handles its inbox in order, so the requeued messages
	// cannot be handed back to the consumers we are cancelling.
	settleGrouped(all, queue.Requeue)
}

// settleGrouped settles deliveries with one Settle call per queue, in delivery order.
func settleGrouped(ps []pendingAck, o queue.Outcome) {
	broker.SettleByQueue(ps, o, func(p pendingAck) (*broker.Queue, queue.DeliveryID) { return p.q, p.id })
}

// method dispatches a method (not content) on an open channel.
func (ch *channel) method(m wire.Method) error {
	if ch.tx != nil && ch.tx.committing {
		return newError(channelError, "unexpected command while processing 'tx.commit'")
	}
	if _, ok := m.(*wire.BasicPublish); !ok {
		// Only a run of publishes defers its queues' wake-ups (conn.wakes): whatever else
		// the client sent after them (a declare's message count, a get, an ack) sees them
		// handed to their queues first, as before.
		ch.c.wakes.Flush()
	}
	switch m := m.(type) {
	case *wire.BasicPublish:
		ch.pubExch, ch.pubKey, ch.pubMand, ch.pubImm = m.Exchange, m.RoutingKey, m.Mandatory, m.Immediate
		ch.expect = expectHeader
		return nil
	case *wire.BasicAck:
		return ch.ack(m.DeliveryTag, m.Multiple, queue.Ack)
	case *wire.BasicNack:
		o := queue.Discard
		if m.Requeue {
			o = queue.Requeue
		}
		return ch.ack(m.DeliveryTag, m.Multiple, o)
	case *wire.BasicReject:
		o := queue.Discard
		if m.Requeue {
			o = queue.Requeue
		}
		return ch.ack(m.DeliveryTag, false, o)
	case *wire.ChannelOpen:
		return newError(channelError, "second 'channel.open' seen")
	case *wire.ChannelClose:
		ch.shutdown()
		delete(ch.c.channels, ch.id)
		ch.send(&wire.ChannelCloseOk{})
		return nil
	case *wire.ChannelCloseOk:
		return nil
	case *wire.ChannelFlow:
		if !m.Active {
			// RabbitMQ 3.x no longer implements flow control from the client.
			return newError(notImplemented, "active=false")
		}
		ch.send(&wire.ChannelFlowOk{Active: true})
		return nil
	case *wire.ChannelFlowOk:
		return nil
	case *wire.ExchangeDeclare:
		return ch.exchangeDeclare(m)
	case *wire.ExchangeDelete:
		return ch.exchangeDelete(m)
	case *wire.ExchangeBind:
		return ch.exchangeBind(m)
	case *wire.ExchangeUnbind:
		return ch.exchangeUnbind(m)
	case *wire.QueueDeclare:
		return ch.queueDeclare(m)
	case *wire.QueueBind:
		return ch.queueBind(m)
	case *wire.QueueUnbind:
		return ch.queueUnbind(m)
	case *wire.QueuePurge:
		return ch.queuePurge(m)
	case *wire.QueueDelete:
		return ch.queueDelete(m)
	case *wire.BasicQos:
		return ch.qos(m)
	case *wire.BasicConsume:
		return ch.consume(m)
	case *wire.BasicCancel:
		return ch.cancel(m.ConsumerTag, m.NoWait)
	case *wire.BasicGet:
		return ch.get(m)
	case *wire.BasicRecover:
		if err := ch.recover(m.Requeue); err != nil {
			return err
		}
		ch.send(&wire.BasicRecoverOk{})
		return nil
	case *wire.BasicRecoverAsync:
		return ch.recover(m.Requeue)
	case *wire.ConfirmSelect:
		if ch.tx != nil {
			return newError(preconditionFailed, "cannot switch from tx to confirm mode")
		}
		ch.confirming = true
		if !m.Nowait {
			ch.send(&wire.ConfirmSelectOk{})
		}
		return nil
	case *wire.TxSelect:
		if ch.confirming {
			return newError(preconditionFailed, "cannot switch from confirm to tx mode")
		}
		if ch.tx == nil {
			ch.tx = &txState{}
		}
		ch.send(&wire.TxSelectOk{})
		return nil
	case *wire.TxCommit:
		return ch.txCommit()
	case *wire.TxRollback:
		return ch.txRollback()
	}
	return newError(commandInvalid, "unimplemented method")
}

// queueName applies RabbitMQ's shortcut: an empty queue name means the channel's most
// recently declared queue (AMQP 0-9-1 §1.7.2.x "queue name ... if empty, the last declared").
func (ch *channel) queueName(name string) (string, error) {
	if name != "" {
		return name, nil
	}
	if ch.mrdq == "" {
		return "", newError(notFound, "no previously declared queue")
	}
	return ch.mrdq, nil
}

// validExpiration mirrors rabbit_basic:parse_expiration/1: a non-negative decimal integer.
func validExpiration(p *message.Properties) error {
	if p.Flags&message.FlagExpiration == 0 {
		return nil
	}
	n, err := strconv.ParseInt(p.Expiration, 10, 64)
	if err != nil {
		return newError(preconditionFailed, "invalid expiration '%s': no_integer", p.Expiration)
	}
	if n < 0 {
		return newError(preconditionFailed, "invalid expiration '%s': {value_negative,%d}", p.Expiration, n)
	}
	return nil
}
