package broker

// Remote queues: the proxy side of spread queues, issue 7 (see queuehost.go for the host side
// and rebalance.go for moving queues back to their placement).
//
// With Config.Spread set, a durable queue that can be spread (spreadable) is placed at declare
// on the member that is the placement of the fewest queues (placeNew), and the placement is
// recorded with the queue in group 0 (meta.QueueDef.Place; DESIGN.md §5: "placement lives in
// group 0"), so every node and every restart of the serving node agree on it. When that node
// is this one the queue is local, as without Spread. Otherwise this node keeps a parked replica
// of the queue's group (it is still one of its voters) and the *Queue in the vhost is a proxy:
// the same handle, whose every operation is forwarded to the hosting node over the cluster's
// RPC channel, and whose consumers get the deliveries the host relays back. Adapters cannot
// tell the difference. A queue declared before placements were recorded has none: it runs on
// the node that leads its group.
//
// Publisher confirms: the host answers a forwarded publish only once the queue has taken the
// message, that is once its enqueue entry has committed (fsynced on a majority), so a confirm
// means what it means for a local queue. A publish sent whose answer is lost with the
// connection to the host is nacked (it may have been enqueued: sending it again could enqueue
// it twice); one that was not sent, or that the host answered it no longer runs the queue,
// waits for the next host and goes on there, in the publisher's order (remotepub.go).
//
// Failover: when the host's node is lost, or it stops leading the group (rpcLost), the proxy
// re-attaches: it asks a node to host the queue (the group's new leader, as this node's
// replica sees it, or another voter, which then takes the lead) and opens a new session there
// with a larger epoch, registering its consumers again. The consumers stay attached
// throughout (as RabbitMQ's quorum queues keep theirs across a leader change). Deliveries the
// ended session left unacked are requeued by the host that made them, or, if that host died,
// come back from the log as the new host's live messages; either way they are delivered again
// marked redelivered. A move to the queue's placement (rebalance.go) is the same, started by
// this node: it detaches the session first (move).
//
// Delivery ids: the id an adapter sees is the host's id tagged with the session's epoch
// (epoch<<epochShift | host id). A settlement with an id of an earlier epoch is dropped, never
// sent: its message was requeued when that session ended and will be (or was) delivered again
// under a new id. So an ack made stale by a failover can never settle a different message (the
// new host's ids start again from 1). The host also checks every id against the session's
// unsettled set.
//
// Operations while no host is attached (a failover or a move in progress) wait for the
// re-attachment, bounded by attachWait (10 s: the client's connection waits meanwhile, and its
// heartbeats with it), and fail at once when this node cannot reach a majority of the members
// (no group can elect a host then); a publish that fails is nacked, a consume fails with an
// internal error, and a basic.get fails with RabbitMQ's channel error for a durable queue whose
// home node is down (404, Queue.Fetch): never basic.get-empty for a queue that may hold
// messages. Fence: a deposed serving node's proxies hand nothing to their consumers (see
// deliver), and a queue host delivers only while it leads the queue's group (Queue.fenced).
//
// What stays local (spreadable): exclusive and auto-delete queues live and die with their
// connection (or their last consumer's), which is on this node: spreading them would only add
// a hop and a remote deletion racing the connection's close. x-expires queues and queues with
// a dead-letter exchange are spread: their hosts hand dead letters and expiry back to this
// node, which has the routing and the metadata (remotedead.go). MQTT session queues keep
// state records (mqtt_session.go) that a proxy does not forward. Not covered either: LogMarks
// and FindPublished (the MQTT adapter's exactly-once QoS 2 across a crash) skip a remote
// queue, which has no log here, so after a crash of the serving node such a publish may be
// completed twice in a remote queue.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/cluster"
)

// Spread configures spread queues (issue 7): durable queues' processes on other nodes.
type Spread struct {
	// RPC is this node's endpoint of the cluster's RPC channel.
	RPC *cluster.RPC
	// Nodes lists the nodes queues may be placed on, this one included: the cluster's voters.
	Nodes func() []uint64
	// Reachable reports whether this node is connected to node (nil: every node is). The
	// rebalancer moves a queue back to its placement only once that node is reachable, and an
	// operation fails at once when too few of the queue's voters are (no majority to elect a
	// host).
	Reachable func(node uint64) bool
}

