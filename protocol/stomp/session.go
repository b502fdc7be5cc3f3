package stomp

import (
	"strconv"
	"strings"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/protocol/auth"
	"github.com/parleymq/parley/protocol/stomp/wire"
)

// route resolves a SEND's destination to an exchange and routing key, declaring the queue a
// /queue/ destination names (as RabbitMQ's plugin does on first use) and creating the temp
// queue a /temp-queue/ names.
func (c *conn) route(f *frame.Frame) (target, error) {
	dh, ok := f.Header.Contains(frame.Destination)
	if !ok {
		return target{}, errorf("Missing destination", "SEND must include a 'destination' header\n")
	}
	d, err := parseDestination(dh)
	if err != nil {
		return target{}, err
	}
	switch d.kind {
	case destQueue:
		if err := c.ensureQueue(d.name, f.Header, true); err != nil {
			return target{}, err
		}
		return target{"", d.name}, nil
	case destTopic:
		return target{"amq.topic", d.name}, nil
	case destExchange:
		return target{d.name, d.key}, nil
	case destAmqQueue, destReplyQueue:
		return target{"", d.name}, nil
	default: // destTempQueue
		name, err := c.tempQueue(d.name)
		if err != nil {
			return target{}, err
		}
		return target{"", name}, nil
	}
}

type target struct{ exchange, key string }

// send publishes a SEND frame. With r, the RECEIPT waits for the core's confirm.
func (c *conn) send(f *frame.Frame, r *receipt) error {
	if _, ok := f.Header.Contains(frame.MessageId); ok {
		return errorf("Invalid header", "'message-id' is not allowed on 'SEND'.\n")
	}
	t, err := c.route(f)
	if err != nil {
		return err
	}
	props, err := properties(f)
	if err != nil {
		return err
	}
	if props.Flags&message.FlagUserID != 0 && props.UserID != c.user.Name {
		// rabbit_access_control:check_user_id/2, as for AMQP publishes.
		return errorf("precondition_failed", "user_id property set to '%s' but authenticated user was '%s'", props.UserID, c.user.Name)
	}
	if props.Flags&message.FlagReplyTo != 0 && strings.HasPrefix(props.ReplyTo, "/temp-queue/") {
		d, err := parseDestination(props.ReplyTo)
		if err != nil {
			return err
		}
		name, err := c.tempQueue(d.name)
		if err != nil {
			return err
		}
		props.ReplyTo = "/reply-queue/" + name
	}
	if !c.writeOK[t.exchange] {
		if err := c.check(auth.Write, "exchange", t.exchange); err != nil {
			return err
		}
		if len(c.writeOK) > 64 {
			clear(c.writeOK)
		}
		c.writeOK[t.exchange] = true
	}
	m := &message.Message{Exchange: t.exchange, RoutingKey: t.key, Properties: props, Body: f.Body}
	var confirm broker.Confirm
	if r != nil {
		r.hold()
		confirm = r.release
	}
	if _, err := c.vhost.Publish(m, confirm, &c.scratch); err != nil {
		if r != nil {
			r.release(true)
		}
		return err
	}
	c.flow.Note(c.scratch.Queues())
	return nil
}

func (c *conn) check(kind auth.Access, resourceKind, name string) error {
	if err := c.s.users.Check(c.user.Name, c.vhostName, kind, resourceKind, name); err != nil {
		return &stompError{msg: "access_refused", detail: err.Error()}
	}
	return nil
}

// ensureQueue declares a /queue/ destination's queue once per connection: durable, not
// exclusive, not auto-delete unless the frame's durable/persistent, exclusive and auto-delete
// headers say otherwise, with x- headers as arguments (rabbit_stomp_util:build_params).
func (c *conn) ensureQueue(name string, h *frame.Header, durableDefault bool) error {
	if c.declared[name] {
		return nil
	}
	def, err := queueDef(name, h, durableDefault)
	if err != nil {
		return err
	}
	if err := c.declare(def); err != nil {
		return err
	}
	if len(c.declared) > 1024 {
		clear(c.declared)
	}
	c.declared[name] = true
	return nil
}

func queueDef(name string, h *frame.Header, durableDefault bool) (meta.QueueDef, error) {
	args, err := queueArgs(h)
	if err != nil {
		return meta.QueueDef{}, err
	}
	durable := durableDefault
	if _, ok := h.Contains("durable"); ok {
		durable = boolHeader(h, "durable", durableDefault)
	} else if _, ok := h.Contains(hdrPersistent); ok {
		durable = boolHeader(h, hdrPersistent, durableDefault)
	}
	return meta.QueueDef{
		Name:       name,
		Durable:    durable,
		Exclusive:  boolHeader(h, "exclusive", false),
		AutoDelete: boolHeader(h, "auto-delete", false),
		Args:       args,
	}, nil
}

