package queue

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"

	"github.com/parleymq/parley/broker/message"
)

// ConsumerID identifies a consumer; the broker assigns it and keeps it unique.
type ConsumerID uint64

// DeliveryID identifies one delivery of one message. The queue assigns them, strictly
// increasing, unique within the queue; 0 is never used.
type DeliveryID uint64

// ConsumerSpec is what basic.consume tells the queue about a consumer.
type ConsumerSpec struct {
	ID        ConsumerID
	Prefetch  uint32 // basic.qos prefetch-count for this consumer; 0 = unlimited
	NoAck     bool
	Exclusive bool
	Priority  int32 // x-priority consumer argument
}

// Delivery is one message handed out, to a consumer or to basic.get (Consumer 0).
type Delivery struct {
	ID          DeliveryID
	Consumer    ConsumerID       // 0 for basic.get
	Msg         *message.Message // nil when the queue keeps only a stub: the driver loads it by Ref
	Ref         uint64           // the driver's reference (PublishRef); 0 for none
	Redelivered bool
	// Expiry is when the message expires, Unix ms (the lower of x-message-ttl and its
	// expiration property, counted from when it was first enqueued); 0 for never. An adapter
	// whose protocol tells the receiver the time left (MQTT 5's message expiry interval,
	// [MQTT-3.3.2-6]) counts it down from here.
	Expiry int64
}

// Reason is why a message was dead-lettered. String gives the name RabbitMQ writes in the
// x-death header (https://www.rabbitmq.com/docs/dlx#effects).
type Reason uint8

const (
	Rejected Reason = iota // basic.reject or basic.nack with requeue=false
	Expired                // its TTL ran out
	MaxLen                 // x-max-length / x-max-length-bytes overflow
)

func (r Reason) String() string {
	switch r {
	case Expired:
		return "expired"
	case MaxLen:
		return "maxlen"
	default:
		return "rejected"
	}
}

// DeadLetter is a message leaving the queue to be republished to its dead-letter exchange;
// DeadLetterMessage builds what is republished.
type DeadLetter struct {
	Msg    *message.Message // nil for a stub: the driver loads it by Ref
	Ref    uint64
	Reason Reason
}

// Output collects the effects of commands. The driver carries them out, then calls Reset.
// Dead letters appear only when the queue has a dead-letter exchange.
type Output struct {
	Deliveries  []Delivery
	DeadLetters []DeadLetter
	// Removed lists the references (see PublishRef) of messages that left the queue for good:
	// acknowledged, discarded or dead-lettered, expired, dropped by a length limit, purged,
	// delivered to a no-ack consumer or taken by a no-ack basic.get, or refused at publish.
	// A durable queue logs them so its log can forget those messages. Requeues are not removals.
	Removed []uint64
	// More reports that Drain stopped at MaxRoundBytes with messages still ready: the driver
	// carries out this round, then calls Drain again.
	More bool
}

// MaxRoundBytes bounds what one Drain hands out (body bytes plus roundOverhead per delivery).
// Consumers' allow functions look at their connection's unwritten output, which grows only
// when the driver carries the round out, after every allow of the round was asked: an
// unbounded round handed a whole backlog to one consumer connection (146 MB of unwritten
// output in the 1p/1c transient benchmark, against its 4 MB high-water mark). RabbitMQ's
// queue stops at 200 unsent messages per channel (rabbit_queue_consumers' unsent limit).
const MaxRoundBytes = 1 << 20

// roundOverhead is what one delivery counts besides its body: the frames around it.
const roundOverhead = 64

// Reset empties the output, keeping its buffers, and drops its references to messages.
func (o *Output) Reset() {
	clear(o.Deliveries)
	o.Deliveries = o.Deliveries[:0]
	clear(o.DeadLetters)
	o.DeadLetters = o.DeadLetters[:0]
	o.Removed = o.Removed[:0]
	o.More = false
}

// Outcome is how a delivery is settled.
type Outcome uint8

