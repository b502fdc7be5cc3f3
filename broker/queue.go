package broker

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/cluster"
)

// Consumer receives a queue's deliveries. Its methods are called from the queue's goroutine and
// must not block: an adapter appends to its connection's write buffer and wakes its writer.
type Consumer interface {
	// Deliver hands over one delivery. q is nil for a direct reply-to message, which is never
	// acknowledged.
	Deliver(q *Queue, d queue.Delivery)
	// Allow reserves credit for one delivery beyond the queue's own per-consumer prefetch: the
	// AMQP channel-wide prefetch that spans queues, and channel.flow. False skips this consumer
	// until someone calls Queue.Kick.
	Allow() bool
	// Cancelled reports that the queue is gone (deleted): the consumer will get nothing more.
	Cancelled(q *Queue)
}

// ConsumeOptions are basic.consume's settings.
type ConsumeOptions struct {
	Owner     uint64 // the connection, for exclusive queues
	Prefetch  uint32 // per-consumer unacked limit; 0 = none
	NoAck     bool
	Exclusive bool
	Priority  int32 // x-priority
}

type cmdKind uint8

const (
	cmdPublish cmdKind = iota
	cmdSettle
	cmdSettleOne // cmdSettle of the one delivery id: no slice to allocate per acknowledgement
	cmdConsume
	cmdCancel
	cmdGet
	cmdPurge
	cmdDelete
	cmdCount // the ready count once every command before it has run (Queue.CountedLen)
)

// command is one entry of a queue's inbox.
type command struct {
	kind     cmdKind
	msg      *message.Message
	confirm  *confirmTracker
	ids      []queue.DeliveryID
	id       queue.DeliveryID // cmdSettleOne's
	outcome  queue.Outcome
	spec     queue.ConsumerSpec
	consumer Consumer
	noAck    bool
	silent   bool // cmdDelete at shutdown: do not cancel consumers
	reply    chan result
	// cmdSettle of SettleWithState: the state record written after the settlement's removal
	// entry, and reply answered once it is committed.
	state *stateChange
}

type stateChange struct {
	key string
	val []byte
}

type result struct {
	n   int
	d   queue.Delivery
	ok  bool
	err error
}

// Queue is a running queue: its state machine and the goroutine that owns it.
type Queue struct {
	v   *VHost
	def meta.QueueDef
	cfg queue.Config

	inbox *inbox
	done  chan struct{} // closed when the goroutine has stopped

	// Counters published by the goroutine after each batch, for declare-ok and delete checks.
	ready     atomic.Int64
	consumers atomic.Int64
	delivered atomic.Int64 // deliveries handed to consumers, ever (Delivered)
	// creditBound: the last delivery round left messages ready only because every consumer was
	// out of credit; outputRefused: a consumer refused a delivery of this round for its
	// connection's output (flowgate.go; outputRefused is the queue goroutine's).
	creditBound   atomic.Bool
	outputRefused bool
	lastUsed      atomic.Int64 // unix ms, for x-expires
	expires       atomic.Int64 // x-expires in ms, or what SetExpires set; 0 = never

	// Durable queues only: the queue's raft group and its state machine. A remote queue's
	// group is this node's parked replica.
	group *cluster.Group
	log   *queueLog
	// part is the partition group the queue is packed into (group is its group), nil for a
	// queue with a group of its own (partition.go).
	part *partition
	// opening is the future of the queue's open entry in its partition until it is applied
	// (joinPartitionLocked); b.mu.
	opening *cluster.Future

	// remote is set when the queue's process runs on another node (remote.go): every
	// operation is forwarded.
	remote *remoteQueue

	// A transient queue's state records (SetState); a durable queue's are in its log.
	stateMu  sync.Mutex
	memState map[string][]byte

	// Owned by the goroutine.
	waiting   []*pendingPublish           // durable: publishes in order, waiting for the log
	pendSlab  []pendingPublish            // durable: where the next pendingPublish records come from
	rmEntry   cluster.LazyEntry           // durable: the last removal entry proposed (logRemoved)
	rmScratch []byte                      // durable: logRemoved's encoded refs
	enqOpen   *openEnqueue                // durable: the last enqueue entry, while it may take more (proposeBatch)
	oneID     [1]queue.DeliveryID         // cmdSettleOne's id as a slice
	batch     []*pendingPublish           // durable: this batch's persistent publishes, not yet proposed
	batchSize int                         // about the bytes of batch's messages
	confirms  []pendingConfirm            // answered at the end of the batch, once the counters are current
	bodies    map[uint64]*message.Message // durable: bodies read ahead from the log, by ref
	// durable: messages handed over by the log wait for this node to lead (takeLate)
	lateWaiting bool
	// durable, spread: while set, persistent publishes are held back until this node leads
	// the queue's group, at most until then (holdProposals, leadhold.go); leadAsk is when the
	// lead may be asked for again.
	leadBy, leadAsk time.Time
	// wantLead asks the goroutine to take its group's lead (leadhold.go).
	wantLead atomic.Bool
	// leasePaused: the last drain or get held deliveries back (fenced): nextWake looks again.
	leasePaused bool
	fencedNow   bool // fenced, as of this drain (while draining)
	draining    bool
	sm          *queue.Queue
	out         queue.Output
	sinks       map[queue.ConsumerID]Consumer
	hadUser     bool // auto-delete fires only after a first consumer has gone
	deleting    bool
	deadMu      sync.Mutex
	deadQ       []*message.Message
	deadAwake   bool
}

