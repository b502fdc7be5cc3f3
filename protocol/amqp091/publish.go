package amqp091

import (
	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/protocol/amqp091/wire"
)

// maxMsgSize is RabbitMQ's hard ceiling on max_message_size (?MAX_MSG_SIZE, 512 MiB).
const maxMsgSize = 536870912

// basicClass is the basic class id, the only class with content. AMQP 0-9-1 §1.8.
const basicClass = 60

// contentHeader handles the header frame of a basic.publish (rabbit_command_assembler texts).
func (ch *channel) contentHeader(f wire.Frame) error {
	pubIDs := func(e *amqpError) *amqpError { return e.withMethod(basicClass, 40) }
	if f.Type != wire.FrameHeader {
		return pubIDs(newError(unexpectedFrame, "expected content header for class 60, got non content header frame instead"))
	}
	if err := wire.DecodeContentHeader(f.Payload, &ch.header); err != nil {
		return pubIDs(newError(frameError, "cannot decode %s", erlBinary(f.Payload)))
	}
	if ch.header.ClassID != basicClass {
		return pubIDs(newError(unexpectedFrame, "expected content header for class 60, got one for class %d instead", ch.header.ClassID))
	}
	size := ch.header.BodySize
	if size > maxMsgSize {
		return pubIDs(newError(frameError, "content body size %d exceeds maximum allowed size %d", size, maxMsgSize))
	}
	ch.pubProps = message.Properties(ch.header.Properties)
	ch.bodySize = size
	if size > ch.c.s.cfg.MaxMessageSize {
		// RabbitMQ checks after assembling the body (rabbit_channel:check_msg_size/2); failing
		// at the header is the same answer without buffering the oversized body. The body
		// frames that follow arrive on a closing channel and are dropped.
		ch.expect = expectMethod
		format := "message size %d is larger than configured max size %d"
		if ch.c.s.cfg.MaxMessageSize == maxMsgSize {
			format = "message size %d is larger than max size %d"
		}
		return pubIDs(newError(preconditionFailed, format, size, ch.c.s.cfg.MaxMessageSize))
	}
	if size == 0 {
		ch.expect = expectMethod
		ch.body = nil
		return ch.publish()
	}
	// The body's one allocation: the Message keeps this slice; it is never copied again.
	ch.body = make([]byte, 0, size)
	ch.expect = expectBody
	return nil
}

// contentBody handles a body frame.
func (ch *channel) contentBody(f wire.Frame) error {
	if f.Type != wire.FrameBody {
		return newError(unexpectedFrame, "expected content body, got non content body frame instead").withMethod(basicClass, 40)
	}
	if uint64(len(ch.body))+uint64(len(f.Payload)) > ch.bodySize {
		return newError(frameError, "content body frame exceeds remaining content size").withMethod(basicClass, 40)
	}
	ch.body = append(ch.body, f.Payload...)
	if uint64(len(ch.body)) < ch.bodySize {
		return nil
	}
	ch.expect = expectMethod
	return ch.publish()
}

// publish completes a basic.publish: checks, then routing through the core, then mandatory
// returns and confirms, in RabbitMQ's order (basic.return before basic.ack).
func (ch *channel) publish() error {
	err := ch.doPublish()
	if err != nil {
		return asAMQPError(err).withMethod(basicClass, 40)
	}
	return nil
}

func (ch *channel) doPublish() error {
	ch.c.published = true
	m := &message.Message{Exchange: ch.pubExch, RoutingKey: ch.pubKey, Properties: ch.pubProps, Body: ch.body}
	ch.body = nil
	ch.pubProps = message.Properties{}
	if ch.pubImm {
		// RabbitMQ dropped immediate in 3.0 (rabbit_channel: not_implemented "immediate=true").
		return newError(notImplemented, "immediate=true")
	}
	if err := ch.checkWrite(m.Exchange); err != nil {
		return err
	}
	if err := validExpiration(&m.Properties); err != nil {
		return err
	}
	if m.Properties.Flags&message.FlagUserID != 0 && m.Properties.UserID != ch.c.userName {
		// rabbit_access_control:check_user_id/2.
		return newError(preconditionFailed, "user_id property set to '%s' but authenticated user was '%s'",
			m.Properties.UserID, ch.c.userName)
	}
	if m.Properties.Flags&message.FlagReplyTo != 0 && m.Properties.ReplyTo == broker.DirectReplyTo {
		ch.mu.Lock()
		r := ch.replyTo
		ch.mu.Unlock()
		if r == nil {
			return newError(preconditionFailed, "fast reply consumer does not exist")
		}
		m.Properties.ReplyTo = r.address
	}
	if ch.tx != nil {
		// RabbitMQ looks the exchange up at basic.publish, not at tx.commit.
		if err := ch.c.vhost.CheckPublish(m.Exchange); err != nil {
			return err
		}
		ch.tx.publishes = append(ch.tx.publishes, txPublish{m: m, mandatory: ch.pubMand})
		return nil
	}
	var seq uint64
	var confirm broker.Confirm
	if ch.confirming {
		seq = ch.confirms.assign()
		confirm = ch.confirms.callback(ch, seq)
	}
	routed, err := ch.c.vhost.Publish(m, confirm, &ch.scratch)
	if err != nil {
		return err
	}
	ch.c.flow.Note(ch.scratch.Queues())
	if !routed && ch.pubMand {
		ch.sendReturn(m)
	}
	if seq != 0 {
		ch.confirms.release(ch, seq)
	}
	return nil
}

// sendReturn sends basic.return 312 NO_ROUTE with the message (AMQP 0-9-1 §1.8.3.8 mandatory).
func (ch *channel) sendReturn(m *message.Message) {
	r := wire.BasicReturn{ReplyCode: noRoute, ReplyText: "NO_ROUTE", Exchange: m.Exchange, RoutingKey: m.RoutingKey}
	b := ch.c.w.Lock()
	b = wire.AppendContent(b, ch.id, &r, (*wire.Properties)(&m.Properties), m.Body, ch.c.frameMax)
	ch.c.w.Unlock(b)
}

// checkWrite checks the write permission on an exchange, caching successes per channel as
// RabbitMQ's channel does (its permission cache).
func (ch *channel) checkWrite(exchange string) error {
	if ch.lastWriteOK && ch.lastWrite == exchange {
		// A publisher mostly publishes to one exchange: no map lookup (hashing the name) per
		// message.
		return nil
	}
	if ch.writeOK[exchange] {
		ch.lastWrite, ch.lastWriteOK = exchange, true
		return nil
	}
	if err := ch.c.check(permWrite, "exchange", exchange); err != nil {
		return err
	}
	if ch.writeOK == nil || len(ch.writeOK) > 64 {
		ch.writeOK = map[string]bool{}
	}
	ch.writeOK[exchange] = true
	ch.lastWrite, ch.lastWriteOK = exchange, true
	return nil
}
