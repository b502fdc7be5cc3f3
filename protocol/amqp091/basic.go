package amqp091

import (
	"crypto/rand"
	"encoding/base64"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/protocol/amqp091/wire"
)

// newConsumerTag is rabbit_guid:binary(rabbit_guid:gen_secure(), "amq.ctag").
func newConsumerTag() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "amq.ctag-" + base64.RawURLEncoding.EncodeToString(b[:])
}

// qos handles basic.qos. RabbitMQ: global=false sets the prefetch of consumers created after
// it; global=true limits unacked deliveries across the whole channel.
func (ch *channel) qos(m *wire.BasicQos) error {
	if m.PrefetchSize != 0 {
		return newError(notImplemented, "prefetch_size!=0 (%d)", m.PrefetchSize)
	}
	if m.Global {
		old := ch.globalLimit.Swap(uint32(m.PrefetchCount))
		if m.PrefetchCount == 0 || (old != 0 && uint32(m.PrefetchCount) > old) {
			ch.kick()
		}
	} else {
		ch.prefetch = uint32(m.PrefetchCount)
	}
	ch.send(&wire.BasicQosOk{})
	return nil
}

// kick asks the queues of every consumer on the channel to try delivering again.
func (ch *channel) kick() {
	ch.starved.Store(false)
	ch.mu.Lock()
	qs := make([]*broker.Queue, 0, len(ch.consumers))
	for _, k := range ch.consumers {
		qs = append(qs, k.q)
	}
	ch.mu.Unlock()
	for _, q := range qs {
		q.Kick()
	}
}

// releaseCredit returns channel-wide prefetch credit and wakes starved queues.
func (ch *channel) releaseCredit(n int) {
	if n == 0 {
		return
	}
	ch.inflight.Add(int32(-n))
	if ch.starved.Load() {
		ch.kick()
	}
}

// consume handles basic.consume.
func (ch *channel) consume(m *wire.BasicConsume) error {
	tag := m.ConsumerTag
	ch.mu.Lock()
	_, dup := ch.consumers[tag]
	if !dup && ch.replyTo != nil && ch.replyTo.tag == tag {
		dup = true
	}
	ch.mu.Unlock()
	if dup {
		return newError(notAllowed, "attempt to reuse consumer tag '%s'", tag)
	}
	if m.Queue == broker.DirectReplyTo {
		return ch.consumeReplyTo(m)
	}
	name, err := ch.queueName(m.Queue)
	if err != nil {
		return err
	}
	if err := ch.c.check(permRead, "queue", name); err != nil {
		return err
	}
	if tag == "" {
		tag = newConsumerTag()
	}
	q, err := ch.c.vhost.Queue(name, ch.c.id)
	if err != nil {
		return err
	}
	prio, err := consumerPriority(m.Arguments)
	if err != nil {
		return err
	}
	k := &consumer{ch: ch, tag: tag, q: q, noAck: m.NoAck}
	id, err := q.Consume(broker.ConsumeOptions{
		Owner: ch.c.id, Prefetch: ch.prefetch, NoAck: m.NoAck, Exclusive: m.Exclusive, Priority: prio,
	}, k)
	if err != nil {
		return err
	}
	k.id = id
	ch.mu.Lock()
	ch.consumers[tag] = k
	ch.mu.Unlock()
	ch.c.registerConsumer(k)
	if !m.NoWait {
		ch.send(&wire.BasicConsumeOk{ConsumerTag: tag})
	}
	// Only now may deliveries flow: consume-ok is in the buffer ahead of them.
	k.active.Store(true)
	q.Kick()
	return nil
}

// consumerPriority reads the x-priority consumer argument (RabbitMQ consumer priorities).
func consumerPriority(args wire.Table) (int32, error) {
	v, ok := args["x-priority"]
	if !ok {
		return 0, nil
	}
	switch x := v.(type) {
	case int8:
		return int32(x), nil
	case uint8:
		return int32(x), nil
	case int16:
		return int32(x), nil
	case uint16:
		return int32(x), nil
	case int32:
		return x, nil
	case int64:
		if x >= -1<<31 && x < 1<<31 {
			return int32(x), nil
		}
	}
	// RabbitMQ: rabbit_consumer_args / check_int_arg.
	return 0, newError(preconditionFailed, "invalid arg 'x-priority' for queue: {unacceptable_type,%T}", v)
}

