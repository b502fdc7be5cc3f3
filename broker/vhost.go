package broker

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"

	"go.uber.org/zap"
)

// DirectReplyTo is RabbitMQ's pseudo-queue for RPC replies without a real queue.
const DirectReplyTo = "amq.rabbitmq.reply-to"

// VHost is one virtual host: its routing snapshot and its queues.
type VHost struct {
	b    *Broker
	name string

	router atomic.Pointer[exchange.Router]
	queues atomic.Pointer[map[string]*Queue] // copy-on-write under b.mu

	replyMu sync.RWMutex
	replyTo map[string]Consumer // direct reply-to token -> consumer
}

// Name is the vhost's name.
func (v *VHost) Name() string { return v.name }

func (v *VHost) queueMap() map[string]*Queue { return *v.queues.Load() }

// queue returns the running queue of that name.
func (v *VHost) queue(name string) (*Queue, bool) {
	q, ok := (*v.queues.Load())[name]
	return q, ok
}

func (v *VHost) notFoundQueue(name string) error {
	return meta.Errorf(meta.NotFound, "no queue '%s' in vhost '%s'", name, v.name)
}

func (v *VHost) lockedQueue(name string) error {
	return meta.Errorf(meta.ResourceLocked, "cannot obtain exclusive access to locked queue '%s' in vhost '%s'. "+
		"It could be originally declared on another connection or the exclusive property value does not match "+
		"that of the original declaration.", name, v.name)
}

// checkOwner enforces exclusivity: only the declaring connection may use an exclusive queue.
func (v *VHost) checkOwner(q *Queue, owner uint64) error {
	if q.def.Exclusive && q.def.Owner != owner {
		return v.lockedQueue(q.def.Name)
	}
	return nil
}

// publishRouterLocked swaps in the metadata's current routing snapshot. b.mu held.
func (v *VHost) publishRouterLocked() { v.router.Store(v.b.meta.Router(v.name)) }

// DeclareExchange declares (or, passive, checks) an exchange.
func (v *VHost) DeclareExchange(d meta.ExchangeDef, passive bool) error {
	d.VHost = v.name
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	if _, err := v.b.meta.DeclareExchange(d, passive); err != nil {
		return err
	}
	v.publishRouterLocked()
	return v.b.persistMetaLocked()
}

// DeleteExchange deletes an exchange and its bindings.
func (v *VHost) DeleteExchange(name string, ifUnused bool) error {
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	if err := v.b.meta.DeleteExchange(v.name, name, ifUnused); err != nil {
		return err
	}
	v.publishRouterLocked()
	return v.b.persistMetaLocked()
}

// QueueStatus is what queue.declare-ok reports.
type QueueStatus struct {
	Name      string
	Messages  int
	Consumers int
}

// DeclareQueue declares (or, passive, checks) a queue. An empty name asks for a server-named one.
// The message count includes every publish that reached the queue before the call (CountedLen),
// counted after Broker.mu is released.
func (v *VHost) DeclareQueue(d meta.QueueDef, passive bool) (QueueStatus, error) {
	st, q, err := v.declareQueue(d, passive)
	if err != nil {
		return st, err
	}
	st.Messages = q.CountedLen()
	return st, nil
}