const (
	// epochShift: a proxy's delivery id is epoch<<epochShift | the host's id.
	epochShift = 40
	hostIDMask = 1<<epochShift - 1
	// attachWait bounds how long an operation waits for a host to be attached.
	attachWait = 10 * time.Second
	// callTimeout bounds one forwarded call.
	callTimeout = 30 * time.Second
)

// spreadable says whether def's process may run on another node (see the file comment).
func spreadable(def meta.QueueDef) bool {
	// Exclusive and auto-delete queues die with their connection (or last consumer), which is
	// on this node: they stay here. A partition's queues run where the partition's state
	// machine does.
	if !def.Durable || def.Exclusive || def.AutoDelete || def.Partition != 0 {
		return false
	}
	// The MQTT adapter's session and shared-subscription queues keep state records
	// (mqtt_session.go), which a proxy does not forward.
	if strings.HasPrefix(def.Name, "mqtt.") {
		return false
	}
	return true
}

// proxies is the broker's registry of remote queues, by group.
type proxies struct {
	mu    sync.Mutex
	byGrp map[uint64]*remoteQueue
	next  int // round robin
	wired bool
}

// placeNew picks the node for a new queue: the member that is the placement of the fewest
// spread queues (a node that joined, or had none, catches up), ties broken round robin. b.mu
// held (it reads the metadata).
func (b *Broker) placeNew() uint64 {
	nodes := b.cfg.Spread.Nodes()
	if len(nodes) == 0 {
		return b.cfg.Host.NodeID()
	}
	load := map[uint64]int{}
	for _, vh := range b.meta.VHosts() {
		for _, def := range b.meta.Queues(vh) {
			if def.Place != 0 {
				load[def.Place]++
			}
		}
	}
	p := &b.proxies
	p.mu.Lock()
	defer p.mu.Unlock()
	best, bestLoad := uint64(0), -1
	for i := range nodes {
		n := nodes[(p.next+i)%len(nodes)]
		if bestLoad < 0 || load[n] < bestLoad {
			best, bestLoad = n, load[n]
		}
	}
	p.next++
	return best
}

// isMember reports whether node is one of the nodes queues may be placed on.
func (b *Broker) isMember(node uint64) bool {
	return slices.Contains(b.cfg.Spread.Nodes(), node)
}

// reachable reports whether this node is connected to node (itself included).
func (b *Broker) reachable(node uint64) bool {
	if node == b.cfg.Host.NodeID() || b.cfg.Spread.Reachable == nil {
		return true
	}
	return b.cfg.Spread.Reachable(node)
}

// quorum reports whether a majority of the members is reachable from here: without one no
// queue's group can elect a leader, so an operation waiting for a host fails at once.
func (b *Broker) quorum() bool {
	nodes := b.cfg.Spread.Nodes()
	n := 0
	for _, id := range nodes {
		if b.reachable(id) {
			n++
		}
	}
	return n > len(nodes)/2
}

// placement returns the node that should run def's process: the placement recorded in its
// metadata (QueueDef.Place) while that node is a member, even when it is down (the proxy then
// runs the queue on another voter until the rebalancer moves it back). A queue without one
// (declared before placements were recorded, or placed on a node that left) goes by its
// group: its leader (0: none known yet, then this node's choice); else round robin.
func (b *Broker) placement(def meta.QueueDef) uint64 {
	if def.Place != 0 && b.isMember(def.Place) {
		return def.Place
	}
	if g := b.cfg.Host.Group(queueGroup(def)); g != nil {
		if l := g.Leader(); l != 0 {
			return l
		}
	} else if stored, err := b.cfg.Host.StoredGroups(); err == nil {
		for _, id := range stored {
			if id == queueGroup(def) {
				return b.cfg.Host.NodeID() // recovering our own data: lead it
			}
		}
	}
	return b.placeNew()
}

// wireProxiesLocked registers the proxy side's RPC handlers once. b.mu held.
func (b *Broker) wireProxiesLocked() {
	p := &b.proxies
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wired {
		return
	}
	p.wired = true
	p.byGrp = map[uint64]*remoteQueue{}
	r := b.cfg.Spread.RPC
	r.Handle(rpcRelay, b.handleRelay)
	r.Handle(rpcLost, b.handleLost)
	r.Handle(rpcDead, b.handleDead)
	r.Handle(rpcExpired, b.handleExpired)
	r.OnPeerLost(func(peer uint64) {
		for _, rq := range b.proxyList() {
			rq.hostLost(peer, 0)
		}
	})
}