// queueConfig parses a declaration's arguments into the state machine's configuration.
func queueConfig(def meta.QueueDef) (queue.Config, error) {
	cfg, err := queue.ConfigFromArgs(def.Name, def.Args)
	if err != nil {
		return cfg, meta.Errorf(meta.PreconditionFailed, "%s", err.Error())
	}
	return cfg, nil
}

// newQueue starts a queue's goroutine. A durable queue comes with its recovered log, whose live
// messages it takes back first, in log order.
func newQueue(v *VHost, def meta.QueueDef, cfg queue.Config, g *cluster.Group, l *queueLog) *Queue {
	q := &Queue{
		v:     v,
		def:   def,
		cfg:   cfg,
		done:  make(chan struct{}),
		sm:    queue.New(cfg),
		sinks: map[queue.ConsumerID]Consumer{},
		group: g,
		log:   l,
	}
	// Publish may deliver by itself (TTL 0, length limits): it must see the same gate as Drain.
	q.sm.SetGate(q.allow)
	if e, ok := message.Int(def.Args["x-expires"]); ok {
		q.expires.Store(e)
	}
	q.inbox = newInbox(v.b.cfg.QueueInbox, func() { go q.run() })
	if l != nil {
		// AddGroup has replayed the log; entries that commit from now on and that the queue
		// did not propose come through takeLate (queuelog.go).
		l.recover(q.sm, q.Kick)
		q.sm.SetBodyWindow(v.b.cfg.QueueBodyWindow)
		q.ready.Store(int64(q.sm.Len()))
	}
	q.touch()
	go q.run()
	if l != nil || q.expires.Load() > 0 {
		// The goroutine sets its timer (x-expires, message TTLs) only after a first batch: a
		// recovered queue nobody touches must still expire, and its messages too.
		q.Kick()
	}
	return q
}

// pendingConfirm is a publisher confirm decided during a batch.
type pendingConfirm struct {
	t  *confirmTracker
	ok bool
}

// Name is the queue's name.
func (q *Queue) Name() string { return q.def.Name }

// Def is the queue's declaration.
func (q *Queue) Def() meta.QueueDef { return q.def }

// VHost is the vhost the queue lives in.
func (q *Queue) VHost() *VHost { return q.v }

// Len is the number of ready messages, as of the last batch.
func (q *Queue) Len() int {
	if q.remote != nil {
		return q.remote.length()
	}
	return int(q.ready.Load())
}

// Backlog is Len plus the commands (mostly publishes) waiting in the queue's inbox: what flow
// control (FlowGate) compares with its limit. Len alone lags behind a publisher that posts a
// whole read's publishes before the queue's goroutine takes them. A queue served by another
// node reports 0: its length is a call to that node (Len), which flow control, asking after
// every publish, must not make.
func (q *Queue) Backlog() int {
	if q.remote != nil {
		return 0
	}
	return int(q.ready.Load() + q.inbox.waiting.Load())
}

// Delivered counts the deliveries the queue has handed to its consumers since it was opened on
// this node, as of the last batch; -1 for a queue served by another node (not counted here). A
// publisher's flow control tells a consumer that makes progress from one that stalled
// (protocol/mqtt, flow.go).
func (q *Queue) Delivered() int64 {
	if q.remote != nil {
		return -1
	}
	return q.delivered.Load()
}

// AcceptsAtOnce reports whether a publish to the queue is accepted once it is in the queue's
// inbox: a transient queue served by this node with no length limit that refuses publishes
// (x-overflow reject-publish or reject-publish-dlx). Its confirm is then always positive, so
// an adapter may acknowledge the publish without waiting for it (protocol/mqtt: QoS 1 PUBACK).
func (q *Queue) AcceptsAtOnce() bool {
	if q.remote != nil || q.def.Durable {
		return false
	}
	limited := q.cfg.MaxLength >= 0 || q.cfg.MaxLengthBytes >= 0
	return !limited || q.cfg.Overflow == queue.DropHead
}

// ConsumerCount is the number of consumers, as of the last batch.
func (q *Queue) ConsumerCount() int {
	if q.remote != nil {
		return q.remote.consumerCount()
	}
	return int(q.consumers.Load())
}

func (q *Queue) touch() { q.lastUsed.Store(q.v.b.now()) }

// send posts a command; false when the queue is gone.
func (q *Queue) send(c command) bool { return q.inbox.post(c, q.done) }

// call posts a command and waits for its result.
func (q *Queue) call(c command) (result, bool) {
	c.reply = make(chan result, 1)
	if !q.send(c) {
		return result{}, false
	}
	select {
	case r := <-c.reply:
		return r, true
	case <-q.done:
		return result{}, false
	}
}

// countWait bounds how long CountedLen waits for the queue's goroutine before it answers with
// the count of the last batch.
const countWait = 2 * time.Second

