package broker

// Queue hosting: the side of a node that runs durable queues' processes for another node's
// proxies (remote.go), issue 7 stage 1 (DESIGN.md §5: a durable queue's process on the leader
// of its group, leaders spread over the nodes).
//
// A node that hosts queues runs a broker without metadata of its own (NewQueueHost; or the
// serving node's broker, which can host too). Asked to host a queue (rpcHost), it starts the
// queue as a restart does: AddGroup adopts its parked replica (or bootstraps the group when it
// has none), takes the group's lead and waits until every entry committed before is applied,
// so the queue starts with every confirmed message. It watches the group and stops hosting it
// when it no longer leads it (the group is parked again, with its stand-in state machine); the
// proxies hear rpcLost and re-attach wherever the group's leader is then.
//
// Sessions. A proxy talks to a hosted queue in a session, opened by rpcAttach with an epoch the
// proxy picks (it grows with each attachment). The session holds the proxy's consumers (each a
// remoteConsumer registered on the queue) and the ids of the deliveries made to them, and of
// basic.get, that are not settled yet. A session ends when the proxy attaches again, detaches,
// its node's connection is lost (cluster.RPC's OnPeerLost) or the queue stops being hosted
// here: its consumers are cancelled and its unsettled deliveries are requeued, so they come
// again, marked redelivered, to the consumers of the next session. A settlement is honoured
// only for the session it names and only for ids that session still has unsettled: an ack that
// comes late, from an earlier session or an earlier host, never settles another message (the
// queue's delivery ids restart with each process).
//
// Relay. Deliveries and cancellations go back to the proxy's node as rpcRelay notifications,
// batched per session by a sender goroutine (a Consumer's Deliver must not block). Each remote
// consumer has relayWindow deliveries of credit; the proxy gives credit back as it hands
// deliveries to its local consumers, so a slow client does not pile up deliveries in memory
// here or in flight.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/cluster"
)

// relayWindow is the credit of a remote consumer: deliveries relayed to its node and not yet
// handed to the client's consumer there.
const relayWindow = 256

// leaderCheckInterval is how often a hosted queue checks it still leads its group.
const leaderCheckInterval = 100 * time.Millisecond

// errNotHosted answers an operation on a queue this node does not run (any more).
var errNotHosted = errors.New("queue not hosted on this node")

// NewQueueHost returns a broker that holds no metadata and only runs the durable queues other
// nodes' proxies ask it to host (ServeQueues). cfg.Host must be set.
func NewQueueHost(log *zap.Logger, cfg Config) (*Broker, error) {
	if cfg.Host == nil {
		return nil, errors.New("queue host: Config.Host not set")
	}
	host := cfg.Host
	cfg.Host = nil // New must not recover metadata: this broker has none of its own
	b, err := New(log, cfg)
	if err != nil {
		return nil, err
	}
	b.cfg.Host = host
	b.hostOnly = true
	return b, nil
}

// queueServer is a broker's hosting side: hosted queues by group, and the proxies' sessions.
type queueServer struct {
	b   *Broker
	rpc *cluster.RPC

	mu       sync.Mutex
	hosted   map[uint64]*Queue
	sessions map[sessionKey]*hostSession
}

type sessionKey struct{ peer, group uint64 }

type hostSession struct {
	srv   *queueServer
	key   sessionKey
	epoch uint64
	q     *Queue

	mu        sync.Mutex
	ended     bool
	consumers map[queue.ConsumerID]*remoteConsumer
	unacked   map[queue.DeliveryID]struct{}
	out       wbuf // relay items not sent yet
	items     int
	sending   bool
}

// remoteConsumer is a proxy's consumer, registered on the hosted queue.
type remoteConsumer struct {
	s      *hostSession
	local  uint64
	noAck  bool
	credit atomic.Int64
}