const (
	Ack     Outcome = iota // basic.ack: done with
	Requeue                // basic.reject/nack requeue=true, or the channel closed
	Discard                // basic.reject/nack requeue=false: dead-lettered (reason rejected) or dropped
)

var (
	// ErrExclusiveConsumer: the queue has an exclusive consumer, or an exclusive consumer
	// asked for a queue that already has consumers. RabbitMQ answers 403 ACCESS_REFUSED
	// "queue 'q' in vhost '/' in exclusive use".
	ErrExclusiveConsumer = errors.New("queue in exclusive use")
	// ErrDuplicateConsumer: a consumer with this ID is already registered.
	ErrDuplicateConsumer = errors.New("consumer already registered")
	// ErrUnknownDelivery: a delivery id that is not outstanding (never delivered, already
	// settled, or delivered with no-ack). RabbitMQ closes the channel with 406
	// "PRECONDITION_FAILED - unknown delivery tag N".
	ErrUnknownDelivery = errors.New("unknown delivery")
)

// noExpiry is the expiry of a message without a TTL.
const noExpiry = math.MaxInt64

// entry is a message in the queue, ready or outstanding. It is stored by value.
type entry struct {
	msg       *message.Message // nil for a stub: the body is the driver's, under ref
	seq       uint64           // publish order: where a requeued message goes back
	expiry    int64            // Unix ms at which the message expires; noExpiry for none
	ref       uint64           // the driver's reference (PublishRef); 0 for none
	size      uint32           // body size, what x-max-length-bytes counts
	prio      uint8            // clamped priority level
	delivered bool             // handed out before: the next delivery is a redelivery
}

// expiryMs is e's expiry as Delivery.Expiry gives it: 0 for never.
func (e *entry) expiryMs() int64 {
	if e.expiry == noExpiry {
		return 0
	}
	return e.expiry
}

// Stub is what the queue needs to know of a message whose body it does not hold: a durable
// queue's driver keeps the bodies of a deep queue in its log and loads them when delivered.
type Stub struct {
	Size     uint32
	Priority uint8
	HasPrio  bool  // the message has a priority property
	TTL      int64 // the expiration property in ms; -1 for none
}

// StubOf is m's stub.
func StubOf(m *message.Message) Stub {
	s := Stub{Size: uint32(m.Size()), TTL: -1}
	if m.Properties.Flags&message.FlagPriority != 0 {
		s.Priority, s.HasPrio = m.Properties.Priority, true
	}
	if m.Properties.Flags&message.FlagExpiration != 0 {
		// The adapter refuses malformed expiration strings at publish, so one here is ignored.
		if v, err := strconv.ParseInt(m.Properties.Expiration, 10, 64); err == nil && v >= 0 {
			s.TTL = v
		}
	}
	return s
}

// pending is an outstanding delivery, awaiting settlement.
type pending struct {
	id       DeliveryID
	c        *consumer // nil for basic.get
	e        entry
	done     bool // settled; a tombstone until it reaches the front of the ring
	settling bool // marked during Settle's validation pass
}

type consumer struct {
	spec    ConsumerSpec
	unacked uint32
	skip    uint64 // the delivery round in which allow() refused this consumer
}

func (c *consumer) hasCredit() bool {
	return c.spec.NoAck || c.spec.Prefetch == 0 || c.unacked < c.spec.Prefetch
}

// group is the consumers of one x-priority, served round-robin.
type group struct {
	prio    int32
	members []*consumer
	next    int
}