// CountedLen is the number of ready messages once the queue has run every command posted before
// the call: a client that publishes and then declares the queue (passive) is told a count that
// includes its publishes, as RabbitMQ's channel and queue processes order them. A publisher's
// reader wakes the queue lazily (Wakes), so Len, the count of the last batch, may not include
// them yet. Must not be called with Broker.mu held: it waits for the queue's goroutine.
func (q *Queue) CountedLen() int {
	if q.remote != nil {
		return q.remote.length()
	}
	c := command{kind: cmdCount, reply: make(chan result, 1)}
	if !q.send(c) {
		return q.Len()
	}
	t := time.NewTimer(countWait)
	defer t.Stop()
	select {
	case r := <-c.reply:
		return r.n
	case <-q.done:
	case <-t.C:
	}
	return q.Len()
}

// publish enqueues m. With w, the queue's goroutine is woken when w is flushed rather than now
// (Wakes).
func (q *Queue) publish(m *message.Message, t *confirmTracker, w *Wakes) {
	if q.remote != nil {
		if w != nil {
			// A forwarded publish may wait (for the queue's host, for room towards it): the
			// queues this reader published to before must not wait with it (Wakes).
			w.Flush()
		}
		q.remote.publish(m, t)
		return
	}
	ok, owe := q.inbox.postDeferred(command{kind: cmdPublish, msg: m, confirm: t}, q.done, w)
	if owe {
		w.add(q)
	}
	if !ok && t != nil {
		// Deleted while we routed to it: RabbitMQ confirms such a message.
		t.done(true)
	}
}

// Wakes holds the wake-ups a connection's reader owes the queues it published to: a reader
// that has more frames buffered publishes them all before any queue's goroutine runs, so a
// flood wakes each queue once per read rather than once per message (every wake-up of a
// parked goroutine can cost a futex wake of an idle thread: the largest kernel cost of a 1p/1c
// transient flood, docs/performance.md). The owner must call Flush before it blocks (before a
// read that may wait for the socket, before waiting for anything a queue does); calls into the
// core that wait (Consume, Get, Cancel, declares) wake their queue themselves and, the inbox
// being in order, also what was deferred ahead of them. Not safe for concurrent use: one per
// reader goroutine.
type Wakes struct {
	qs []*Queue
}

func (w *Wakes) add(q *Queue) {
	if n := len(w.qs); n > 0 && w.qs[n-1] == q {
		return
	}
	w.qs = append(w.qs, q)
}

// Flush wakes the queues published to since the last Flush.
func (w *Wakes) Flush() {
	for i, q := range w.qs {
		q.inbox.wakeUp()
		w.qs[i] = nil
	}
	w.qs = w.qs[:0]
}

// Consume adds a consumer and returns its id.
func (q *Queue) Consume(o ConsumeOptions, c Consumer) (queue.ConsumerID, error) {
	if o.Owner != 0 {
		if err := q.v.checkOwner(q, o.Owner); err != nil {
			return 0, err
		}
	}
	if q.remote != nil {
		id, err := q.remote.consume(o, c)
		if err == nil {
			q.touch()
		}
		return id, err
	}
	id := queue.ConsumerID(q.v.b.nextConsumer.Add(1))
	spec := queue.ConsumerSpec{ID: id, Prefetch: o.Prefetch, NoAck: o.NoAck, Exclusive: o.Exclusive, Priority: o.Priority}
	r, ok := q.call(command{kind: cmdConsume, spec: spec, consumer: c})
	if !ok {
		return 0, q.v.notFoundQueue(q.def.Name)
	}
	if r.err != nil {
		return 0, r.err
	}
	q.touch()
	return id, nil
}

// Cancel removes a consumer (basic.cancel) and returns once the queue has done so: no delivery
// to it starts after Cancel returns. Its unacked deliveries stay unacked. An auto-delete queue
// that lost its last consumer is deleted before Cancel returns, as RabbitMQ does before
// basic.cancel-ok.
func (q *Queue) Cancel(id queue.ConsumerID) {
	if q.remote != nil {
		q.remote.cancel(id)
		return
	}
	r, ok := q.call(command{kind: cmdCancel, spec: queue.ConsumerSpec{ID: id}})
	if ok && r.ok {
		q.v.deleteQueueIf(q)
	}
}

// SettleByQueue settles the deliveries of several queues with one Settle call per queue, each
// queue's ids in the order given; of names an item's queue and delivery. It reorders items.
func SettleByQueue[T any](items []T, o queue.Outcome, of func(T) (*Queue, queue.DeliveryID)) {
	if len(items) == 1 {
		// The common case (an acknowledgement of one delivery) allocates nothing.
		q, id := of(items[0])
		q.settleOne(id, o)
		return
	}
	for len(items) > 0 {
		q, _ := of(items[0])
		ids := make([]queue.DeliveryID, 0, len(items))
		rest := items[:0]
		for _, it := range items {
			if iq, id := of(it); iq == q {
				ids = append(ids, id)
			} else {
				rest = append(rest, it)
			}
		}
		q.Settle(ids, o)
		items = rest
	}
}

// Settle acks, requeues or discards deliveries. Settling on a deleted queue does nothing.
func (q *Queue) Settle(ids []queue.DeliveryID, o queue.Outcome) {
	if q.remote != nil {
		q.remote.Settle(ids, o)
		return
	}
	q.send(command{kind: cmdSettle, ids: ids, outcome: o})
}