func (v *VHost) declareQueue(d meta.QueueDef, passive bool) (QueueStatus, *Queue, error) {
	d.VHost = v.name
	if d.Name == "" && !passive {
		d.Name = serverNamedQueue()
		d.ServerNamed = true
	}
	if d.Packed && d.Durable && v.b.cfg.Host != nil && v.b.cfg.PartitionGroups > 0 {
		d.Partition = partitionOf(v.name, d.Name, v.b.cfg.PartitionGroups)
	}
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	def, created, err := v.b.meta.DeclareQueue(d, passive)
	if err != nil {
		return QueueStatus{}, nil, err
	}
	q, ok := v.queue(def.Name)
	if created || !ok {
		if host := v.b.cfg.Host; def.Durable && host != nil {
			// The queue's group starts with the cluster's members as they are now, and the
			// metadata entry below tells the other nodes to create their copies with the
			// members as they are where the entry lands in group 0's log: no membership change
			// may come in between (cluster/membership.go).
			unlock, err := host.LockMembership(context.Background())
			if err != nil {
				_, _ = v.b.meta.DeleteQueue(v.name, def.Name, def.Owner)
				return QueueStatus{}, nil, meta.Errorf(meta.InternalError, "cannot start queue '%s': %v", def.Name, err)
			}
			defer unlock()
			if created && v.b.cfg.Spread != nil && spreadable(def) {
				// Placement lives in group 0 (DESIGN.md §5): recorded with the queue, in the
				// entry below, so every node and every restart agree where it runs.
				if def, err = v.b.meta.SetQueuePlace(v.name, def.Name, v.b.placeNew()); err != nil {
					return QueueStatus{}, nil, err
				}
			}
		}
		q, err = v.startQueue(context.Background(), def)
		if err != nil {
			// meta validated the arguments already; a failure here is a mismatch between the two.
			_, _ = v.b.meta.DeleteQueue(v.name, def.Name, def.Owner)
			return QueueStatus{}, nil, err
		}
		next := make(map[string]*Queue, len(v.queueMap())+1)
		for k, e := range v.queueMap() {
			next[k] = e
		}
		next[def.Name] = q
		v.queues.Store(&next)
		v.publishRouterLocked()
		if def.Durable {
			if err := v.b.persistMetaLocked(); err != nil {
				return QueueStatus{}, nil, err
			}
			if err := q.openedLocked(); err != nil {
				v.b.log.Error("queue not opened in its partition group", zap.String("queue", def.Name), zap.Error(err))
				return QueueStatus{}, nil, meta.Errorf(meta.InternalError, "cannot start queue '%s' in vhost '%s': %v", def.Name, v.name, err)
			}
		}
	} else if err := v.checkOwner(q, d.Owner); err != nil {
		return QueueStatus{}, nil, err
	} else if err := q.openedLocked(); err != nil {
		// Its open entry failed when it was declared: it is proposed again.
		return QueueStatus{}, nil, meta.Errorf(meta.InternalError, "cannot start queue '%s' in vhost '%s': %v", def.Name, v.name, err)
	}
	q.touch()
	return QueueStatus{Name: def.Name, Consumers: q.ConsumerCount()}, q, nil
}

// DeleteQueue deletes a queue; its consumers are cancelled. It returns the number of ready
// messages it held. Deleting a queue that does not exist succeeds (RabbitMQ 3.x).
func (v *VHost) DeleteQueue(name string, ifUnused, ifEmpty bool, owner uint64) (int, error) {
	// if-empty counts the publishes that reached the queue before the delete, as queue.declare
	// does: counted before Broker.mu is taken, because CountedLen waits for the queue.
	counted, countedQ := 0, (*Queue)(nil)
	if q, ok := v.queue(name); ok && ifEmpty {
		counted, countedQ = q.CountedLen(), q
	}
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	q, ok := v.queue(name)
	if !ok {
		return 0, nil
	}
	if err := v.checkOwner(q, owner); err != nil {
		return 0, err
	}
	if ifUnused && q.ConsumerCount() > 0 {
		return 0, meta.Errorf(meta.PreconditionFailed, "queue '%s' in vhost '%s' in use", name, v.name)
	}
	if ifEmpty && (q.Len() > 0 || (q == countedQ && counted > 0)) {
		return 0, meta.Errorf(meta.PreconditionFailed, "queue '%s' in vhost '%s' not empty", name, v.name)
	}
	return v.deleteQueueLocked(q)
}

// deleteQueueLocked removes q from the metadata and the queue map and stops it. b.mu held.
func (v *VHost) deleteQueueLocked(q *Queue) (int, error) {
	if _, err := v.b.meta.DeleteQueue(v.name, q.def.Name, q.def.Owner); err != nil {
		return 0, err
	}
	next := make(map[string]*Queue, len(v.queueMap()))
	for k, e := range v.queueMap() {
		if e != q {
			next[k] = e
		}
	}
	v.queues.Store(&next)
	v.publishRouterLocked()
	n := q.delete()
	v.stopQueueGroup(q)
	// Even for a transient queue: an auto-delete exchange its bindings kept may have gone with
	// it. A change that touched no durable record writes nothing.
	return n, v.b.persistMetaLocked()
}