func (b *Broker) proxyList() []*remoteQueue {
	b.proxies.mu.Lock()
	defer b.proxies.mu.Unlock()
	out := make([]*remoteQueue, 0, len(b.proxies.byGrp))
	for _, rq := range b.proxies.byGrp {
		out = append(out, rq)
	}
	return out
}

func (b *Broker) proxy(group uint64) *remoteQueue {
	b.proxies.mu.Lock()
	defer b.proxies.mu.Unlock()
	return b.proxies.byGrp[group]
}

// startRemote starts the proxy of def, hosted on node target. b.mu held.
func (v *VHost) startRemote(ctx context.Context, def meta.QueueDef, cfg queue.Config, target uint64) (*Queue, error) {
	b := v.b
	b.wireProxiesLocked()
	host := b.cfg.Host
	gid := queueGroup(def)
	g := host.Group(gid)
	var voters []uint64 // a new group's: the host bootstraps its copy with the same voters
	if g == nil {
		voters = host.BootstrapVoters()
		var err error
		if g, err = host.AddReplicaWith(ctx, gid, QueueStandIn(), voters); err != nil {
			return nil, meta.Errorf(meta.InternalError, "cannot start queue '%s' in vhost '%s': %v", def.Name, v.name, err)
		}
	}
	q := &Queue{v: v, def: def, cfg: cfg, done: make(chan struct{}), group: g}
	rq := &remoteQueue{
		q: q, b: b, rpc: b.cfg.Spread.RPC, group: gid, self: host.NodeID(),
		consumers: map[queue.ConsumerID]*proxyConsumer{},
		attachedc: make(chan struct{}),
		wake:      make(chan struct{}, 1),
		stopc:     make(chan struct{}),
	}
	rq.ctx, rq.ctxCancel = context.WithCancel(context.Background())
	rq.target.Store(target)
	rq.place.Store(def.Place)
	q.remote = rq
	b.proxies.mu.Lock()
	b.proxies.byGrp[gid] = rq
	b.proxies.mu.Unlock()
	// Attached by run, not here: a new group has a leader only once a majority of its voters
	// run it, and the other nodes start their copies when they apply the metadata entry the
	// declaration writes after this returns (with four voters or more, the host and this node
	// are no majority); and a serving node recovering many queues must not wait for each.
	// Operations wait for the attachment meanwhile (session).
	rq.needAttach = true
	rq.bootVoters = voters
	rq.pub.init()
	go rq.run()
	go rq.resendPubs()
	rq.poke()
	return q, nil
}

// remoteQueue is the proxy state of a *Queue whose process runs on another node.
type remoteQueue struct {
	q     *Queue
	b     *Broker
	rpc   *cluster.RPC
	group uint64
	self  uint64
	// target is where the proxy attaches when the group has no leader to go to: the queue's
	// placement, or the node chosen when it had none. place is the placement as recorded in
	// group 0 (QueueDef.Place; 0: none), which the rebalancer moves the queue to and may change
	// (reshare, rebalance.go).
	target atomic.Uint64
	place  atomic.Uint64

	ready atomic.Int64 // the host's ready count, as last heard

	// dmu is held while deliveries are handed to consumers, so Cancel can wait them out.
	dmu sync.Mutex

	mu         sync.Mutex
	host       uint64
	epoch      uint64
	attached   bool
	attachedc  chan struct{} // closed while attached
	needAttach bool
	stopped    bool
	// moveTo is the node the rebalancer moves the queue to (0: none): the next attachment
	// goes there rather than to the group's leader.
	moveTo uint64
	// bootVoters: a new group's voters, for its first host (encodeHost); nil once attached.
	bootVoters []uint64
	consumers  map[queue.ConsumerID]*proxyConsumer
	incoming   [][]byte // relay batches of the current epoch, not yet handled
	pub        pubOrder // forwarded publishes (remotepub.go); its own locks
	wake       chan struct{}
	stopc      chan struct{}
	// ctx ends when the proxy stops: an attachment in flight (its host may be adopting a
	// group that the queue's deletion removes) is abandoned.
	ctx       context.Context
	ctxCancel context.CancelFunc
}

type proxyConsumer struct {
	id        queue.ConsumerID
	c         Consumer
	o         ConsumeOptions
	hostID    queue.ConsumerID
	hostEpoch uint64
	cancelled bool
	// Owned by the run goroutine.
	waiting []queue.Delivery
	credit  uint64
}

func (rq *remoteQueue) poke() {
	select {
	case rq.wake <- struct{}{}:
	default:
	}
}