// settleOne is Settle of one delivery.
func (q *Queue) settleOne(id queue.DeliveryID, o queue.Outcome) {
	if q.remote != nil {
		q.remote.Settle([]queue.DeliveryID{id}, o)
		return
	}
	q.send(command{kind: cmdSettleOne, id: id, outcome: o})
}

// Get takes one message (basic.get). remaining is the number of ready messages left. A
// spread queue whose host cannot be reached answers not ok, as if empty: adapters that can
// report the difference use Fetch.
func (q *Queue) Get(noAck bool) (d queue.Delivery, remaining int, ok bool) {
	d, remaining, ok, _ = q.Fetch(noAck)
	return d, remaining, ok
}

// Fetch is Get that also says when the queue could not answer: a spread queue (remote.go)
// with no host attached within attachWait, or whose host failed the call, returns an error
// (meta.NotFound, RabbitMQ's channel error for a durable queue whose home node is down)
// rather than claiming to be empty while it may hold messages (issue 7).
func (q *Queue) Fetch(noAck bool) (d queue.Delivery, remaining int, ok bool, err error) {
	q.touch()
	if q.remote != nil {
		return q.remote.get(noAck)
	}
	// A node that just took the lead serves once its lease is confirmed, a round trip later; a
	// get waits for that rather than answer empty (bounded: a node cut off stays fenced).
	for deadline := time.Now().Add(getLeaseWait); q.leaseFenced() && !q.v.b.deposed() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	r, alive := q.call(command{kind: cmdGet, noAck: noAck})
	if !alive {
		return queue.Delivery{}, 0, false, nil
	}
	return r.d, r.n, r.ok, nil
}

// Kick asks the queue to try delivering again: a consumer's outside credit came back.
func (q *Queue) Kick() {
	if q.remote != nil {
		q.remote.poke()
		return
	}
	q.inbox.kick()
}

func (q *Queue) purge() int {
	if q.remote != nil {
		n, _ := q.remote.count(rpcPurge)
		return n
	}
	r, ok := q.call(command{kind: cmdPurge})
	if !ok {
		return 0
	}
	return r.n
}

// delete stops the queue, cancels its consumers and returns its ready message count.
func (q *Queue) delete() int {
	if q.remote != nil {
		return q.remote.delete()
	}
	r, ok := q.call(command{kind: cmdDelete})
	if !ok {
		return 0
	}
	return r.n
}

// stop ends the goroutine without notifying consumers (broker shutdown). A durable queue then
// waits (bounded) until its log has every removal it proposed, so a clean stop redelivers
// nothing that was acknowledged: entries commit in order, so an empty entry proposed last
// is a barrier.
func (q *Queue) stop() {
	if q.remote != nil {
		q.remote.stop(true)
		return
	}
	q.call(command{kind: cmdDelete, silent: true})
	if q.group == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if f, err := q.group.Propose(ctx, q.log.tagged(removeEntry(0, nil))); err == nil {
		_, _ = f.Wait(ctx)
	}
}

// logRemoved proposes the removal of the messages that left the queue for good. It does not
// wait: a crash before it commits only redelivers them (at least once). For the same reason
// it is a lazy proposal: it shares the fsync of the next publishes rather than costing one of
// its own (cluster/lazy.go); a clean stop's barrier (stop) still writes it. While the last
// removal entry still waits in the group's queue, the refs go into it rather than into an
// entry of their own, even when the queue proposed publishes after it (a removal commutes
// with them: see cluster.Group.AppendLazy). With every delivery acknowledged on its own the
// queue removes a few messages per round, and an entry per round was a log entry (its raft
// copy, Pebble key and apply) per seven messages in the 1p/1c persistent benchmark.
func (q *Queue) logRemoved() {
	if q.group == nil || len(q.out.Removed) == 0 {
		return
	}
	more := q.rmScratch[:0]
	for _, r := range q.out.Removed {
		more = binary.AppendUvarint(more, r)
	}
	q.rmScratch = more
	if !q.group.AppendLazy(q.rmEntry, more, maxRemoveEntryBytes) {
		q.rmEntry, _ = q.group.ProposeLazyOpen(q.log.tagged(removeEntry(q.log.self, q.out.Removed)))
	}
	q.out.Removed = q.out.Removed[:0]
}

// maxRemoveEntryBytes bounds a removal entry that logRemoved extends (about 10,000 refs).
const maxRemoveEntryBytes = 64 << 10