// ServeQueues makes b host durable queues for the proxies of other nodes, over r.
func (b *Broker) ServeQueues(r *cluster.RPC) {
	s := &queueServer{b: b, rpc: r, hosted: map[uint64]*Queue{}, sessions: map[sessionKey]*hostSession{}}
	b.server = s
	r.Handle(rpcHost, s.handleHost)
	r.Handle(rpcAttach, s.handleAttach)
	r.Handle(rpcPublish, s.handlePublish)
	r.Handle(rpcConsume, s.handleConsume)
	r.Handle(rpcCancel, s.handleCancel)
	r.Handle(rpcSettle, s.handleSettle)
	r.Handle(rpcGet, s.handleGet)
	r.Handle(rpcPurge, s.handlePurge)
	r.Handle(rpcDelete, s.handleDelete)
	r.Handle(rpcStat, s.handleStat)
	r.Handle(rpcCredit, s.handleCredit)
	r.Handle(rpcDetach, s.handleDetach)
	r.OnPeerLost(s.peerLost)
}

// HostedGroups lists the groups of the queues this node runs for proxies.
func (b *Broker) HostedGroups() []uint64 {
	if b.server == nil {
		return nil
	}
	b.server.mu.Lock()
	defer b.server.mu.Unlock()
	out := make([]uint64, 0, len(b.server.hosted))
	for g := range b.server.hosted {
		out = append(out, g)
	}
	return out
}

func (s *queueServer) queue(group uint64) *Queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hosted[group]
}

// host starts (or finds) the queue of def; see the file comment.
func (s *queueServer) host(ctx context.Context, def meta.QueueDef, voters []uint64) error {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.queue(def.Group) != nil {
		return nil
	}
	if !b.meta.HasVHost(def.VHost) {
		if err := b.meta.AddVHost(def.VHost); err != nil {
			return fmt.Errorf("host queue %q: %w", def.Name, err)
		}
		b.syncVHostsLocked()
	}
	v, _ := b.VHost(def.VHost)
	if b.cfg.Host.Group(def.Group) == nil {
		// A replica first, so AddGroup adopts it: adopting is what takes the group's lead
		// and waits until every committed entry is applied (a new group's AddGroup would
		// not wait to lead it).
		if _, err := b.cfg.Host.AddReplicaWith(ctx, def.Group, QueueStandIn(), voters); err != nil && !errors.Is(err, cluster.ErrGroupExists) {
			return fmt.Errorf("host queue %q: %w", def.Name, err)
		}
	}
	q, err := v.startQueue(ctx, def)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.hosted[def.Group] = q
	s.mu.Unlock()
	b.log.Info("hosting queue", zap.String("queue", def.Name), zap.Uint64("group", def.Group))
	go s.watch(q)
	return nil
}

// watch stops hosting q when this node no longer leads its group, or when q is gone.
func (s *queueServer) watch(q *Queue) {
	t := time.NewTicker(leaderCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-q.done:
			s.unhost(q, false)
			return
		case <-t.C:
		}
		if !q.group.IsLeader() {
			s.b.log.Info("no longer the leader of a hosted queue's group; parking it",
				zap.String("queue", q.def.Name), zap.Uint64("group", q.group.ID()))
			s.unhost(q, true)
			return
		}
	}
}