// Queue is the state of one queue. It is a pure state machine: every method is a command or
// a query, time arrives as an argument, effects are appended to an Output. It is not safe for
// concurrent use; the driver serialises commands.
type Queue struct {
	cfg Config

	// Ready messages: one FIFO per priority level (index = level), and a bitmap of the
	// non-empty levels so the highest is found without scanning 256 rings.
	levels   []ring[entry]
	nonEmpty [4]uint64
	ready    int
	bytes    int64
	withTTL  int    // ready messages that have an expiry
	nextSeq  uint64 // seq of the next published message
	sparing  bool   // Publish is offering a message whose TTL is 0 to consumers: spare it
	spareSeq uint64 // that message's seq

	// Outstanding deliveries, in delivery order (so sorted by id): acks mostly arrive in that
	// order, so the front is the usual hit and binary search finds the rest, with no map.
	// Settled entries out of order stay as tombstones until they reach the front or the ring
	// is compacted.
	pend       ring[pending]
	unacked    int
	tombstones int
	nextID     DeliveryID

	consumers []*consumer // in registration order: single-active-consumer takes the first
	groups    []group     // by x-priority, highest first
	round     uint64      // delivery step counter, for consumer.skip
	gate      func(ConsumerID) bool
	// roundLeft is what the Drain running may still hand out (MaxRoundBytes); -1 outside
	// Drain, where delivery steps are not bounded (Publish's, Settle's: their own credit is).
	roundLeft int64

	// bodyWindow: a message with a reference published while the ready messages hold this many
	// body bytes or more is kept as a stub (see SetBodyWindow). Negative: keep every body.
	bodyWindow int64

	// Scratch buffers reused by Settle.
	scratchIdx []int
	scratchReq []entry
}

// New returns an empty queue.
func New(cfg Config) *Queue {
	return &Queue{cfg: cfg, levels: make([]ring[entry], int(cfg.MaxPriority)+1), nextID: 1, bodyWindow: -1, roundLeft: -1}
}

// SetBodyWindow bounds the memory a deep queue spends on bodies. A message published with a
// reference (one the driver can load back, from a durable queue's log) while the ready
// messages already hold n body bytes or more is kept as a stub: deliveries and dead letters of
// it carry Msg nil and its Ref, and the driver loads the body. So the head of the queue, which
// consumers take next, stays in memory, and a backlog behind it costs a few dozen bytes a
// message. Negative n (the default) keeps every body.
func (q *Queue) SetBodyWindow(n int64) { q.bodyWindow = n }

// Config returns the queue's configuration.
func (q *Queue) Config() Config { return q.cfg }

// SetConfig applies a changed configuration (a policy applied to the queue). As in
// rabbit_amqqueue_process, a new TTL applies to messages published from now on, and a
// lowered length limit drops the excess at once with drop-head. x-max-priority cannot change
// on a live queue; the old one is kept.
func (q *Queue) SetConfig(now int64, cfg Config, out *Output) {
	cfg.MaxPriority = q.cfg.MaxPriority
	q.cfg = cfg
	if cfg.Overflow == DropHead {
		for q.ready > 0 && q.overLimit() {
			q.deadLetter(out, q.popReady(), MaxLen)
		}
	}
	q.deliver(now, q.gate, out)
}

// Len is the number of ready messages (not counting unacknowledged ones), as in
// queue.declare-ok's message-count.
func (q *Queue) Len() int { return q.ready }

// Bytes is the body size of the ready messages, the figure x-max-length-bytes limits.
func (q *Queue) Bytes() int64 { return q.bytes }

// Unacked is the number of outstanding deliveries.
func (q *Queue) Unacked() int { return q.unacked }

// ConsumerCount is the number of registered consumers.
func (q *Queue) ConsumerCount() int { return len(q.consumers) }

// Publish enqueues m. It returns false when the queue refuses the message because of its
// reject-publish or reject-publish-dlx overflow (the publisher then gets basic.nack); with
// drop-head the oldest ready messages are dropped instead, dead-lettered with reason maxlen
// when the queue has a dead-letter exchange.
//
// RabbitMQ hands a message to a consumer that can take it before counting it against the
// length limit (rabbit_amqqueue_process:deliver_or_enqueue). The driver batches publishes
// and runs Drain once per batch, so when a limit would be crossed Publish first runs the
// delivery step itself, with the gate the driver last gave to Drain; the limit then sees the
// same ready count as RabbitMQ's would.
func (q *Queue) Publish(now int64, m *message.Message, out *Output) bool {
	return q.PublishRef(now, m, 0, out)
}