// pickHost chooses where to (re)attach: the group's leader as this node's replica sees it,
// unless that is this node or the node avoid (the host just lost, or the last one that could
// not be reached: a dead leader stays "the leader" here until the group elects another); else
// the node it was placed on; else the next other member after avoid. A node asked to host the
// queue takes the group's lead, also from this node (a proxy never turns into a local queue).
//
// A node that is no member any more (it left: parleyctl cluster leave) is never picked: it
// cannot take the lead of a group it was removed from, and the call would wait callTimeout.
func (rq *remoteQueue) pickHost(avoid uint64) uint64 {
	nodes := rq.b.cfg.Spread.Nodes()
	ok := func(n uint64) bool { return n != 0 && n != rq.self && n != avoid && slices.Contains(nodes, n) }
	if l := rq.q.group.Leader(); ok(l) {
		return l
	}
	if t := rq.target.Load(); ok(t) {
		return t
	}
	start := slices.Index(nodes, avoid) + 1
	for i := range nodes {
		if n := nodes[(start+i)%len(nodes)]; ok(n) {
			return n
		}
	}
	return 0
}

// attach makes target host the queue and opens a new session there. voters: see encodeHost.
func (rq *remoteQueue) attach(ctx context.Context, target uint64, voters []uint64) error {
	def, err := encodeHost(rq.q.def, voters)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := rq.rpc.Call(cctx, target, rpcHost, def); err != nil {
		return err
	}
	rq.mu.Lock()
	epoch := rq.epoch + 1
	rq.mu.Unlock()
	w := wbuf{}
	w.uint(rq.group)
	w.uint(epoch)
	rep, err := rq.rpc.Call(cctx, target, rpcAttach, w.b)
	if err != nil {
		return err
	}
	r := newReader(rep)
	rq.ready.Store(int64(r.Uint()))
	rq.mu.Lock()
	if rq.stopped {
		rq.mu.Unlock()
		return errors.New("queue stopped")
	}
	rq.host, rq.epoch, rq.attached, rq.needAttach = target, epoch, true, false
	rq.incoming = nil
	cs := make([]*proxyConsumer, 0, len(rq.consumers))
	for _, pc := range rq.consumers {
		if !pc.cancelled {
			cs = append(cs, pc)
		}
	}
	close(rq.attachedc)
	rq.mu.Unlock()
	for _, pc := range cs {
		if err := rq.register(cctx, pc, target, epoch); err != nil {
			rq.b.log.Warn("consumer not registered again at the queue's new host",
				zap.String("queue", rq.q.def.Name), zap.Error(err))
		}
	}
	rq.b.log.Info("queue attached to its host", zap.String("queue", rq.q.def.Name),
		zap.Uint64("node", target), zap.Uint64("epoch", epoch))
	return nil
}

// register registers pc at the host of epoch.
func (rq *remoteQueue) register(ctx context.Context, pc *proxyConsumer, host, epoch uint64) error {
	w := wbuf{}
	w.uint(rq.group)
	w.uint(epoch)
	w.uint(uint64(pc.id))
	w.uint(uint64(pc.o.Prefetch))
	w.bool(pc.o.NoAck)
	w.bool(pc.o.Exclusive)
	w.int(int64(pc.o.Priority))
	rep, err := rq.rpc.Call(ctx, host, rpcConsume, w.b)
	if err != nil {
		rq.failed(epoch, err)
		return meta.Errorf(meta.InternalError, "queue '%s': its node did not answer: %v", rq.q.def.Name, err)
	}
	r := newReader(rep)
	if r.U8() != statusOK {
		return decodeErr(r)
	}
	id := queue.ConsumerID(r.Uint())
	if r.Err() != nil {
		return meta.Errorf(meta.InternalError, "queue '%s': bad reply from its node", rq.q.def.Name)
	}
	rq.mu.Lock()
	pc.hostID, pc.hostEpoch = id, epoch
	rq.mu.Unlock()
	return nil
}

// failed handles an error of a call made in epoch: a lost host means re-attaching.
func (rq *remoteQueue) failed(epoch uint64, err error) {
	var re *cluster.RemoteError
	if errors.Is(err, cluster.ErrPeerLost) || errors.Is(err, cluster.ErrPeerUnavailable) ||
		(errors.As(err, &re) && re.Msg == errNotHosted.Error()) {
		rq.hostLost(0, epoch)
	}
}