// run is the queue's goroutine: it owns q.sm while it runs. It parks (returns) when the queue
// has had nothing to do and no timer to wait for during a whole tick of the broker's idle
// clock (one to two lingerTick); the inbox starts a new one on the next post or kick (see
// inbox). Until then it waits on its inbox, so a queue busy every few milliseconds keeps one
// goroutine rather than starting one per command (a goroutine start was the largest
// allocation per delivery left in MQTT fan-out, see docs/performance.md).
func (q *Queue) run() {
	// The timer is made only when the queue has something to expire: run starts again after
	// each idle spell, so a timer made up front was an allocation per start.
	var timer *time.Timer
	var timerC <-chan time.Time
	var timerAt int64
	var lingerC <-chan struct{} // the idle clock's next tick, while no timer is set
	busy := false               // a round ran since lingerC was taken
	for {
		select {
		case <-q.inbox.wake:
		case <-timerC:
			timerAt = 0
		case <-lingerC:
			if !busy && timerAt == 0 && q.inbox.park() {
				if timer != nil {
					timer.Stop()
				}
				return
			}
			lingerC, busy = nil, false
			if timerAt == 0 {
				lingerC = q.v.b.idle.tick()
			}
			continue
		}
		busy = true
		// Everything waiting is one batch; what the log committed for the queue without the
		// queue's own proposals comes first.
		batch := q.inbox.take()
		q.takeLate()
		// One clock read for the batch, not one per command (a publish-and-ack load sends
		// hundreds of commands a batch; the clock was 1.5 % of the broker's CPU).
		now := q.v.b.now()
		for i, c := range batch {
			if q.apply(c, now) {
				q.abandon(batch[i+1:])
				q.abandon(q.inbox.close())
				if timer != nil {
					timer.Stop()
				}
				close(q.done)
				return
			}
		}
		q.inbox.recycle(batch)
		if !q.holdProposals() {
			q.proposeBatch(now)
		}
		q.drain()
		if at, ok := q.nextWake(); ok && (timerAt == 0 || at < timerAt) {
			timerAt = at
			d := time.Duration(at-q.v.b.now()) * time.Millisecond
			if d < 0 {
				d = 0
			}
			if timer == nil {
				timer = time.NewTimer(d)
				timerC = timer.C
			} else {
				timer.Reset(d)
			}
		}
		if timerAt == 0 && lingerC == nil {
			lingerC = q.v.b.idle.tick()
		}
	}
}

// abandon answers the commands a stopped queue will not apply: a publisher waiting for a
// confirm gets it, as RabbitMQ confirms a message routed to a queue deleted meanwhile. Callers
// waiting for a reply see the queue gone (done is closed after run returns).
func (q *Queue) abandon(cmds []command) {
	for _, c := range cmds {
		if c.kind == cmdPublish && c.confirm != nil {
			c.confirm.done(true)
		}
	}
}

// nextWake is the next time the queue must act on its own: a TTL or x-expires.
func (q *Queue) nextWake() (int64, bool) {
	at, ok := q.sm.NextExpiry()
	if exp := q.expires.Load(); exp > 0 && q.sm.ConsumerCount() == 0 {
		e := q.lastUsed.Load() + exp
		if !ok || e < at {
			at, ok = e, true
		}
	}
	if !q.leadBy.IsZero() {
		// Publishes held back while the queue waits to lead its group (holdProposals).
		if e := q.v.b.now() + leadRetryMs; !ok || e < at {
			at, ok = e, true
		}
	}
	if q.leasePaused {
		// Deliveries paused for want of the lease (fenced): look again soon.
		if e := q.v.b.now() + leaseRetryMs; !ok || e < at {
			at, ok = e, true
		}
	}
	if q.lateWaiting {
		// Messages handed over wait for this node to lead the group again (takeLate).
		if e := q.v.b.now() + lateRetryMs; !ok || e < at {
			at, ok = e, true
		}
	}
	return at, ok
}

// getLeaseWait bounds how long a get waits for its node's lease (Queue.Get).
const getLeaseWait = 3 * time.Second

// leaseRetryMs is how often a queue whose deliveries are paused (fenced) looks again: a lease
// comes back within a tick or two of its echoes.
const leaseRetryMs = 50

// leaseFenced reports whether the queue must deliver nothing now for want of a lease: its
// node may not serve (Broker.fenced: deposed, or leading group 0 without its lease), or it
// runs the queue as its group's leader without the group's lease (cluster/lease.go). Queue.fenced
// (leadhold.go) is the queue host's own fence; deliveries need both clear.
func (q *Queue) leaseFenced() bool {
	if q.v.b.fenced() {
		return true
	}
	g := q.group
	return g != nil && q.remote == nil && g.IsLeader() && !g.HasLease()
}

// lateRetryMs is how often a queue with messages handed over but not taken (its node does not
// lead the group) looks again.
const lateRetryMs = 200