// PublishRef is Publish with the driver's reference for the message, non-zero: a durable
// queue's log index of the message's enqueue entry. The reference comes back in
// Output.Removed when the message leaves the queue for good (also when Publish refuses it).
func (q *Queue) PublishRef(now int64, m *message.Message, ref uint64, out *Output) bool {
	limited := q.cfg.MaxLength >= 0 || q.cfg.MaxLengthBytes >= 0
	size := int64(m.Size())
	if limited && q.cfg.Overflow != DropHead && q.wouldOverflow(size) {
		q.deliver(now, q.gate, out)
		if q.wouldOverflow(size) {
			e := entry{msg: m, ref: ref, size: uint32(size)}
			if q.cfg.Overflow == RejectPublishDLX {
				q.deadLetter(out, e, MaxLen)
			} else {
				q.gone(out, e)
			}
			return false
		}
	}
	e := q.newEntry(now, StubOf(m), ref)
	if ref == 0 || q.bodyWindow < 0 || q.bytes < q.bodyWindow {
		e.msg = m
	}
	q.pushReady(e)
	if e.expiry <= now {
		q.offerNow(now, e, out)
	}
	if limited && q.cfg.Overflow == DropHead && q.overLimit() {
		q.deliver(now, q.gate, out)
		for q.ready > 0 && q.overLimit() {
			q.deadLetter(out, q.popReady(), MaxLen)
		}
	}
	return true
}

// Recover puts back a message found in a durable queue's log after a restart: at the tail,
// with its reference, its TTL counted from enqueuedAt, and marked redelivered (it may have been
// delivered before the restart, and AMQP allows the flag on a message that was not). It never
// refuses and never delivers by itself: the driver runs Drain.
func (q *Queue) Recover(enqueuedAt int64, m *message.Message, ref uint64) {
	e := q.newEntry(enqueuedAt, StubOf(m), ref)
	e.msg, e.delivered = m, true
	q.pushReady(e)
}

// RecoverStub is Recover for a message the driver keeps the body of (ref non-zero): the queue
// holds only its stub and deliveries of it carry Msg nil.
func (q *Queue) RecoverStub(enqueuedAt int64, s Stub, ref uint64) {
	e := q.newEntry(enqueuedAt, s, ref)
	e.delivered = true
	q.pushReady(e)
}

// newEntry is the entry of a message published (or first enqueued) at now, without its body.
func (q *Queue) newEntry(now int64, s Stub, ref uint64) entry {
	e := entry{seq: q.nextSeq, expiry: q.expiryOf(now, s.TTL), ref: ref, size: s.Size}
	q.nextSeq++
	if q.cfg.MaxPriority > 0 && s.HasPrio {
		e.prio = min(s.Priority, q.cfg.MaxPriority)
	}
	return e
}

// wouldOverflow is rabbit_amqqueue_process:will_overflow: would one more message of size
// body bytes take the ready messages past a limit?
func (q *Queue) wouldOverflow(size int64) bool {
	return (q.cfg.MaxLength >= 0 && int64(q.ready)+1 > q.cfg.MaxLength) ||
		(q.cfg.MaxLengthBytes >= 0 && q.bytes+size > q.cfg.MaxLengthBytes)
}

func (q *Queue) overLimit() bool {
	return (q.cfg.MaxLength >= 0 && int64(q.ready) > q.cfg.MaxLength) ||
		(q.cfg.MaxLengthBytes >= 0 && q.bytes > q.cfg.MaxLengthBytes)
}