// unhost ends q's sessions (telling their proxies) and, park, stops q and parks its group.
func (s *queueServer) unhost(q *Queue, park bool) {
	group := q.group.ID()
	s.mu.Lock()
	if s.hosted[group] == q {
		delete(s.hosted, group)
	}
	ended := s.takeSessionsLocked(func(_ sessionKey, hs *hostSession) bool { return hs.q == q })
	s.mu.Unlock()
	for _, hs := range ended {
		hs.end()
		w := wbuf{}
		w.uint(group)
		w.uint(hs.epoch)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.rpc.Notify(ctx, hs.key.peer, rpcLost, w.b)
		cancel()
	}
	if !park {
		return
	}
	q.call(command{kind: cmdDelete, silent: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.b.cfg.Host.Park(ctx, group, QueueStandIn()); err != nil {
		s.b.log.Warn("parking a queue's group failed", zap.Uint64("group", group), zap.Error(err))
	}
}

// session returns the current session of peer for group if its epoch is epoch.
func (s *queueServer) session(peer, group, epoch uint64) *hostSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := s.sessions[sessionKey{peer, group}]
	if hs == nil || hs.epoch != epoch {
		return nil
	}
	return hs
}

func (s *queueServer) peerLost(peer uint64) {
	s.mu.Lock()
	ended := s.takeSessionsLocked(func(k sessionKey, _ *hostSession) bool { return k.peer == peer })
	s.mu.Unlock()
	for _, hs := range ended {
		hs.end()
	}
}

// takeSessionsLocked removes the sessions match selects and returns them. s.mu is held.
func (s *queueServer) takeSessionsLocked(match func(sessionKey, *hostSession) bool) []*hostSession {
	var taken []*hostSession
	for k, hs := range s.sessions {
		if match(k, hs) {
			taken = append(taken, hs)
			delete(s.sessions, k)
		}
	}
	return taken
}

// end cancels the session's consumers and requeues what it left unsettled.
func (hs *hostSession) end() {
	hs.mu.Lock()
	if hs.ended {
		hs.mu.Unlock()
		return
	}
	hs.ended = true
	cs := hs.consumers
	hs.consumers = nil
	ids := make([]queue.DeliveryID, 0, len(hs.unacked))
	for id := range hs.unacked {
		ids = append(ids, id)
	}
	hs.unacked = nil
	hs.mu.Unlock()
	for id := range cs {
		hs.q.Cancel(id)
	}
	if len(ids) > 0 {
		hs.q.Settle(ids, queue.Requeue)
	}
}

func (s *queueServer) handleHost(ctx context.Context, _ uint64, body []byte, reply func([]byte, error)) {
	def, voters, err := decodeHost(body)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = s.host(ctx, def, voters)
		cancel()
	}
	reply(nil, err)
}

func (s *queueServer) handleAttach(_ context.Context, from uint64, body []byte, reply func([]byte, error)) {
	r := newReader(body)
	group, epoch := r.Uint(), r.Uint()
	q := s.hostedQueue(r, group, reply)
	if q == nil {
		return
	}
	hs := &hostSession{srv: s, key: sessionKey{from, group}, epoch: epoch, q: q,
		consumers: map[queue.ConsumerID]*remoteConsumer{}, unacked: map[queue.DeliveryID]struct{}{}}
	s.mu.Lock()
	old := s.sessions[hs.key]
	s.sessions[hs.key] = hs
	s.mu.Unlock()
	if old != nil {
		old.end()
	}
	w := wbuf{}
	w.uint(uint64(q.Len()))
	reply(w.b, nil)
}

func (s *queueServer) handlePublish(_ context.Context, _ uint64, body []byte, reply func([]byte, error)) {
	r := newReader(body)
	group := r.Uint()
	m := readMsg(r)
	q := s.hostedQueue(r, group, reply)
	if q == nil {
		return
	}
	t := &confirmTracker{fn: func(ok bool) {
		w := wbuf{}
		w.bool(ok)
		w.uint(uint64(q.Len()))
		reply(w.b, nil)
	}}
	t.pending.Store(1)
	q.publish(m, t, nil)
}

func (s *queueServer) handleConsume(_ context.Context, from uint64, body []byte, reply func([]byte, error)) {
	r := newReader(body)
	group, epoch, local := r.Uint(), r.Uint(), r.Uint()
	o := ConsumeOptions{Prefetch: uint32(r.Uint()), NoAck: readBool(r), Exclusive: readBool(r), Priority: int32(r.Int())}
	if r.Err() != nil {
		reply(nil, r.Err())
		return
	}
	hs := s.session(from, group, epoch)
	if hs == nil {
		reply(nil, errNotHosted)
		return
	}
	rc := &remoteConsumer{s: hs, local: local, noAck: o.NoAck}
	rc.credit.Store(relayWindow)
	id, err := hs.q.Consume(o, rc)
	w := wbuf{}
	if err != nil {
		encodeErr(&w, err)
		reply(w.b, nil)
		return
	}
	hs.mu.Lock()
	ended := hs.ended
	if !ended {
		hs.consumers[id] = rc
	}
	hs.mu.Unlock()
	if ended {
		hs.q.Cancel(id)
		reply(nil, errNotHosted)
		return
	}
	w.b = append(w.b, statusOK)
	w.uint(uint64(id))
	reply(w.b, nil)
}