// apply runs one command of a batch taken at now; true means the queue has stopped.
func (q *Queue) apply(c command, now int64) bool {
	switch c.kind {
	case cmdPublish:
		if q.group != nil && (c.msg.Persistent() || len(q.waiting) > 0) {
			q.publishDurable(now, c.msg, c.confirm)
			break
		}
		ok := q.sm.Publish(now, c.msg, &q.out)
		if c.confirm != nil {
			q.confirms = append(q.confirms, pendingConfirm{c.confirm, ok})
		}
	case cmdSettleOne:
		q.oneID[0] = c.id
		_ = q.sm.Settle(now, q.oneID[:], c.outcome, &q.out)
	case cmdSettle:
		// Unknown ids are the adapter's bug or a race with a requeue on close; nothing to undo.
		_ = q.sm.Settle(now, c.ids, c.outcome, &q.out)
		if c.state != nil {
			q.settledWithState(c)
		}
	case cmdConsume:
		err := q.sm.AddConsumer(c.spec)
		if err == nil {
			q.sinks[c.spec.ID] = c.consumer
			q.hadUser = true
		} else {
			err = meta.Errorf(meta.AccessRefused, "queue '%s' in vhost '%s' in exclusive use", q.def.Name, q.v.name)
		}
		// Counted before the reply: a delete if-unused right after basic.consume-ok must
		// see the consumer (the end-of-batch update came too late for it).
		q.consumers.Store(int64(q.sm.ConsumerCount()))
		c.reply <- result{err: err}
	case cmdCancel:
		del := false
		if _, ok := q.sinks[c.spec.ID]; ok {
			q.sm.RemoveConsumer(c.spec.ID)
			delete(q.sinks, c.spec.ID)
			q.lastUsed.Store(now)
			if q.def.AutoDelete && len(q.sinks) == 0 && q.hadUser && !q.deleting {
				// The caller deletes it: this goroutine must not wait on Broker.mu.
				q.deleting = true
				del = true
			}
		}
		if c.reply != nil {
			c.reply <- result{ok: del}
		}
	case cmdGet:
		if q.fenced() || q.leaseFenced() {
			// Nothing for a node that does not serve now (fenced, leaseFenced).
			q.leasePaused = true
			c.reply <- result{n: q.sm.Len()}
			break
		}
		d, ok := q.sm.Get(now, c.noAck, &q.out)
		if ok && d.Msg == nil {
			d.Msg = q.loadBody(d.Ref)
		}
		c.reply <- result{d: d, ok: ok, n: q.sm.Len()}
	case cmdCount:
		// Publishes still waiting for their log entry behind a persistent one are enqueued
		// already: RabbitMQ counts a message from the moment the queue has it.
		c.reply <- result{n: q.sm.Len() + len(q.waiting)}
	case cmdPurge:
		c.reply <- result{n: q.sm.Purge(&q.out)}
		q.bodies = nil
	case cmdDelete:
		// At shutdown (stop) the publishes of this batch still reach the log before the
		// barrier stop proposes, as each did when it was proposed at once.
		q.proposeBatch(now)
		q.logRemoved()
		// Publishers still waiting hear back: RabbitMQ confirms what reached a deleted queue.
		for _, c := range q.confirms {
			c.t.done(c.ok)
		}
		q.confirms = nil
		if c.silent {
			// A stop or a park is not a delete: the queue lives on (after a restart, or on
			// its group's new leader), so a publish is confirmed only if its entry commits.
			go answerWhenLogged(q.waiting, stopLogWait)
		} else {
			for _, p := range q.waiting {
				if p.confirm != nil {
					p.confirm.done(true)
				}
			}
		}
		q.waiting = nil
		n := q.sm.Len()
		if !c.silent {
			for _, s := range q.sinks {
				s.Cancelled(q)
			}
		}
		c.reply <- result{n: n}
		return true
	}
	return false
}

// drain runs the delivery step and carries out the effects.
func (q *Queue) drain() {
	now := q.v.b.now()
	if exp := q.expires.Load(); exp > 0 && q.sm.ConsumerCount() == 0 && now-q.lastUsed.Load() >= exp && !q.deleting {
		if q.v.b.hostOnly && q.v.b.server != nil {
			// A queue host has no metadata: the serving node decides and deletes
			// (remotedead.go). Asked again after another period if it does not.
			q.lastUsed.Store(now)
			go q.v.b.server.expired(q)
		} else {
			q.deleting = true
			go q.v.deleteQueueIf(q)
		}
	}
	q.takeLogged(now)
	// Once per drain, not per delivery: the lease does not change within one.
	q.fencedNow, q.draining = q.fenced() || q.leaseFenced(), true
	q.leasePaused = false
	q.sm.Drain(now, q.allow, &q.out)
	q.draining = false
	for _, d := range q.out.Deliveries {
		if d.Msg == nil {
			d.Msg = q.loadBody(d.Ref)
		}
		if s, ok := q.sinks[d.Consumer]; ok {
			s.Deliver(q, d)
		}
	}
	for _, dl := range q.out.DeadLetters {
		if !q.cfg.HasDeadLetterExchange {
			continue
		}
		if dl.Msg == nil {
			dl.Msg = q.loadBody(dl.Ref)
		}
		m, ex, rk := queue.DeadLetterMessage(dl, q.def.Name, now, q.cfg)
		q.deadLetter(m, ex, rk)
	}
	q.logRemoved()
	if n := len(q.out.Deliveries); n > 0 {
		q.delivered.Add(int64(n))
	}
	if q.out.More {
		// The round stopped at queue.MaxRoundBytes: another, once the inbox had its turn
		// and the consumers' connections had their say in allow.
		q.inbox.kick()
	}
	q.noteRoundEnd(q.out.More)
	q.out.Reset()
	q.ready.Store(int64(q.sm.Len()))
	q.consumers.Store(int64(q.sm.ConsumerCount()))
	// Confirms last: a publisher that hears back (tx.commit-ok, basic.ack) and then asks for
	// the message count sees its messages counted.
	for i, c := range q.confirms {
		c.t.done(c.ok)
		q.confirms[i] = pendingConfirm{}
	}
	q.confirms = q.confirms[:0]
}

func (q *Queue) allow(id queue.ConsumerID) bool {
	if (q.draining && q.fencedNow) || (!q.draining && (q.fenced() || q.leaseFenced())) {
		q.leasePaused = true
		return false
	}
	s, ok := q.sinks[id]
	return ok && s.Allow()
}