func (c *conn) declare(def meta.QueueDef) error {
	if err := c.check(auth.Configure, "queue", def.Name); err != nil {
		return err
	}
	def.Owner = c.id
	_, err := c.vhost.DeclareQueue(def, false)
	return err
}

// tempQueue returns the queue behind /temp-queue/id, creating it and its subscription on
// first use (rabbit_stomp_processor:ensure_reply_queue): an exclusive auto-delete queue
// consumed in auto-ack mode, whose messages carry subscription:/temp-queue/id.
func (c *conn) tempQueue(id string) (string, error) {
	if name, ok := c.tempQs[id]; ok {
		return name, nil
	}
	name := generatedQueue("stomp.gen-")
	if err := c.declare(meta.QueueDef{Name: name, Exclusive: true, AutoDelete: true}); err != nil {
		return "", err
	}
	q, err := c.vhost.Queue(name, c.id)
	if err != nil {
		return "", err
	}
	subID := "/temp-queue/" + id
	s := &subscription{c: c, id: subID, q: q, mode: ackAuto}
	if err := c.startSubscription(s, broker.ConsumeOptions{Owner: c.id, NoAck: true}); err != nil {
		return "", err
	}
	c.tempQs[id] = name
	return name, nil
}

// subscribe handles SUBSCRIBE (rabbit_stomp_processor:do_subscribe).
func (c *conn) subscribe(f *frame.Frame, _ *receipt) error {
	h := f.Header
	dh, ok := h.Contains(frame.Destination)
	if !ok {
		return errorf("Missing destination", "SUBSCRIBE must include a 'destination' header\n")
	}
	id, hasID := h.Contains(frame.Id)
	if !hasID {
		id = dh // RabbitMQ (and STOMP 1.0) key a subscription without id by its destination
	}
	if strings.HasPrefix(id, "/temp-queue/") {
		return errorf("Invalid id", "SUBSCRIBE 'id' may not start with /temp-queue/\n")
	}
	subName, hasName := h.Contains("activemq.subscriptionName")
	durable := boolHeader(h, "durable", false) || boolHeader(h, hdrPersistent, false) || hasName
	if durable && !hasID && !hasName {
		return errorf("Missing Header", "Header 'id' is required for durable subscriptions")
	}
	if !hasName {
		subName = id
	}
	mode, err := parseAckMode(h.Get(frame.Ack))
	if err != nil {
		return err
	}
	var prefetch uint32
	if v, ok := h.Contains("prefetch-count"); ok {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return errorf("Invalid header", "'prefetch-count' must be an integer from 0 to 65535, not '%s'\n", v)
		}
		prefetch = uint32(n)
	}
	c.mu.Lock()
	_, dup := c.subs[id]
	c.mu.Unlock()
	if dup {
		return errorf("Duplicated subscription identifier", "A subscription identified by '%s' already exists.", id)
	}
	d, err := parseDestination(dh)
	if err != nil {
		return err
	}
	var qname string
	switch d.kind {
	case destQueue:
		if err := c.ensureQueue(d.name, h, true); err != nil {
			return err
		}
		qname = d.name
	case destAmqQueue:
		qname = d.name
	case destTopic, destExchange:
		ex, key := "amq.topic", d.name
		if d.kind == destExchange {
			ex, key = d.name, d.key
			if err := c.vhost.CheckPublish(ex); err != nil && isNotFound(err) {
				return err
			}
		}
		def, err := queueDef("", h, false)
		if err != nil {
			return err
		}
		if durable {
			// A durable subscription's queue outlives the connection; the same name finds it
			// again (RabbitMQ: rabbit_stomp_util:subscription_queue_name).
			def.Name, def.Durable, def.Exclusive = durableSubscriptionQueue(subName), true, false
			def.Packed = true // one small queue per subscriber: packed into a partition group
		} else {
			def.Name, def.Durable, def.Exclusive, def.AutoDelete = generatedQueue("stomp-subscription-"), false, true, true
		}
		if err := c.declare(def); err != nil {
			return err
		}
		if err := c.check(auth.Write, "queue", def.Name); err != nil {
			return err
		}
		if err := c.check(auth.Read, "exchange", ex); err != nil {
			return err
		}
		b := meta.BindingDef{Source: ex, Dest: exchange.Dest{Name: def.Name}, Key: key}
		if err := c.vhost.Bind(b, c.id); err != nil {
			return err
		}
		qname = def.Name
	default:
		return errorf("Invalid destination", "'%s' is not a valid destination for 'SUBSCRIBE'\n", dh)
	}
	if err := c.check(auth.Read, "queue", qname); err != nil {
		return err
	}
	q, err := c.vhost.Queue(qname, c.id)
	if err != nil {
		return err
	}
	s := &subscription{c: c, id: id, dest: dh, q: q, mode: mode, durable: durable && (d.kind == destTopic || d.kind == destExchange)}
	var prio int32
	if v, ok := h.Contains("x-priority"); ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return errorf("Invalid header", "'x-priority' must be an integer, not '%s'\n", v)
		}
		prio = int32(n)
	}
	return c.startSubscription(s, broker.ConsumeOptions{Owner: c.id, Prefetch: prefetch, NoAck: mode == ackAuto, Priority: prio})
}