// hostLost detaches the proxy when its host is node peer (0: any) or its session is epoch
// (0: any), and lets run re-attach.
func (rq *remoteQueue) hostLost(peer, epoch uint64) {
	rq.mu.Lock()
	if !rq.attached || (peer != 0 && rq.host != peer) || (epoch != 0 && rq.epoch != epoch) {
		rq.mu.Unlock()
		return
	}
	rq.attached, rq.needAttach = false, true
	rq.attachedc = make(chan struct{})
	rq.incoming = nil
	host := rq.host
	rq.mu.Unlock()
	rq.b.log.Info("queue's host lost; re-attaching", zap.String("queue", rq.q.def.Name), zap.Uint64("node", host))
	rq.poke()
}

// session waits until a host is attached, at most until deadline, and returns it and the
// epoch. It gives up at once when too few members are reachable for the queue's group to have
// a leader (no majority): waiting could only end in the same failure, attachWait later, and
// each operation of the connection would wait in turn.
func (rq *remoteQueue) session(deadline time.Time) (host, epoch uint64, ok bool) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		rq.mu.Lock()
		if rq.stopped {
			rq.mu.Unlock()
			return 0, 0, false
		}
		if rq.attached {
			host, epoch = rq.host, rq.epoch
			rq.mu.Unlock()
			return host, epoch, true
		}
		c := rq.attachedc
		rq.mu.Unlock()
		if !rq.b.quorum() {
			return 0, 0, false
		}
		select {
		case <-c:
		case <-tick.C:
		case <-rq.stopc:
			return 0, 0, false
		case <-timer.C:
			return 0, 0, false
		}
	}
}

// move makes the queue's next host node to, where its placement is (the rebalancer's
// request): the current session is detached, which at the host cancels its consumers there
// and requeues what they held unacked, and run attaches to node to, which takes the group's
// lead (its copy has every committed entry before it serves: a confirmed message is never
// lost). The consumers stay attached here, registered again at the new host; the messages
// they held unacked come again redelivered, and their old delivery ids are of the ended epoch
// (dropped, see Settle). Operations meanwhile wait for the new session, as on a failover.
func (rq *remoteQueue) move(to uint64) bool {
	rq.mu.Lock()
	if !rq.attached || rq.stopped || rq.host == to || rq.moveTo != 0 {
		rq.mu.Unlock()
		return false
	}
	host, epoch := rq.host, rq.epoch
	rq.attached, rq.needAttach, rq.moveTo = false, true, to
	rq.attachedc = make(chan struct{})
	rq.incoming = nil
	rq.mu.Unlock()
	w := wbuf{}
	w.uint(rq.group)
	w.uint(epoch)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = rq.rpc.Notify(ctx, host, rpcDetach, w.b) // lost: the host ends the session when it parks
	cancel()
	rq.b.log.Info("moving queue to its placement", zap.String("queue", rq.q.def.Name),
		zap.Uint64("from", host), zap.Uint64("to", to))
	rq.poke()
	return true
}

// run re-attaches when needed and hands relayed deliveries to the consumers.
func (rq *remoteQueue) run() {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	var avoid uint64 // the host lost, or the last node that could not be reached
	for {
		select {
		case <-rq.wake:
		case <-retry.C:
		case <-rq.stopc:
			return
		}
		rq.mu.Lock()
		need := rq.needAttach && !rq.stopped
		moveTo := rq.moveTo
		if need && rq.host != 0 && avoid == 0 && moveTo == 0 {
			avoid = rq.host
		}
		batches := rq.incoming
		rq.incoming = nil
		epoch := rq.epoch
		voters := rq.bootVoters
		rq.mu.Unlock()
		if need {
			target := moveTo
			if target == 0 {
				target = rq.pickHost(avoid)
			}
			if target == 0 {
				target = avoid
			}
			ctx, cancel := context.WithTimeout(rq.ctx, callTimeout)
			err := rq.attach(ctx, target, voters)
			cancel()
			rq.mu.Lock()
			rq.moveTo = 0 // one try: if it failed, the queue goes wherever the group leads
			if err == nil {
				rq.bootVoters = nil
			}
			rq.mu.Unlock()
			if err != nil {
				rq.b.log.Debug("re-attach failed; retrying", zap.String("queue", rq.q.def.Name),
					zap.Uint64("node", target), zap.Error(err))
				avoid = target
				retry.Reset(200 * time.Millisecond)
			} else {
				avoid = 0
			}
			continue
		}
		for _, bt := range batches {
			rq.takeRelay(bt, epoch)
		}
		rq.deliver(epoch)
	}
}