// consumeReplyTo starts direct reply-to consumption (RabbitMQ "amq.rabbitmq.reply-to").
func (ch *channel) consumeReplyTo(m *wire.BasicConsume) error {
	if !m.NoAck {
		return newError(preconditionFailed, "reply consumer cannot acknowledge")
	}
	ch.mu.Lock()
	set := ch.replyTo != nil
	ch.mu.Unlock()
	if set {
		return newError(preconditionFailed, "reply consumer already set")
	}
	tag := m.ConsumerTag
	if tag == "" {
		tag = newConsumerTag()
	}
	r := &replyConsumer{ch: ch, tag: tag}
	// Register only after consume-ok is queued: nobody knows the address before we publish.
	if !m.NoWait {
		ch.send(&wire.BasicConsumeOk{ConsumerTag: tag})
	}
	r.address, r.unregister = ch.c.vhost.RegisterReplyTo(r)
	ch.mu.Lock()
	ch.replyTo = r
	ch.mu.Unlock()
	return nil
}

// cancel handles a client basic.cancel. An unknown tag is not an error (RabbitMQ answers
// cancel-ok). Unacked deliveries of the consumer stay unacked on the channel.
func (ch *channel) cancel(tag string, nowait bool) error {
	ch.mu.Lock()
	k := ch.consumers[tag]
	delete(ch.consumers, tag)
	var r *replyConsumer
	if ch.replyTo != nil && ch.replyTo.tag == tag {
		r = ch.replyTo
		ch.replyTo = nil
	}
	ch.mu.Unlock()
	if k != nil {
		k.cancelled.Store(true)
		ch.c.unregisterConsumer(k)
		k.q.Cancel(k.id)
	}
	if r != nil {
		r.unregister()
	}
	if !nowait {
		ch.send(&wire.BasicCancelOk{ConsumerTag: tag})
	}
	return nil
}

// get handles basic.get.
func (ch *channel) get(m *wire.BasicGet) error {
	name, err := ch.queueName(m.Queue)
	if err != nil {
		return err
	}
	if err := ch.c.check(permRead, "queue", name); err != nil {
		return err
	}
	q, err := ch.c.vhost.Queue(name, ch.c.id)
	if err != nil {
		return err
	}
	d, remaining, ok, err := q.Fetch(m.NoAck)
	if err != nil {
		return err // a spread queue whose node cannot be reached: not "empty"
	}
	if !ok {
		ch.send(&wire.BasicGetEmpty{})
		return nil
	}
	ch.mu.Lock()
	if ch.closed {
		ch.mu.Unlock()
		return nil
	}
	dt := ch.nextTag
	ch.nextTag++
	if !m.NoAck {
		ch.unacked.push(pendingAck{tag: dt, q: q, id: d.ID})
	}
	msg := d.Msg
	getOk := wire.BasicGetOk{
		DeliveryTag: dt, Redelivered: d.Redelivered, Exchange: msg.Exchange, RoutingKey: msg.RoutingKey,
		MessageCount: uint32(remaining),
	}
	b := ch.c.w.Lock()
	b = wire.AppendContent(b, ch.id, &getOk, (*wire.Properties)(&msg.Properties), msg.Body, ch.c.frameMax)
	ch.c.w.Unlock(b)
	ch.mu.Unlock()
	return nil
}

// ack handles basic.ack, basic.nack and basic.reject (RabbitMQ: rabbit_channel:collect_acks/4).
func (ch *channel) ack(tag uint64, multiple bool, o queue.Outcome) error {
	ch.mu.Lock()
	ps, ok := ch.unacked.take(tag, multiple)
	ch.mu.Unlock()
	if !ok {
		return newError(preconditionFailed, "unknown delivery tag %d", tag)
	}
	if ch.tx != nil {
		ch.tx.acks = append(ch.tx.acks, txAck{ps: ps, o: o})
		return nil
	}
	credit := 0
	for _, p := range ps {
		if p.credit {
			credit++
		}
	}
	settleGrouped(ps, o)
	ch.releaseCredit(credit)
	return nil
}

// recover handles basic.recover and basic.recover-async: requeue every unacked delivery.
// RabbitMQ does not implement requeue=false.
func (ch *channel) recover(requeue bool) error {
	if !requeue {
		return newError(notImplemented, "requeue=false")
	}
	ch.mu.Lock()
	ps := ch.unacked.takeAll()
	ch.mu.Unlock()
	credit := 0
	for _, p := range ps {
		if p.credit {
			credit++
		}
	}
	settleGrouped(ps, queue.Requeue)
	ch.releaseCredit(credit)
	return nil
}