// expiryOf is when a message published now expires: the lower of x-message-ttl and the
// message's expiration property, msgTTL (-1 for none)
// (https://www.rabbitmq.com/docs/ttl#per-message-ttl-in-publishers).
func (q *Queue) expiryOf(now int64, msgTTL int64) int64 {
	ttl := q.cfg.MessageTTL
	if msgTTL >= 0 && (ttl < 0 || msgTTL < ttl) {
		ttl = msgTTL
	}
	if ttl < 0 || ttl > noExpiry-now {
		return noExpiry
	}
	return now + ttl
}

func (q *Queue) pushReady(e entry) {
	r := &q.levels[e.prio]
	if r.len() == 0 {
		q.nonEmpty[e.prio>>6] |= 1 << (e.prio & 63)
	}
	r.pushBack(e)
	q.countIn(e)
}

func (q *Queue) countIn(e entry) {
	q.ready++
	q.bytes += int64(e.size)
	if e.expiry != noExpiry {
		q.withTTL++
	}
}

// top returns the highest non-empty priority level, or -1.
func (q *Queue) top() int {
	for w := len(q.nonEmpty) - 1; w >= 0; w-- {
		if b := q.nonEmpty[w]; b != 0 {
			return w<<6 + 63 - bits.LeadingZeros64(b)
		}
	}
	return -1
}

// popLevel removes the front message of level l, which must not be empty.
func (q *Queue) popLevel(l int) entry {
	r := &q.levels[l]
	e := r.popFront()
	if r.len() == 0 {
		q.nonEmpty[l>>6] &^= 1 << (l & 63)
	}
	q.ready--
	q.bytes -= int64(e.size)
	if e.expiry != noExpiry {
		q.withTTL--
	}
	return e
}

// popReady removes the message that would be delivered next: the head of the highest
// priority level. RabbitMQ's priority queue drops from there too (rabbit_priority_queue:drop).
func (q *Queue) popReady() entry { return q.popLevel(q.top()) }

// deadLetter removes e for good, dead-lettering it when the queue has a dead-letter exchange.
func (q *Queue) deadLetter(out *Output, e entry, r Reason) {
	if q.cfg.HasDeadLetterExchange {
		out.DeadLetters = append(out.DeadLetters, DeadLetter{Msg: e.msg, Ref: e.ref, Reason: r})
	}
	q.gone(out, e)
}

// gone records that e left the queue for good.
func (q *Queue) gone(out *Output, e entry) {
	if e.ref != 0 {
		out.Removed = append(out.Removed, e.ref)
	}
}

// expireHeads removes expired messages from the head of every priority level, as RabbitMQ
// does: a message behind the head is not examined until it reaches the head
// (https://www.rabbitmq.com/docs/ttl#per-message-ttl-caveats).
func (q *Queue) expireHeads(now int64, out *Output) {
	for w := range q.nonEmpty {
		for b := q.nonEmpty[w]; b != 0; b &= b - 1 {
			l := w<<6 + bits.TrailingZeros64(b)
			r := &q.levels[l]
			for r.len() > 0 {
				e := r.front()
				if e.expiry > now || (q.sparing && e.seq == q.spareSeq) {
					break
				}
				q.deadLetter(out, q.popLevel(l), Expired)
			}
		}
	}
}

// offerNow handles a message published with a TTL of 0 (x-message-ttl 0, or expiration
// "0"): RabbitMQ delivers it if a consumer can take it right away, and otherwise it expires
// (https://www.rabbitmq.com/docs/ttl#per-queue-message-ttl). RabbitMQ never has ready
// messages that a consumer could take, but a driver that batches publishes before one Drain
// does, so Publish runs the delivery step at once, sparing the new message from expiry. If
// it is then at the head and still there, it expires; if messages no consumer could take are
// ahead of it, it waits, like any expired message, until it reaches the head
// (rabbit_amqqueue_process:deliver_or_enqueue).
func (q *Queue) offerNow(now int64, e entry, out *Output) {
	q.sparing, q.spareSeq = true, e.seq
	q.deliver(now, q.gate, out)
	q.sparing = false
	q.expireHeads(now, out)
}