func isNotFound(err error) bool {
	me, ok := err.(*meta.Error)
	return ok && me.Code == meta.NotFound
}

// startSubscription registers s before consuming, since the queue may deliver at once.
func (c *conn) startSubscription(s *subscription, o broker.ConsumeOptions) error {
	c.mu.Lock()
	c.subs[s.id] = s
	c.mu.Unlock()
	cid, err := s.q.Consume(o, s)
	if err != nil {
		c.mu.Lock()
		delete(c.subs, s.id)
		c.mu.Unlock()
		return err
	}
	s.cid.Store(uint64(cid))
	return nil
}

// unsubscribe handles UNSUBSCRIBE; with durable:true (or persistent:true) it also deletes a
// durable subscription's queue (RabbitMQ: maybe_delete_durable_sub_queue).
func (c *conn) unsubscribe(f *frame.Frame, _ *receipt) error {
	id, ok := f.Header.Contains(frame.Id)
	if !ok {
		if id, ok = f.Header.Contains(frame.Destination); !ok {
			return errorf("Missing destination or id", "UNSUBSCRIBE must include a 'destination' or 'id' header")
		}
	}
	if strings.HasPrefix(id, "/temp-queue/") {
		return errorf("Invalid id", "UNSUBSCRIBE 'id' may not start with /temp-queue/\n")
	}
	c.mu.Lock()
	s, ok := c.subs[id]
	if ok {
		delete(c.subs, id)
	}
	c.mu.Unlock()
	if !ok {
		return errorf("No subscription found", "UNSUBSCRIBE must refer to an existing subscription.\nSubscription to id='%s' not found.\n", id)
	}
	s.cancelled.Store(true)
	s.q.Cancel(queue.ConsumerID(s.cid.Load()))
	if s.durable && (boolHeader(f.Header, "durable", false) || boolHeader(f.Header, hdrPersistent, false)) {
		if err := c.check(auth.Configure, "queue", s.q.Name()); err != nil {
			return err
		}
		if _, err := c.vhost.DeleteQueue(s.q.Name(), false, false, c.id); err != nil {
			return err
		}
	}
	return nil
}

// ack handles ACK and NACK (rabbit_stomp_processor:ack_action). In client mode an ACK also
// settles every earlier delivery of the connection, as a cumulative basic.ack does; NACK
// requeues unless requeue:false.
func (c *conn) ack(f *frame.Frame, _ *receipt) error {
	hdr := frame.MessageId
	if c.version >= wire.V12 {
		hdr = frame.Id
	}
	v, ok := f.Header.Contains(hdr)
	if !ok {
		return errorf("Missing header", "%s must include the \"%s\" header\n", f.Command, hdr)
	}
	tag, ok := c.parseMessageID(v)
	if !ok {
		return errorf("Invalid header", "%s must include a valid \"%s\" header\n", f.Command, hdr)
	}
	c.mu.Lock()
	i := c.findUnacked(tag)
	if i < 0 {
		c.mu.Unlock()
		return errorf("Message not found", "unknown delivery tag %d\n", tag)
	}
	var taken []pendingAck
	if c.unacked[i].multi {
		taken = append(taken, c.unacked[:i+1]...)
		c.unacked = append(c.unacked[:0], c.unacked[i+1:]...)
	} else {
		taken = append(taken, c.unacked[i])
		c.unacked = append(c.unacked[:i], c.unacked[i+1:]...)
	}
	c.mu.Unlock()
	outcome := queue.Ack
	if f.Command == frame.NACK {
		outcome = queue.Requeue
		if !boolHeader(f.Header, "requeue", true) {
			outcome = queue.Discard
		}
	}
	settle(taken, outcome)
	return nil
}

// findUnacked returns the index of tag in c.unacked (tag order), or -1. c.mu held.
func (c *conn) findUnacked(tag uint64) int {
	lo, hi := 0, len(c.unacked)
	for lo < hi {
		m := (lo + hi) / 2
		if c.unacked[m].tag < tag {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(c.unacked) && c.unacked[lo].tag == tag {
		return lo
	}
	return -1
}

// parseMessageID takes the delivery tag out of a message-id this session issued:
// "T_<subscription>@@<session>@@<tag>" (rabbit_stomp_util:parse_message_id).
func (c *conn) parseMessageID(v string) (uint64, bool) {
	i := strings.LastIndex(v, "@@")
	if i < 0 {
		return 0, false
	}
	tag, err := strconv.ParseUint(v[i+2:], 10, 64)
	if err != nil {
		return 0, false
	}
	rest := v[:i]
	j := strings.LastIndex(rest, "@@")
	if j < 0 || rest[j+2:] != c.session {
		return 0, false
	}
	return tag, true
}