func (s *queueServer) handleCancel(_ context.Context, from uint64, body []byte, reply func([]byte, error)) {
	r := newReader(body)
	group, epoch, id := r.Uint(), r.Uint(), queue.ConsumerID(r.Uint())
	if r.Err() != nil {
		reply(nil, r.Err())
		return
	}
	if hs := s.session(from, group, epoch); hs != nil {
		hs.mu.Lock()
		_, ok := hs.consumers[id]
		delete(hs.consumers, id)
		hs.mu.Unlock()
		if ok {
			hs.q.Cancel(id)
		}
	}
	reply(nil, nil)
}

func (s *queueServer) handleSettle(_ context.Context, from uint64, body []byte, _ func([]byte, error)) {
	r := newReader(body)
	group, epoch, o := r.Uint(), r.Uint(), queue.Outcome(r.U8())
	n := r.Count()
	ids := make([]queue.DeliveryID, 0, n)
	for range n {
		ids = append(ids, queue.DeliveryID(r.Uint()))
	}
	if r.Err() != nil || o > queue.Discard {
		s.b.log.Warn("bad settlement from a peer; ignored", zap.Uint64("peer", from))
		return
	}
	hs := s.session(from, group, epoch)
	if hs == nil {
		return // a settlement of an ended session: its deliveries were requeued
	}
	hs.mu.Lock()
	if hs.ended {
		hs.mu.Unlock()
		return
	}
	keep := ids[:0]
	for _, id := range ids {
		if _, ok := hs.unacked[id]; ok {
			delete(hs.unacked, id)
			keep = append(keep, id)
		}
	}
	hs.mu.Unlock()
	if len(keep) > 0 {
		hs.q.Settle(keep, o)
	}
}

func (s *queueServer) handleGet(_ context.Context, from uint64, body []byte, reply func([]byte, error)) {
	r := newReader(body)
	group, epoch, noAck := r.Uint(), r.Uint(), readBool(r)
	if r.Err() != nil {
		reply(nil, r.Err())
		return
	}
	hs := s.session(from, group, epoch)
	if hs == nil || !hs.q.group.IsLeader() {
		reply(nil, errNotHosted) // see hostedQueue
		return
	}
	d, remaining, ok := hs.q.Get(noAck)
	w := wbuf{}
	w.bool(ok)
	w.uint(uint64(remaining))
	if ok {
		if !noAck {
			hs.mu.Lock()
			if hs.ended {
				ok = false
			} else {
				hs.unacked[d.ID] = struct{}{}
			}
			hs.mu.Unlock()
			if !ok {
				hs.q.Settle([]queue.DeliveryID{d.ID}, queue.Requeue)
				reply(nil, errNotHosted)
				return
			}
		}
		if err := appendDelivery(&w, 0, d); err != nil {
			reply(nil, err)
			return
		}
	}
	reply(w.b, nil)
}

func (s *queueServer) handlePurge(_ context.Context, _ uint64, body []byte, reply func([]byte, error)) {
	s.withQueue(body, reply, func(q *Queue) uint64 { return uint64(q.purge()) })
}

func (s *queueServer) handleStat(_ context.Context, _ uint64, body []byte, reply func([]byte, error)) {
	s.withQueue(body, reply, func(q *Queue) uint64 { return uint64(q.Len()) })
}

func (s *queueServer) handleDelete(_ context.Context, _ uint64, body []byte, reply func([]byte, error)) {
	s.withQueue(body, reply, func(q *Queue) uint64 {
		n := q.delete()
		s.unhost(q, false)
		return uint64(n)
	})
}

// withQueue answers a call on a queue with a number fn computes.
func (s *queueServer) withQueue(body []byte, reply func([]byte, error), fn func(*Queue) uint64) {
	r := newReader(body)
	group := r.Uint()
	q := s.hostedQueue(r, group, reply)
	if q == nil {
		return
	}
	w := wbuf{}
	w.uint(fn(q))
	reply(w.b, nil)
}

// hostedQueue returns the queue of group that this node hosts, after the call's body was read
// by r; if r failed or the queue is not hosted here, it answers the call and returns nil.
func (s *queueServer) hostedQueue(r *message.BinaryReader, group uint64, reply func([]byte, error)) *Queue {
	if r.Err() != nil {
		reply(nil, r.Err())
		return nil
	}
	q := s.queue(group)
	if q == nil || !q.group.IsLeader() {
		// Not here, or no longer leading its group (the watch parks it shortly): this node
		// must not answer for it (Queue.fenced), and the proxy tries the group's new leader.
		reply(nil, errNotHosted)
		return nil
	}
	return q
}