// SetGate sets the allow function Publish uses when it must run the delivery step itself
// (a TTL of 0, or a length limit reached); Drain also sets it to the one it is given. See
// Drain for what allow means.
func (q *Queue) SetGate(allow func(ConsumerID) bool) { q.gate = allow }

// Drain is the delivery step. It expires TTL'd messages at the head (dead-lettered with
// reason expired), then hands ready messages to consumers with credit: round-robin among the
// consumers of the highest x-priority that can take one
// (https://www.rabbitmq.com/docs/consumer-priority), or only to the first registered
// consumer with x-single-active-consumer. allow, when not nil, is consulted right before each
// delivery to a consumer that has queue-level credit; a true answer commits the queue to that
// delivery, a false one skips the consumer until the next Drain. One Drain hands out at most
// MaxRoundBytes; Output.More then asks for another.
func (q *Queue) Drain(now int64, allow func(ConsumerID) bool, out *Output) {
	q.gate = allow
	q.roundLeft = MaxRoundBytes
	q.deliver(now, allow, out)
	q.roundLeft = -1
}

func (q *Queue) deliver(now int64, allow func(ConsumerID) bool, out *Output) {
	if q.withTTL > 0 {
		q.expireHeads(now, out)
	}
	if len(q.consumers) == 0 {
		return
	}
	q.round++
	for q.ready > 0 {
		c := q.pick(allow)
		if c == nil {
			return
		}
		e := q.popReady()
		q.hand(e, c, out)
		if q.withTTL > 0 {
			q.expireHeads(now, out)
		}
		if q.roundLeft >= 0 {
			if q.roundLeft -= int64(e.size) + roundOverhead; q.roundLeft <= 0 && q.ready > 0 {
				out.More = true
				return
			}
		}
	}
}

// pick chooses the consumer for the next message, or nil when none can take it now.
func (q *Queue) pick(allow func(ConsumerID) bool) *consumer {
	if q.cfg.SingleActiveConsumer {
		c := q.consumers[0]
		if c.skip == q.round || !c.hasCredit() {
			return nil
		}
		if allow != nil && !allow(c.spec.ID) {
			c.skip = q.round
			return nil
		}
		return c
	}
	for gi := range q.groups {
		g := &q.groups[gi]
		n := len(g.members)
		for i := 0; i < n; i++ {
			idx := g.next + i
			if idx >= n {
				idx -= n
			}
			c := g.members[idx]
			if c.skip == q.round || !c.hasCredit() {
				continue
			}
			if allow != nil && !allow(c.spec.ID) {
				c.skip = q.round
				continue
			}
			g.next = idx + 1
			if g.next == n {
				g.next = 0
			}
			return c
		}
	}
	return nil
}

// hand delivers e to c (nil: basic.get) and returns the delivery.
func (q *Queue) hand(e entry, c *consumer, out *Output) Delivery {
	d := Delivery{ID: q.nextID, Msg: e.msg, Ref: e.ref, Redelivered: e.delivered, Expiry: e.expiryMs()}
	q.nextID++
	noAck := true
	if c != nil {
		d.Consumer = c.spec.ID
		noAck = c.spec.NoAck
		out.Deliveries = append(out.Deliveries, d)
	}
	if !noAck {
		q.track(e, c, d.ID)
	} else {
		q.gone(out, e)
	}
	return d
}

func (q *Queue) track(e entry, c *consumer, id DeliveryID) {
	e.delivered = true
	q.pend.pushBack(pending{id: id, c: c, e: e})
	q.unacked++
	if c != nil {
		c.unacked++
	}
}

// Get is basic.get: it expires messages at the head, then takes the next ready message.
// With noAck false the delivery is outstanding until settled.
func (q *Queue) Get(now int64, noAck bool, out *Output) (Delivery, bool) {
	if q.withTTL > 0 {
		q.expireHeads(now, out)
	}
	if q.ready == 0 {
		return Delivery{}, false
	}
	e := q.popReady()
	d := Delivery{ID: q.nextID, Msg: e.msg, Ref: e.ref, Redelivered: e.delivered, Expiry: e.expiryMs()}
	q.nextID++
	if !noAck {
		q.track(e, nil, d.ID)
	} else {
		q.gone(out, e)
	}
	return d, true
}

