package mqtt

import (
	"context"
	"errors"
	"runtime"
	"sort"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/queue"
)

func destQueue(name string) exchange.Dest { return exchange.Dest{Name: name} }

// consumer is a session's broker.Consumer on one queue: the session queue, or a shared
// subscription group's queue. Its methods run on the queue's goroutine and never block.
type consumer struct {
	x   *session
	q   *broker.Queue
	id  queue.ConsumerID
	sub *subscription // shared subscriptions: the subscription this consumer serves

	active    bool // guarded by x.mu
	cancelled bool // guarded by x.mu
	joined    bool // shared: counted as a member of its group (Server.joinShare); reader only
	// reserved counts credit taken by Allow and not yet passed to Deliver (queue goroutine only).
	reserved int
}

func (c *consumer) consume() error {
	c.x.mu.Lock()
	c.active = true
	c.x.mu.Unlock()
	id, err := c.q.Consume(broker.ConsumeOptions{}, c)
	if err != nil {
		c.x.mu.Lock()
		c.active = false
		c.x.mu.Unlock()
		return err
	}
	c.x.mu.Lock()
	c.id = id
	c.x.mu.Unlock()
	return nil
}

// cancel stops the consumer; its unacknowledged deliveries stay with the session until the
// connection closes or the client acknowledges them.
func (c *consumer) cancel() {
	c.x.mu.Lock()
	if c.cancelled || !c.active {
		c.cancelled = true
		c.x.mu.Unlock()
		return
	}
	c.cancelled = true
	id := c.id
	c.x.mu.Unlock()
	if id != 0 {
		c.q.Cancel(id)
	}
}

// Allow takes one unit of the connection's credit (the receive maximum) [MQTT-3.3.4-9].
func (c *consumer) Allow() bool {
	x := c.x
	for {
		n := x.used.Load()
		if n >= x.limit {
			// Store, then look again: release lowers used, then reads starved.
			x.starved.Store(true)
			if x.used.Load() < x.limit {
				continue
			}
			return false
		}
		if x.used.CompareAndSwap(n, n+1) {
			c.reserved++
			return true
		}
	}
}

// Deliver queues the delivery for the session's writer.
func (c *consumer) Deliver(q *broker.Queue, d queue.Delivery) {
	credit := c.reserved > 0
	if credit {
		c.reserved--
	}
	x := c.x
	x.mu.Lock()
	if x.closed || c.cancelled {
		x.mu.Unlock()
		if credit {
			x.release(1)
		}
		if q != nil {
			// Not from this goroutine: Settle may wait on this queue's inbox.
			go q.Settle([]queue.DeliveryID{d.ID}, queue.Requeue)
		}
		return
	}
	x.pending = append(x.pending, outDelivery{c: c, d: d, credit: credit})
	x.startWriterLocked()
	x.mu.Unlock()
}

// Cancelled: the queue was deleted (a clean session took the client id over, or an
// administrator deleted it).
func (c *consumer) Cancelled(*broker.Queue) {
	c.x.mu.Lock()
	c.cancelled = true
	c.x.mu.Unlock()
}

// release returns credit and wakes the queues that ran out of it.
func (x *session) release(n int32) {
	x.used.Add(-n)
	if x.starved.Swap(false) {
		x.mu.Lock()
		qs := make([]*broker.Queue, 0, 2)
		if x.main != nil {
			qs = append(qs, x.main.q)
		}
		for _, s := range x.subs {
			if s.shared != nil {
				qs = append(qs, s.shared.q)
			}
		}
		x.mu.Unlock()
		for _, q := range qs {
			q.Kick()
		}
	}
}

// startWriterLocked starts the session's writer goroutine if it is not running and the
// session is open. x.mu held. The writer runs only while there is something to write and
// exits when pending is empty, so an idle connection costs no writer goroutine (and no
// stack): with 10,000 idle MQTT connections that is 10,000 goroutines fewer.
func (x *session) startWriterLocked() {
	if x.writing || x.closed || !x.started {
		return
	}
	x.writing = true
	// Add happens under x.mu with closed false, so it happens before close's Wait.
	x.wg.Add(1)
	go x.writeLoop()
}