// deadLetter republishes a dead message in order, off the queue's goroutine: publishing may
// block on a full inbox, possibly this queue's own (a DLX cycle).
func (q *Queue) deadLetter(m *message.Message, ex, rk string) {
	m.Exchange, m.RoutingKey = ex, rk
	q.deadMu.Lock()
	q.deadQ = append(q.deadQ, m)
	start := !q.deadAwake
	q.deadAwake = true
	q.deadMu.Unlock()
	if start {
		go q.forwardDead()
	}
}

func (q *Queue) forwardDead() {
	var s PublishScratch
	for {
		q.deadMu.Lock()
		batch := q.deadQ
		q.deadQ = nil
		if len(batch) == 0 {
			q.deadAwake = false
			q.deadMu.Unlock()
			return
		}
		q.deadMu.Unlock()
		if q.v.b.hostOnly && q.v.b.server != nil {
			// A queue host has no routing: the serving node publishes them (remotedead.go).
			q.v.b.server.sendDead(q, batch)
			continue
		}
		for _, m := range batch {
			_, _ = q.v.Publish(m, nil, &s)
		}
	}
}

// publishDurable puts a publish in the durable queue's FIFO. A persistent message is written to
// the log first; a transient one only waits for those ahead of it, so the queue keeps the order
// of publishes. The persistent messages of an inbox batch are proposed together, at its end
// (proposeBatch): one log entry for the batch (DESIGN.md §2), or more when it is large.
func (q *Queue) publishDurable(now int64, m *message.Message, t *confirmTracker) {
	p := q.newPending(m, t)
	if m.Persistent() {
		p.logged = true
		size := entrySizeOf(m)
		if len(q.batch) == maxBatchMessages || (len(q.batch) > 0 && q.batchSize+size > maxBatchBytes) {
			q.leadBy = time.Time{} // a full batch is not held (holdProposals)
			q.proposeBatch(now)
		}
		q.batch = append(q.batch, p)
		q.batchSize += size
	} else {
		p.done.Store(true)
	}
	q.waiting = append(q.waiting, p)
}

// pendSlabSize is how many pendingPublish records one allocation makes (newPending).
const pendSlabSize = 64

// newPending returns a record for a publish entering the durable FIFO. The records come from a
// slab of pendSlabSize, one allocation per slab instead of one per persistent message; a
// slab is freed once none of its records is waiting or referenced by a proposal's callback,
// and takeLogged drops a record's message and tracker once it is taken, so a record still
// waiting keeps no other publish's body alive.
func (q *Queue) newPending(m *message.Message, t *confirmTracker) *pendingPublish {
	if len(q.pendSlab) == 0 {
		q.pendSlab = make([]pendingPublish, pendSlabSize)
	}
	p := &q.pendSlab[0]
	q.pendSlab = q.pendSlab[1:]
	p.m, p.confirm = m, t
	return p
}

// proposeBatch proposes the persistent messages gathered since the last call. They go into
// the queue's last enqueue entry while that still waits in the group's queue (the host has not
// taken it: extendOpen), and what does not into a new entryEnqueueBatch entry, which the next
// batches may extend in turn. So the publishes of every inbox batch between two turns of the
// host's loop (a reader hands them over a read at a time, several times per fsync) share one
// log entry: one raft entry, Pebble key, apply and callback instead of one per inbox batch.
// Each message is confirmed when its entry has committed (fsynced on a majority) and applied,
// as with one entry each.
func (q *Queue) proposeBatch(now int64) {
	if len(q.batch) == 0 {
		return
	}
	rest := q.batch
	if q.enqOpen != nil {
		rest = q.extendOpen(rest)
	}
	if len(rest) > 0 {
		q.proposeNew(now, slices.Clone(rest))
	}
	clear(q.batch)
	q.batch = q.batch[:0]
	q.batchSize = 0
}

// openEnqueue is an enqueue entry the queue proposed that may still take more publishes
// (cluster.Group.Extend).
type openEnqueue struct {
	entry   cluster.OpenEntry
	token   uint64
	countAt int               // where its message count is in the entry's data (appendCount)
	ps      []*pendingPublish // its messages in slot order; grows only inside Group.Extend
	size    int               // entrySizeOf its messages, bounded by maxBatchBytes
}

// proposeNew proposes ps (persistent publishes, at most one entry's worth) as a new batch
// entry and keeps it open for the next batches.
func (q *Queue) proposeNew(now int64, ps []*pendingPublish) {
	q.enqOpen = nil
	ms := make([]*message.Message, len(ps))
	size := 0
	for i, p := range ps {
		ms[i] = p.m
		size += entrySizeOf(p.m)
	}
	// A follower forwards its entries rather than handing them to raft to copy, so their
	// buffers are not recycled: room to extend is asked for only on the leader.
	entry, token, countAt, err := q.log.openBatchEntry(now, ms, q.group.IsLeader())
	if err != nil {
		// One message the log cannot take: alone, each of the others still can.
		for _, p := range ps {
			q.proposeOne(now, p)
		}
		return
	}
	ob := &openEnqueue{token: token, countAt: countAt, ps: ps, size: size}
	// The callback reads ob.ps, which Extend grows only while the host has not taken the
	// entry (under the group's queue lock, as the host takes it): it sees every message.
	oe, err := q.group.ProposeOpenInPlace(entry, func(res any, err error) {
		var first uint64
		if err == nil {
			if e, ok := res.(error); ok {
				err = e
			} else {
				first, _ = res.(uint64)
			}
		} else {
			q.log.forget(token) // if it commits after all, it comes through takeLate
		}
		for i, p := range ob.ps {
			p.ref, p.err = first+uint64(i), err
			p.done.Store(true)
		}
		q.Kick()
	})
	if err != nil {
		q.log.forget(token)
		for _, p := range ps {
			p.err = err
			p.done.Store(true)
		}
		return
	}
	ob.entry = oe
	q.enqOpen = ob
}