// Purge is queue.purge: it removes the ready messages, not the unacknowledged ones, without
// dead-lettering them, and returns how many it removed.
func (q *Queue) Purge(out *Output) int {
	n := q.ready
	for l := range q.levels {
		r := &q.levels[l]
		for i := 0; i < r.len(); i++ {
			q.gone(out, *r.at(i))
		}
		r.clear()
	}
	q.nonEmpty = [4]uint64{}
	q.ready, q.bytes, q.withTTL = 0, 0, 0
	return n
}

// NextExpiry is the earliest time a message at the head of the queue expires, for the
// driver's timer: Drain at that time removes it.
func (q *Queue) NextExpiry() (at int64, ok bool) {
	if q.withTTL == 0 {
		return 0, false
	}
	at = noExpiry
	for w := range q.nonEmpty {
		for b := q.nonEmpty[w]; b != 0; b &= b - 1 {
			if e := q.levels[w<<6+bits.TrailingZeros64(b)].front(); e.expiry < at {
				at = e.expiry
			}
		}
	}
	return at, at != noExpiry
}

// AddConsumer registers a consumer (basic.consume). Exclusivity follows RabbitMQ: an
// exclusive consumer needs a queue without consumers, and keeps others away.
func (q *Queue) AddConsumer(c ConsumerSpec) error {
	for _, o := range q.consumers {
		if o.spec.ID == c.ID {
			return fmt.Errorf("queue %q: consumer %d: %w", q.cfg.Name, c.ID, ErrDuplicateConsumer)
		}
	}
	if len(q.consumers) > 0 && (c.Exclusive || q.consumers[0].spec.Exclusive) {
		return fmt.Errorf("queue %q: %w", q.cfg.Name, ErrExclusiveConsumer)
	}
	nc := &consumer{spec: c}
	q.consumers = append(q.consumers, nc)
	gi, found := slices.BinarySearchFunc(q.groups, c.Priority, func(g group, p int32) int {
		switch {
		case g.prio > p:
			return -1
		case g.prio < p:
			return 1
		}
		return 0
	})
	if !found {
		q.groups = slices.Insert(q.groups, gi, group{prio: c.Priority})
	}
	g := &q.groups[gi]
	// A newcomer joins just before the next consumer in turn, so it waits a full round like
	// every other member (RabbitMQ appends to the tail of the round-robin queue).
	g.members = slices.Insert(g.members, g.next, nc)
	g.next++
	if g.next == len(g.members) {
		g.next = 0
	}
	return nil
}

// RemoveConsumer is basic.cancel (or the consumer's channel closing): no more deliveries go
// to it. Its outstanding deliveries stay outstanding; AMQP lets them be acknowledged until
// the channel closes, and the driver requeues them then.
func (q *Queue) RemoveConsumer(id ConsumerID) {
	i := slices.IndexFunc(q.consumers, func(c *consumer) bool { return c.spec.ID == id })
	if i < 0 {
		return
	}
	c := q.consumers[i]
	q.consumers = slices.Delete(q.consumers, i, i+1)
	for gi := range q.groups {
		g := &q.groups[gi]
		if g.prio != c.spec.Priority {
			continue
		}
		j := slices.Index(g.members, c)
		g.members = slices.Delete(g.members, j, j+1)
		if j < g.next {
			g.next--
		}
		if g.next >= len(g.members) {
			g.next = 0
		}
		if len(g.members) == 0 {
			q.groups = slices.Delete(q.groups, gi, gi+1)
		}
		return
	}
}