// deleteQueueIf deletes q if it is still the queue of that name; used by auto-delete and
// x-expires, which decide outside b.mu.
func (v *VHost) deleteQueueIf(q *Queue) {
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	if cur, ok := v.queue(q.def.Name); ok && cur == q {
		_, _ = v.deleteQueueLocked(q)
	}
}

// PurgeQueue removes a queue's ready messages and returns how many.
func (v *VHost) PurgeQueue(name string, owner uint64) (int, error) {
	q, ok := v.queue(name)
	if !ok {
		return 0, v.notFoundQueue(name)
	}
	if err := v.checkOwner(q, owner); err != nil {
		return 0, err
	}
	return q.purge(), nil
}

// Bind adds a binding from an exchange to a queue or an exchange.
func (v *VHost) Bind(b meta.BindingDef, owner uint64) error {
	b.VHost = v.name
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	if err := v.b.meta.Bind(b, owner); err != nil {
		return err
	}
	v.publishRouterLocked()
	return v.b.persistMetaLocked()
}

// Unbind removes a binding.
func (v *VHost) Unbind(b meta.BindingDef, owner uint64) error {
	b.VHost = v.name
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	if err := v.b.meta.Unbind(b, owner); err != nil {
		return err
	}
	v.publishRouterLocked()
	return v.b.persistMetaLocked()
}

// ConnectionClosed deletes the exclusive queues the connection owned.
func (v *VHost) ConnectionClosed(owner uint64) {
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	for _, q := range v.queueMap() {
		if q.def.Exclusive && q.def.Owner == owner {
			_, _ = v.deleteQueueLocked(q)
		}
	}
}

// Queue returns a queue's handle, checking exclusivity, for basic.consume and basic.get.
func (v *VHost) Queue(name string, owner uint64) (*Queue, error) {
	q, ok := v.queue(name)
	if !ok {
		return nil, v.notFoundQueue(name)
	}
	if err := v.checkOwner(q, owner); err != nil {
		return nil, err
	}
	return q, nil
}

// Confirm is called once when every queue a published message reached has accepted it (ok) or
// at least one refused it (!ok: x-overflow reject-publish). It may run on a queue's goroutine and
// must not block.
type Confirm func(ok bool)

// PublishScratch is an adapter-owned buffer reused across publishes so routing allocates nothing.
type PublishScratch struct {
	names []string
	qs    []*Queue
	// Wakes, when set, defers the wake-ups of the queues published to until Wakes.Flush,
	// which the adapter must call before it blocks (see Wakes). Nil wakes them at once.
	Wakes *Wakes
	// trackers is where the next confirm trackers come from: one allocation per
	// trackerSlabSize confirmed publishes instead of one each.
	trackers []confirmTracker
}

// trackerSlabSize is how many confirm trackers one allocation makes (PublishScratch.tracker).
const trackerSlabSize = 64

// tracker returns a fresh confirm tracker for fn waiting on n queues. A slab stays allocated
// until none of its trackers is referenced any more (each is done once its message is in
// every queue), which for a publisher with a confirm window is within a window or two.
func (s *PublishScratch) tracker(fn Confirm, n int) *confirmTracker {
	if len(s.trackers) == 0 {
		s.trackers = make([]confirmTracker, trackerSlabSize)
	}
	t := &s.trackers[0]
	s.trackers = s.trackers[1:]
	t.fn = fn
	t.pending.Store(int32(n))
	return t
}

// Queues are the queues the last Publish with this scratch reached (empty for an unroutable
// message), valid until its next Publish: a protocol adapter's flow control looks at their
// lengths (protocol/mqtt, flow.go).
func (s *PublishScratch) Queues() []*Queue { return s.qs }