func (s *queueServer) handleCredit(_ context.Context, from uint64, body []byte, _ func([]byte, error)) {
	r := newReader(body)
	group, epoch, id, n := r.Uint(), r.Uint(), queue.ConsumerID(r.Uint()), r.Uint()
	if r.Err() != nil || n > relayWindow {
		return
	}
	hs := s.session(from, group, epoch)
	if hs == nil {
		return
	}
	hs.mu.Lock()
	rc := hs.consumers[id]
	hs.mu.Unlock()
	if rc != nil {
		rc.credit.Add(int64(n))
		hs.q.Kick()
	}
}

func (s *queueServer) handleDetach(_ context.Context, from uint64, body []byte, _ func([]byte, error)) {
	r := newReader(body)
	group, epoch := r.Uint(), r.Uint()
	if r.Err() != nil {
		return
	}
	s.mu.Lock()
	hs := s.sessions[sessionKey{from, group}]
	if hs != nil && hs.epoch == epoch {
		delete(s.sessions, hs.key)
	} else {
		hs = nil
	}
	s.mu.Unlock()
	if hs != nil {
		hs.end()
	}
}

// Deliver implements Consumer: the delivery is queued for relay (never blocks).
func (rc *remoteConsumer) Deliver(q *Queue, d queue.Delivery) {
	hs := rc.s
	hs.mu.Lock()
	if hs.ended {
		hs.mu.Unlock()
		if !rc.noAck {
			// The session ended between Allow and Deliver: the message goes back. Not from
			// this goroutine, which is the queue's own and must not wait on its inbox.
			go q.Settle([]queue.DeliveryID{d.ID}, queue.Requeue)
		}
		return
	}
	if !rc.noAck {
		hs.unacked[d.ID] = struct{}{}
	}
	if err := appendDelivery(hs.relayBuf(), rc.local, d); err != nil {
		hs.srv.b.log.Error("delivery not encodable for relay", zap.Error(err))
	}
	hs.items++
	hs.kickSenderLocked()
	hs.mu.Unlock()
}

// Allow implements Consumer: the relay credit. It takes one unit when it says yes: the queue
// asks Allow for each message it hands out in a drain round and calls Deliver for them all
// after the round, so a credit only read here let a round hand out more than the window (the
// credit went below zero and stayed there, as the proxy gives back only what it relayed: the
// consumer stalled for good, TestRemoteQueueRelayCredit).
func (rc *remoteConsumer) Allow() bool {
	for {
		n := rc.credit.Load()
		if n <= 0 {
			return false
		}
		if rc.credit.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// Cancelled implements Consumer: the proxy's consumer hears it after its deliveries.
func (rc *remoteConsumer) Cancelled(*Queue) {
	hs := rc.s
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.ended {
		return
	}
	w := hs.relayBuf()
	w.b = append(w.b, relayCancelled)
	w.uint(rc.local)
	hs.items++
	hs.kickSenderLocked()
}

// relayBuf is the pending relay batch, started with its header. hs.mu held.
func (hs *hostSession) relayBuf() *wbuf {
	if len(hs.out.b) == 0 {
		hs.out.uint(hs.key.group)
		hs.out.uint(hs.epoch)
	}
	return &hs.out
}

func (hs *hostSession) kickSenderLocked() {
	if !hs.sending {
		hs.sending = true
		go hs.send()
	}
}

// send relays the pending batches until there are none.
func (hs *hostSession) send() {
	for {
		hs.mu.Lock()
		if hs.items == 0 {
			hs.sending = false
			hs.mu.Unlock()
			return
		}
		batch := hs.out.b
		hs.out.b, hs.items = nil, 0
		hs.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := hs.srv.rpc.Notify(ctx, hs.key.peer, rpcRelay, batch)
		cancel()
		if err != nil {
			// The proxy's node is gone: PeerLost ends the session and requeues.
			hs.srv.b.log.Debug("relay to a proxy failed", zap.Uint64("peer", hs.key.peer), zap.Error(err))
		}
	}
}