// writeLoop writes deliveries to the client until none are pending. It is the only goroutine
// that writes PUBLISH packets (at most one runs per session: x.writing), so a slow client
// holds up nothing but itself: the core keeps what credit does not let through.
func (x *session) writeLoop() {
	defer x.wg.Done()
	w := newOutWriter(x)
	defer w.release()
	var acks map[*broker.Queue][]queue.DeliveryID
	var spare []outDelivery // the previous batch, emptied: the next pending slice
	lingered := false
	for {
		x.mu.Lock()
		batch := x.pending
		if len(batch) == 0 && !x.closed && !lingered {
			// Nothing more yet. Under load the next delivery is usually a moment away: let
			// the goroutines that produce it run once before this one ends, rather than
			// starting a new writer (and growing a new pending slice) for it.
			x.mu.Unlock()
			lingered = true
			runtime.Gosched()
			continue
		}
		lingered = false
		if len(batch) == 0 || x.closed {
			// Closed: close requeues what is still pending once this goroutine is gone.
			if len(batch) == 0 && cap(batch) > idlePendingCap {
				x.pending = nil // an idle session keeps no large slice from its last burst
			}
			x.writing = false
			x.mu.Unlock()
			return
		}
		x.pending = spare
		x.mu.Unlock()
		x.recordIDs(batch)
		var freed int32
		for _, p := range batch {
			if p.c == nil {
				x.writeRetained(w, p)
				continue
			}
			if done := x.write(w, p); done {
				if acks == nil {
					acks = map[*broker.Queue][]queue.DeliveryID{}
				}
				acks[p.c.q] = append(acks[p.c.q], p.d.ID)
				if p.credit {
					freed++
				}
			}
		}
		// Written before settled: a QoS 0 delivery is done once it is on the wire.
		w.flush()
		clear(batch)
		spare = nil
		if cap(batch) <= maxSpareBatch {
			spare = batch[:0]
		}
		for q, ids := range acks {
			q.Settle(ids, queue.Ack)
			delete(acks, q)
		}
		if freed > 0 {
			x.release(freed)
		}
	}
}

// maxSpareBatch bounds the pending slice a writer hands back for reuse while it runs (credit
// bounds a batch); idlePendingCap the one a session keeps once its writer has ended.
const (
	maxSpareBatch  = 1024
	idlePendingCap = 16
)

// write sends one delivery (through w: it is on the wire after w's next flush). done reports
// that it needs no acknowledgement from the client (QoS 0, or nothing to send) and the caller
// settles it once written.
func (x *session) write(w *outWriter, p outDelivery) (done bool) {
	pk, ok := x.packetFor(p)
	if !ok {
		x.freePicked(p)
		return true
	}
	if pk.FixedHeader.Qos == 0 {
		x.freePicked(p)
		_ = w.add(pk)
		return true
	}
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		x.freePicked(p)
		go p.c.q.Settle([]queue.DeliveryID{p.d.ID}, queue.Requeue)
		if p.credit {
			x.release(1)
		}
		return false
	}
	ref := uint64(0)
	if p.c.sub == nil {
		ref = p.d.Ref
	}
	// Sent unacknowledged to a previous connection: again under the same identifier, so the
	// client knows it for the same message [MQTT-4.4.0-1] (packetids.go).
	id, again := p.pid, p.again
	if id == 0 {
		id, again = x.idForLocked(ref)
	}
	if again {
		pk.FixedHeader.Dup = true // [MQTT-3.3.1-1]
	}
	x.inflight[id] = outMsg{c: p.c, d: p.d.ID, qos: pk.FixedHeader.Qos, credit: p.credit, ref: ref}
	x.mu.Unlock()
	pk.PacketID = id
	if err := w.add(pk); errors.Is(err, packets.ErrPacketTooLarge) {
		// Larger than the client's maximum packet size: discarded as if delivered
		// [MQTT-3.1.2-25].
		x.mu.Lock()
		delete(x.inflight, id)
		x.mu.Unlock()
		return true
	}
	return false
}