// findPending returns the ring index of the outstanding delivery id, or -1.
func (q *Queue) findPending(id DeliveryID) int {
	n := q.pend.len()
	if n == 0 {
		return -1
	}
	// Fast path: acks usually arrive in delivery order.
	i := 0
	if q.pend.front().id != id {
		lo, hi := 0, n
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if q.pend.at(m).id < id {
				lo = m + 1
			} else {
				hi = m
			}
		}
		i = lo
	}
	if i >= n {
		return -1
	}
	if p := q.pend.at(i); p.id != id || p.done {
		return -1
	}
	return i
}

// Settle settles outstanding deliveries: Ack drops them; Requeue puts each message back in
// its original place among the ready messages, marked redelivered (RabbitMQ since 2.7);
// Discard dead-letters them with reason rejected when the queue has a dead-letter exchange,
// else drops them. An id that is not outstanding (or appears twice) fails the whole call
// with ErrUnknownDelivery and changes nothing.
func (q *Queue) Settle(now int64, ids []DeliveryID, o Outcome, out *Output) error {
	idx := q.scratchIdx[:0]
	for _, id := range ids {
		i := q.findPending(id)
		if i < 0 || q.pend.at(i).settling {
			for _, j := range idx {
				q.pend.at(j).settling = false
			}
			q.scratchIdx = idx
			return fmt.Errorf("queue %q: delivery %d: %w", q.cfg.Name, id, ErrUnknownDelivery)
		}
		q.pend.at(i).settling = true
		idx = append(idx, i)
	}
	req := q.scratchReq[:0]
	for _, i := range idx {
		p := q.pend.at(i)
		p.settling, p.done = false, true
		if p.c != nil {
			p.c.unacked--
		}
		q.unacked--
		q.tombstones++
		switch o {
		case Requeue:
			req = append(req, p.e)
		case Discard:
			q.deadLetter(out, p.e, Rejected)
		default:
			q.gone(out, p.e)
		}
		p.e = entry{}
	}
	for q.pend.len() > 0 && q.pend.front().done {
		q.pend.popFront()
		q.tombstones--
	}
	if q.tombstones > 64 && q.tombstones > q.unacked {
		q.compact()
	}
	if len(req) > 0 {
		q.requeue(req)
		// rabbit_amqqueue_process:requeue_and_run applies drop-head after a requeue too.
		if q.cfg.Overflow == DropHead {
			for q.ready > 0 && q.overLimit() {
				q.deadLetter(out, q.popReady(), MaxLen)
			}
		}
	}
	clear(req)
	q.scratchReq, q.scratchIdx = req[:0], idx[:0]
	return nil
}

// compact removes the tombstones from the outstanding ring, keeping order.
func (q *Queue) compact() {
	n, w := q.pend.len(), 0
	for r := 0; r < n; r++ {
		if p := q.pend.at(r); !p.done {
			if w != r {
				*q.pend.at(w) = *p
			}
			w++
		}
	}
	for q.pend.len() > w {
		q.pend.popBack()
	}
	q.tombstones = 0
}

// requeue puts messages back among the ready ones by publish order. Processing them from
// the newest down makes the usual case (all older than every ready message) a push-front.
func (q *Queue) requeue(req []entry) {
	slices.SortFunc(req, func(a, b entry) int {
		switch {
		case a.seq > b.seq:
			return -1
		case a.seq < b.seq:
			return 1
		}
		return 0
	})
	for _, e := range req {
		r := &q.levels[e.prio]
		if r.len() == 0 {
			q.nonEmpty[e.prio>>6] |= 1 << (e.prio & 63)
		}
		if r.len() == 0 || e.seq < r.front().seq {
			r.pushFront(e)
		} else {
			lo, hi := 0, r.len()
			for lo < hi {
				m := int(uint(lo+hi) >> 1)
				if r.at(m).seq < e.seq {
					lo = m + 1
				} else {
					hi = m
				}
			}
			r.insert(lo, e)
		}
		q.countIn(e)
	}
}