// extendOpen puts as many of ps as fit into the open enqueue entry, if the host has not taken
// it yet, and returns the rest. A message appended is recorded with the entry's enqueue time,
// less than one turn of the host's loop before its own: after a restart its TTL counts from
// that (a few milliseconds early at most).
func (q *Queue) extendOpen(ps []*pendingPublish) []*pendingPublish {
	ob := q.enqOpen
	n, size := 0, ob.size
	for n < len(ps) && len(ob.ps)+n < maxBatchMessages {
		s := entrySizeOf(ps[n].m)
		if size+s > maxBatchBytes {
			break
		}
		size += s
		n++
	}
	if n == 0 {
		q.enqOpen = nil // full
		return ps
	}
	var err error
	taken := !q.group.Extend(ob.entry, func(data []byte) []byte {
		if data, err = q.log.appendBatch(data, ob.countAt, ob.token, len(ob.ps), ps[:n]); err == nil {
			ob.ps = append(ob.ps, ps[:n]...)
		}
		return data
	})
	if taken || err != nil {
		q.enqOpen = nil
		return ps
	}
	ob.size = size
	return ps[n:]
}

// proposeOne proposes one persistent message in an entryEnqueue entry.
func (q *Queue) proposeOne(now int64, p *pendingPublish) {
	entry, token, err := q.log.enqueueEntry(now, p.m)
	if err == nil {
		err = q.group.ProposeAsyncInPlace(entry, func(res any, err error) {
			if err == nil {
				if e, ok := res.(error); ok {
					err = e
				} else {
					p.ref, _ = res.(uint64)
				}
			} else {
				q.log.forget(token) // if it commits after all, it comes through takeLate
			}
			p.err = err
			p.done.Store(true)
			q.Kick()
		})
		if err != nil {
			q.log.forget(token)
		}
	}
	if err != nil {
		p.err = err
		p.done.Store(true)
	}
}

// takeLate adds the messages of entries committed after the queue started that it did not
// propose, and drops the ready ones a snapshot restored meanwhile no longer holds (see
// queuelog.go). They are added as recovered ones are: marked redelivered, since the node that
// proposed one may have delivered it.
func (q *Queue) takeLate() {
	if q.log == nil {
		return
	}
	late, gone, waiting := q.log.takeLate(q.group.IsLeader())
	q.lateWaiting = waiting
	for i := range late {
		r := &late[i]
		q.sm.RecoverStub(r.at, r.stub(), r.ref)
	}
	if len(gone) > 0 {
		q.sm.Forget(gone)
		for ref := range gone {
			delete(q.bodies, ref)
		}
	}
}

// stopLogWait bounds how long a stopped or parked queue's publishes wait for their log entry
// before their publishers get a nack (answerWhenLogged).
const stopLogWait = 10 * time.Second

// answerWhenLogged confirms the publishes of a queue that stopped running (stop, or a queue
// host parking a queue whose group it no longer leads) as the log answers for them: a publish
// whose entry committed is confirmed, one whose entry failed, or has no answer within wait
// (the group lost its majority, or the lead moved and the entry may never commit), is nacked,
// and its publisher sends it again (at least once). Confirming them all at once, as a delete
// does, could confirm a message that never reaches the log. Transient messages waiting behind
// persistent ones were never going to outlive the queue's process: they are confirmed, as a
// transient message is once a running queue has it.
func answerWhenLogged(waiting []*pendingPublish, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for _, p := range waiting {
		for p.logged && !p.done.Load() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if p.confirm == nil {
			continue
		}
		p.confirm.done(!p.logged || (p.done.Load() && p.err == nil))
	}
}

// takeLogged moves the FIFO's head into the queue while the log has answered for it: only a
// committed (fsynced) message may be delivered or confirmed.
func (q *Queue) takeLogged(now int64) {
	n := 0
	for _, p := range q.waiting {
		if !p.done.Load() {
			break
		}
		n++
		m, t := p.m, p.confirm
		p.m, p.confirm = nil, nil // the record's slab may outlive it (newPending)
		if p.err != nil {
			q.v.b.log.Warn("persistent message not stored; publisher gets a nack")
			if t != nil {
				q.confirms = append(q.confirms, pendingConfirm{t, false})
			}
			continue
		}
		ok := q.sm.PublishRef(now, m, p.ref, &q.out)
		if t != nil {
			q.confirms = append(q.confirms, pendingConfirm{t, ok})
		}
	}
	if n > 0 {
		clear(q.waiting[:n])
		q.waiting = q.waiting[n:]
	}
}