// packetFor builds the PUBLISH for a delivery: the QoS is the lower of the publish QoS and
// the highest QoS of the matching subscriptions [MQTT-3.8.4-8]; MQTT 5 gets the identifiers of
// every matching subscription [MQTT-3.3.4-3]. ok is false when nothing should be sent (no
// subscription matches any more, or no-local).
func (x *session) packetFor(p outDelivery) (packets.Packet, bool) {
	m := p.d.Msg
	topic := x.topicOf(m.RoutingKey)
	in := inboundInfo(m)
	var qos byte
	var ids []int
	matched, rap := false, false
	x.mu.Lock()
	if p.c.sub != nil {
		s := p.c.sub
		matched, qos, rap = true, s.qos, false
		if s.id > 0 {
			ids = append(ids, s.id)
		}
	} else {
		for _, s := range x.subs {
			if s.shared != nil || !matchFilter(s.match, topic) {
				continue
			}
			if s.noLocal && in.origin == x.clientID {
				continue // [MQTT-3.8.3-3]
			}
			matched = true
			qos = max(qos, s.qos)
			rap = rap || s.rap
			if s.id > 0 {
				ids = append(ids, s.id)
			}
		}
	}
	x.mu.Unlock()
	if !matched {
		return packets.Packet{}, false
	}
	var left uint32
	if p.d.Expiry != 0 {
		ms := p.d.Expiry - time.Now().UnixMilli()
		if ms <= 0 {
			// It expired between the queue's hand-over and now: never delivered
			// [MQTT-3.3.2-5].
			return packets.Packet{}, false
		}
		left = uint32(min((ms+999)/1000, 0xFFFFFFFF))
	}
	qos = min(qos, in.qos)
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Dup: qos > 0 && p.d.Redelivered},
		TopicName:   topic,
		Payload:     m.Body,
	}
	if rap && in.retain {
		pk.FixedHeader.Retain = true // [MQTT-3.3.1-13]
	}
	if x.version == 5 {
		outboundProperties(&pk.Properties, m)
		if left > 0 {
			// The interval the publisher gave, less the time the message waited in the
			// core, queued or across a restart [MQTT-3.3.2-6].
			pk.Properties.MessageExpiryInterval = left
		}
		if len(ids) > 0 {
			sort.Ints(ids)
			pk.Properties.SubscriptionIdentifier = ids
		}
		if x.cl.Properties.Props.TopicAliasMaximum > 0 {
			alias, exists := x.cl.State.TopicAliases.Outbound.Set(topic)
			if alias > 0 {
				pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = alias, true
				if exists {
					pk.TopicName = ""
				}
			}
		}
	}
	return pk, true
}

// topicOf maps a delivery's routing key to its topic, remembering the last one: a subscriber
// mostly gets one topic, or a few, in a row. Writer goroutine only.
func (x *session) topicOf(key string) string {
	if key != x.lastKey { // the zero values agree: "" maps to ""
		x.lastKey, x.lastTopic = key, RoutingKeyToTopic(key)
	}
	return x.lastTopic
}

// acknowledged handles PUBACK, PUBREC and PUBCOMP for Parley's deliveries.
func (x *session) acknowledged(pk packets.Packet) {
	x.mu.Lock()
	m, ok := x.inflight[pk.PacketID]
	if !ok {
		x.mu.Unlock()
		if pk.FixedHeader.Type == packets.Pubrec {
			// [MQTT-4.3.3-?]: an unknown identifier still gets PUBREL, with 0x92 in MQTT 5.
			_ = x.cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1},
				PacketID: pk.PacketID, ReasonCode: packets.ErrPacketIdentifierNotFound.Code})
		}
		return
	}
	switch pk.FixedHeader.Type {
	case packets.Puback:
		delete(x.inflight, pk.PacketID)
		delete(x.recorded, m.ref)
		// Settled with the other acknowledgements of the same burst, before the reader waits
		// for more (flushAcks): a subscriber's PUBACKs come in bursts, and one Settle per
		// PUBACK woke the queue once per message.
		if m.c != nil {
			x.acks.add(m.c.q, m.d)
		}
		if m.credit {
			x.ackCredit++
		}
		x.mu.Unlock()
	case packets.Pubrec:
		if m.released {
			x.mu.Unlock()
		} else if pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
			// The client refused it: the flow ends here [MQTT-4.3.3-4] and the message is
			// not offered again.
			delete(x.inflight, pk.PacketID)
			delete(x.recorded, m.ref)
			x.mu.Unlock()
			if m.c != nil {
				m.c.q.Settle([]queue.DeliveryID{m.d}, queue.Discard)
			}
			if m.credit {
				x.release(1)
			}
			return
		} else {
			m.released = true
			x.inflight[pk.PacketID] = m
			delete(x.recorded, m.ref)
			x.mu.Unlock()
			// The client has the message: settle it now, so it is never sent again; the
			// identifier stays in flight until PUBCOMP, in the core for a persistent session.
			x.settleReceived(m, pk.PacketID)
		}
		_ = x.cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: pk.PacketID})
	case packets.Pubcomp:
		delete(x.inflight, pk.PacketID)
		x.mu.Unlock()
		if m.credit {
			x.release(1)
		}
		if m.released {
			x.setStateLater(packetIDKey(stateOutPrefix, pk.PacketID), nil)
		}
	default:
		x.mu.Unlock()
	}
}

// ackRuns collects acknowledged deliveries by queue, in order, for one Settle per queue.
type ackRuns []ackRun

type ackRun struct {
	q   *broker.Queue
	ids []queue.DeliveryID
}

func (a *ackRuns) add(q *broker.Queue, id queue.DeliveryID) {
	if n := len(*a); n > 0 && (*a)[n-1].q == q {
		(*a)[n-1].ids = append((*a)[n-1].ids, id)
		return
	}
	*a = append(*a, ackRun{q: q, ids: []queue.DeliveryID{id}})
}

