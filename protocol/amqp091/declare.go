package amqp091

import (
	"strings"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/protocol/amqp091/wire"
)

// Exchange and queue methods (AMQP 0-9-1 §1.7, §1.8 and RabbitMQ's exchange.bind/unbind).
// The core (broker/meta) applies RabbitMQ's rules and texts; this file checks permissions the
// way rabbit_channel does and answers.

func (ch *channel) exchangeDeclare(m *wire.ExchangeDeclare) error {
	if !m.Passive {
		if err := ch.c.check(permConfigure, "exchange", m.Exchange); err != nil {
			return err
		}
	}
	err := ch.c.vhost.DeclareExchange(meta.ExchangeDef{
		Name: m.Exchange, Type: m.Type, Durable: m.Durable, AutoDelete: m.AutoDelete,
		Internal: m.Internal, Args: m.Arguments,
	}, m.Passive)
	if err != nil {
		return err
	}
	if !m.NoWait {
		ch.send(&wire.ExchangeDeclareOk{})
	}
	return nil
}

func (ch *channel) exchangeDelete(m *wire.ExchangeDelete) error {
	if err := ch.c.check(permConfigure, "exchange", m.Exchange); err != nil {
		return err
	}
	if err := ch.c.vhost.DeleteExchange(m.Exchange, m.IfUnused); err != nil {
		return err
	}
	if !m.NoWait {
		ch.send(&wire.ExchangeDeleteOk{})
	}
	return nil
}

// bindingPerms are rabbit_channel:binding_action/10's checks: write on the destination, read
// on the source.
func (ch *channel) bindingPerms(source string, dest exchange.Dest) error {
	kind := "queue"
	if dest.Exchange {
		kind = "exchange"
	}
	if err := ch.c.check(permWrite, kind, dest.Name); err != nil {
		return err
	}
	return ch.c.check(permRead, "exchange", source)
}

// rejectReplyToBinding: RabbitMQ refuses to bind the direct reply-to pseudo-queue.
func rejectReplyToBinding(q string) error {
	if strings.HasPrefix(q, broker.DirectReplyTo) {
		return newError(accessRefused, "cannot bind or unbind to a volatile (direct reply-to) queue")
	}
	return nil
}

func (ch *channel) exchangeBind(m *wire.ExchangeBind) error {
	b := meta.BindingDef{Source: m.Source, Dest: exchange.Dest{Name: m.Destination, Exchange: true}, Key: m.RoutingKey, Args: m.Arguments}
	if err := ch.bindingPerms(b.Source, b.Dest); err != nil {
		return err
	}
	if err := ch.c.vhost.Bind(b, ch.c.id); err != nil {
		return err
	}
	if !m.NoWait {
		ch.send(&wire.ExchangeBindOk{})
	}
	return nil
}

func (ch *channel) exchangeUnbind(m *wire.ExchangeUnbind) error {
	b := meta.BindingDef{Source: m.Source, Dest: exchange.Dest{Name: m.Destination, Exchange: true}, Key: m.RoutingKey, Args: m.Arguments}
	if err := ch.bindingPerms(b.Source, b.Dest); err != nil {
		return err
	}
	if err := ch.c.vhost.Unbind(b, ch.c.id); err != nil {
		return err
	}
	if !m.NoWait {
		ch.send(&wire.ExchangeUnbindOk{})
	}
	return nil
}

func (ch *channel) queueDeclare(m *wire.QueueDeclare) error {
	if strings.HasPrefix(m.Queue, broker.DirectReplyTo) {
		// RabbitMQ: every declare of the pseudo-queue is effectively passive; it "exists"
		// with one consumer.
		if !m.NoWait {
			ch.send(&wire.QueueDeclareOk{Queue: m.Queue, MessageCount: 0, ConsumerCount: 1})
		}
		return nil
	}
	serverNamed := m.Queue == "" && !m.Passive
	if !m.Passive && !serverNamed {
		if err := ch.c.check(permConfigure, "queue", m.Queue); err != nil {
			return err
		}
	}
	st, err := ch.c.vhost.DeclareQueue(meta.QueueDef{
		Name: m.Queue, Durable: m.Durable, Exclusive: m.Exclusive, AutoDelete: m.AutoDelete,
		Owner: ch.c.id, Args: m.Arguments, ServerNamed: serverNamed,
	}, m.Passive)
	if err != nil {
		return err
	}
	ch.mrdq = st.Name
	if !m.NoWait {
		ch.send(&wire.QueueDeclareOk{Queue: st.Name, MessageCount: uint32(st.Messages), ConsumerCount: uint32(st.Consumers)})
	}
	return nil
}

func (ch *channel) queueBind(m *wire.QueueBind) error {
	name, err := ch.queueName(m.Queue)
	if err != nil {
		return err
	}
	key := m.RoutingKey
	if m.Queue == "" && key == "" {
		key = name // RabbitMQ's routing-key shortcut
	}
	if err := rejectReplyToBinding(name); err != nil {
		return err
	}
	b := meta.BindingDef{Source: m.Exchange, Dest: exchange.Dest{Name: name}, Key: key, Args: m.Arguments}
	if err := ch.bindingPerms(b.Source, b.Dest); err != nil {
		return err
	}
	if err := ch.c.vhost.Bind(b, ch.c.id); err != nil {
		return err
	}
	if !m.NoWait {
		ch.send(&wire.QueueBindOk{})
	}
	return nil
}

func (ch *channel) queueUnbind(m *wire.QueueUnbind) error {
	name, err := ch.queueName(m.Queue)
	if err != nil {
		return err
	}
	key := m.RoutingKey
	if m.Queue == "" && key == "" {
		key = name
	}
	if err := rejectReplyToBinding(name); err != nil {
		return err
	}
	b := meta.BindingDef{Source: m.Exchange, Dest: exchange.Dest{Name: name}, Key: key, Args: m.Arguments}
	if err := ch.bindingPerms(b.Source, b.Dest); err != nil {
		return err
	}
	if err := ch.c.vhost.Unbind(b, ch.c.id); err != nil {
		return err
	}
	ch.send(&wire.QueueUnbindOk{}) // queue.unbind has no no-wait
	return nil
}

func (ch *channel) queuePurge(m *wire.QueuePurge) error {
	name, err := ch.queueName(m.Queue)
	if err != nil {
		return err
	}
	if err := ch.c.check(permRead, "queue", name); err != nil {
		return err
	}
	n, err := ch.c.vhost.PurgeQueue(name, ch.c.id)
	if err != nil {
		return err
	}
	if !m.NoWait {
		ch.send(&wire.QueuePurgeOk{MessageCount: uint32(n)})
	}
	return nil
}

func (ch *channel) queueDelete(m *wire.QueueDelete) error {
	name, err := ch.queueName(m.Queue)
	if err != nil {
		return err
	}
	if err := ch.c.check(permConfigure, "queue", name); err != nil {
		return err
	}
	n, err := ch.c.vhost.DeleteQueue(name, m.IfUnused, m.IfEmpty, ch.c.id)
	if err != nil {
		return err
	}
	if !m.NoWait {
		ch.send(&wire.QueueDeleteOk{MessageCount: uint32(n)})
	}
	return nil
}