// Publish routes m through its exchange and enqueues it in every queue it reaches. It reports
// whether any queue was reached (for mandatory). A missing exchange is a 404 and an internal one a
// 403 (*meta.Error), and then nothing is published and confirm is not called. When confirm is not nil it is called once with
// the outcome; for an unroutable message it is called with true before Publish returns, as
// RabbitMQ confirms unroutable messages. Publish blocks while a reached queue's inbox is full.
func (v *VHost) Publish(m *message.Message, confirm Confirm, s *PublishScratch) (routed bool, err error) {
	oneOff := s == nil
	if oneOff {
		s = &PublishScratch{}
	}
	if m.Exchange == "" && strings.HasPrefix(m.RoutingKey, DirectReplyTo+".") {
		return v.publishReplyTo(m, confirm)
	}
	r := v.router.Load()
	if err := checkPublish(r, m.Exchange, v.name); err != nil {
		return false, err
	}
	// A node that may be cut off takes no publish it could not stand by (Broker.fenced).
	if s.Wakes != nil && v.b.fenced() {
		s.Wakes.Flush() // awaitLease may wait
	}
	if err := v.b.awaitLease(); err != nil {
		return false, err
	}
	s.names = r.Route(m.Exchange, m.RoutingKey, m.Properties.Headers, s.names[:0])
	s.qs = s.qs[:0]
	qm := *v.queues.Load()
	for _, n := range s.names {
		if q, ok := qm[n]; ok {
			s.qs = append(s.qs, q)
		}
	}
	if len(s.qs) == 0 {
		if confirm != nil {
			confirm(true)
		}
		return false, nil
	}
	var t *confirmTracker
	switch {
	case confirm != nil && oneOff:
		t = &confirmTracker{fn: confirm} // no slab for a scratch that is thrown away
		t.pending.Store(int32(len(s.qs)))
	case confirm != nil:
		t = s.tracker(confirm, len(s.qs))
	}
	for _, q := range s.qs {
		q.publish(m, t, s.Wakes)
	}
	return true, nil
}

// CheckPublish reports whether a publish to exchange would be refused: 404 when it does not
// exist, 403 when it is internal.
func (v *VHost) CheckPublish(exchange string) error {
	return checkPublish(v.router.Load(), exchange, v.name)
}

func checkPublish(r *exchange.Router, name, vhost string) error {
	if name == "" {
		return nil // the default exchange always exists and is never internal
	}
	info, ok := r.Exchange(name)
	if !ok {
		return meta.Errorf(meta.NotFound, "no exchange '%s' in vhost '%s'", name, vhost)
	}
	if info.Internal {
		return meta.Errorf(meta.AccessRefused, "cannot publish to internal exchange '%s' in vhost '%s'", name, vhost)
	}
	return nil
}

// confirmTracker counts the queues yet to accept a message.
type confirmTracker struct {
	pending atomic.Int32
	refused atomic.Bool
	fn      Confirm
}

func (t *confirmTracker) done(ok bool) {
	if !ok {
		t.refused.Store(true)
	}
	if t.pending.Add(-1) == 0 {
		fn := t.fn
		t.fn = nil // nobody touches t again; its slab may outlive it (PublishScratch.tracker)
		fn(!t.refused.Load())
	}
}

// RegisterReplyTo registers a direct reply-to consumer and returns the reply-to address
// ("amq.rabbitmq.reply-to.<token>") that routes to it, and a function that unregisters it.
func (v *VHost) RegisterReplyTo(c Consumer) (address string, unregister func()) {
	token := strings.TrimPrefix(serverNamedQueue(), "amq.gen-")
	v.replyMu.Lock()
	if v.replyTo == nil {
		v.replyTo = map[string]Consumer{}
	}
	v.replyTo[token] = c
	v.replyMu.Unlock()
	return DirectReplyTo + "." + token, func() {
		v.replyMu.Lock()
		delete(v.replyTo, token)
		v.replyMu.Unlock()
	}
}

// publishReplyTo hands a reply straight to the waiting consumer; unknown tokens are unroutable.
func (v *VHost) publishReplyTo(m *message.Message, confirm Confirm) (bool, error) {
	token := strings.TrimPrefix(m.RoutingKey, DirectReplyTo+".")
	v.replyMu.RLock()
	c, ok := v.replyTo[token]
	v.replyMu.RUnlock()
	if ok {
		c.Deliver(nil, queue.Delivery{Msg: m})
	}
	if confirm != nil {
		confirm(true)
	}
	return ok, nil
}