// flushAcks settles the PUBACKs taken since the last flush and returns their credit. A burst
// of packets calls it before the reader waits for more bytes (conn.burst), and close before it gives
// the session's deliveries back, so an acknowledged delivery is never requeued.
func (x *session) flushAcks() {
	x.mu.Lock()
	runs, credit := x.acks, x.ackCredit
	if len(runs) == 0 && credit == 0 {
		x.mu.Unlock()
		return
	}
	x.acks, x.ackCredit = x.ackSpare[:0], 0
	x.ackSpare = nil
	x.mu.Unlock()
	for i := range runs {
		runs[i].q.Settle(runs[i].ids, queue.Ack) // the queue keeps ids
		runs[i] = ackRun{}
	}
	if credit > 0 {
		x.release(credit)
	}
	if cap(runs) > 0 && cap(runs) <= 8 {
		x.mu.Lock()
		x.ackSpare = runs[:0]
		x.mu.Unlock()
	}
}

// sendRetained queues, for the writer, the retained messages matching the subscriptions the
// last SUBSCRIBE asked them for.
func (x *session) sendRetained() {
	x.mu.Lock()
	subs := x.retainFor
	x.retainFor = nil
	x.mu.Unlock()
	for _, rf := range subs {
		sub, msgs := rf.sub, rf.msgs
		if len(msgs) == 0 {
			continue
		}
		topics := make([]string, 0, len(msgs))
		for t := range msgs {
			topics = append(topics, t)
		}
		sort.Strings(topics)
		x.mu.Lock()
		if x.closed {
			x.mu.Unlock()
			return
		}
		for _, t := range topics {
			x.pending = append(x.pending, outDelivery{retained: &retainedOut{sub: sub, topic: t, m: msgs[t]}})
		}
		x.startWriterLocked()
		x.mu.Unlock()
	}
}

// retainedFor is what a SUBSCRIBE found retained for one of its subscriptions, sent once its
// SUBACK is out.
type retainedFor struct {
	sub  *subscription
	msgs map[string]*message.Message
}

// retainedOut is a retained message sent to a new subscription: it comes from the metadata,
// not from a queue, so its acknowledgement settles nothing.
type retainedOut struct {
	sub   *subscription
	topic string
	m     *message.Message
}

// writeRetained sends a retained message with the retain flag set [MQTT-3.3.1-9].
func (x *session) writeRetained(w *outWriter, p outDelivery) {
	r := p.retained
	if r == nil {
		return
	}
	in := inboundInfo(r.m)
	left, live := retainedLeft(r.m, time.Now())
	if !live {
		return // expired while retained [MQTT-3.3.2-5]
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: min(in.qos, r.sub.qos), Retain: true},
		TopicName:   r.topic,
		Payload:     r.m.Body,
	}
	if x.version == 5 {
		outboundProperties(&pk.Properties, r.m)
		if left > 0 {
			pk.Properties.MessageExpiryInterval = left // [MQTT-3.3.2-6]
		}
		if r.sub.id > 0 {
			pk.Properties.SubscriptionIdentifier = []int{r.sub.id}
		}
	}
	if pk.FixedHeader.Qos > 0 {
		x.mu.Lock()
		if x.closed {
			x.mu.Unlock()
			return
		}
		id := x.nextPacketID()
		x.inflight[id] = outMsg{qos: pk.FixedHeader.Qos}
		x.mu.Unlock()
		pk.PacketID = id
	}
	if err := w.add(pk); errors.Is(err, packets.ErrPacketTooLarge) && pk.PacketID != 0 {
		x.mu.Lock()
		delete(x.inflight, pk.PacketID) // never sent: nothing will acknowledge it [MQTT-3.1.2-25]
		x.mu.Unlock()
	}
}

// settleReceived settles a QoS 2 delivery whose PUBREC came and records its identifier as
// awaiting PUBCOMP. For a persistent session's own queue both are committed, in that order,
// before PUBREL goes out: after a crash the message is not delivered again, and the next
// connection sends PUBREL for it [MQTT-4.4.0-1].
func (x *session) settleReceived(m outMsg, id uint16) {
	key := packetIDKey(stateOutPrefix, id)
	if m.c != nil && x.persistent && m.c.q == x.q {
		ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
		defer cancel()
		if err := x.q.SettleWithState(ctx, []queue.DeliveryID{m.d}, queue.Ack, key, []byte{}); err != nil {
			x.s.log.Warn("mqtt QoS 2 delivery settled but not recorded", zap.String("client_id", x.clientID), zap.Error(err))
		}
		return
	}
	if m.c != nil {
		m.c.q.Settle([]queue.DeliveryID{m.d}, queue.Ack)
	}
	x.setStateLater(key, []byte{})
}