// takeRelay sorts a relay batch's items into the consumers' waiting lists.
func (rq *remoteQueue) takeRelay(body []byte, epoch uint64) {
	err := decodeRelay(body, epoch, func(kind byte, local queue.ConsumerID, d queue.Delivery) {
		rq.mu.Lock()
		pc := rq.consumers[local]
		cancelled := pc != nil && pc.cancelled
		rq.mu.Unlock()
		switch kind {
		case relayDeliver:
			if pc == nil || cancelled {
				// Cancelled meanwhile: give the message back at once.
				rq.Settle([]queue.DeliveryID{d.ID}, queue.Requeue)
				return
			}
			pc.waiting = append(pc.waiting, d)
		case relayCancelled:
			if pc != nil && !cancelled {
				rq.dmu.Lock()
				rq.mu.Lock()
				delete(rq.consumers, local)
				pc.cancelled = true
				rq.mu.Unlock()
				pc.waiting = nil
				pc.c.Cancelled(rq.q)
				rq.dmu.Unlock()
			}
		}
	})
	if err != nil {
		rq.b.log.Warn("bad relay batch from a queue's host; the rest of it ignored", zap.Error(err))
	}
}

// deliver hands waiting deliveries to consumers that allow them and gives the host credit.
// A deposed serving node hands over nothing (Broker.deposed): the new serving node re-attaches
// the queue, whose host then requeues what this node's session held.
func (rq *remoteQueue) deliver(epoch uint64) {
	if rq.b.deposed() {
		return
	}
	rq.mu.Lock()
	cs := make([]*proxyConsumer, 0, len(rq.consumers))
	for _, pc := range rq.consumers {
		if len(pc.waiting) > 0 || pc.credit > 0 || pc.cancelled {
			cs = append(cs, pc)
		}
	}
	rq.mu.Unlock()
	for _, pc := range cs {
		rq.dmu.Lock()
		if pc.cancelled {
			// Deliveries relayed but not handed over go back.
			back := make([]queue.DeliveryID, 0, len(pc.waiting))
			for _, d := range pc.waiting {
				back = append(back, d.ID)
			}
			pc.waiting = nil
			rq.mu.Lock()
			if rq.consumers[pc.id] == pc {
				delete(rq.consumers, pc.id)
			}
			rq.mu.Unlock()
			rq.dmu.Unlock()
			if len(back) > 0 {
				rq.Settle(back, queue.Requeue)
			}
			continue
		}
		n := 0
		for n < len(pc.waiting) && !pc.cancelled && pc.c.Allow() {
			pc.c.Deliver(rq.q, pc.waiting[n])
			n++
		}
		rq.dmu.Unlock()
		pc.waiting = pc.waiting[n:]
		if len(pc.waiting) == 0 {
			pc.waiting = nil
		}
		pc.credit += uint64(n)
		rq.mu.Lock()
		host, hostID, ok := rq.host, pc.hostID, pc.hostEpoch == epoch && rq.epoch == epoch && !pc.cancelled
		rq.mu.Unlock()
		if ok && pc.credit > 0 {
			w := wbuf{}
			w.uint(rq.group)
			w.uint(epoch)
			w.uint(uint64(hostID))
			w.uint(pc.credit)
			pc.credit = 0
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			_ = rq.rpc.Notify(ctx, host, rpcCredit, w.b)
			cancel()
		}
	}
}

// handleRelay queues a relay batch for its proxy's run goroutine.
func (b *Broker) handleRelay(_ context.Context, from uint64, body []byte, _ func([]byte, error)) {
	r := newReader(body)
	group, epoch := r.Uint(), r.Uint()
	rq := b.proxy(group)
	if r.Err() != nil || rq == nil {
		return
	}
	rq.mu.Lock()
	ok := rq.attached && rq.host == from && rq.epoch == epoch
	if ok {
		rq.incoming = append(rq.incoming, body)
	}
	rq.mu.Unlock()
	if ok {
		rq.poke()
	}
}

func (b *Broker) handleLost(_ context.Context, from uint64, body []byte, _ func([]byte, error)) {
	r := newReader(body)
	group, epoch := r.Uint(), r.Uint()
	if rq := b.proxy(group); rq != nil && r.Err() == nil {
		rq.hostLost(from, epoch)
	}
}
