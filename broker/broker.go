package broker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/cluster"
)

// Config holds the core's tunables. The zero value is not useful; start from DefaultConfig.
type Config struct {
	// QueueInbox is the number of commands a queue's inbox holds before publishers block.
	// Default 4096.
	QueueInbox int
	// Now returns the current time. Tests may replace it; default time.Now.
	Now func() time.Time
	// QueueBodyWindow is how many body bytes of ready persistent messages a durable queue keeps
	// in memory; the bodies of a backlog behind them stay in the queue's log and are read back
	// when delivered. Default 4 MiB.
	QueueBodyWindow int64
	// Host runs the raft groups that keep durable metadata and durable queues. Nil keeps
	// everything in memory (unit tests); cmd/parley always sets it.
	Host *cluster.Host
	// Spread, with Host, runs durable queues' processes on other nodes (remote.go, placed and
	// rebalanced by rebalance.go; issue 7). Nil: every queue runs here.
	Spread *Spread
	// PartitionGroups is how many partition groups small durable queues (those declared with
	// meta.QueueDef.Packed: MQTT sessions, durable STOMP subscriptions) are packed into
	// (partition.go). 0 gives each its own group. Default DefaultPartitionGroups.
	PartitionGroups int
}

// DefaultConfig returns the defaults documented on each Config field.
func DefaultConfig() Config {
	return Config{QueueInbox: 4096, QueueBodyWindow: 4 << 20, Now: time.Now, PartitionGroups: DefaultPartitionGroups}
}

// Broker is the core of one node.
type Broker struct {
	log *zap.Logger
	cfg Config

	// mu serialises metadata changes (declare, delete, bind). The publish and deliver paths never
	// take it: they read the vhost's routing snapshot and queue map atomically.
	mu   sync.Mutex
	meta *meta.State

	// Durable metadata (group 0), when cfg.Host is set.
	metaLog   *metaLog
	metaGroup *cluster.Group
	// led is set once this node has been seen leading group 0 (see deposed).
	led atomic.Bool

	vhosts atomic.Pointer[map[string]*VHost]

	nextConsumer   atomic.Uint64
	nextConnection atomic.Uint64

	// idle tells idle queue goroutines when to give up waiting for more work (linger.go).
	idle idleClock

	closed atomic.Bool

	// Issue 7 stage 1: the queues this node hosts for other nodes (queuehost.go) and its
	// proxies of queues hosted elsewhere (remote.go).
	server  *queueServer
	proxies proxies
	// hostOnly: a NewQueueHost broker, without metadata or routing of its own: its queues'
	// dead letters and expiry go to the serving node (remotedead.go).
	hostOnly bool

	// partitions are the partition groups this broker runs, by group id (partition.go); b.mu.
	partitions map[uint64]*partition
	// stopc ends the rebalancer (rebalance.go); nil when none runs.
	stopc chan struct{}
}

// fenced reports whether this node must not serve: it has led group 0 (it served) and either
// another node has taken the lead since, or none is known to lead (it was cut off), or it still
// leads but without the lease (cluster/lease.go: it has not heard from a majority within the
// lease period, so it may be cut off, and the majority may elect another serving node as soon
// as the lease has run out).
//
// Deposed (not leading any more), its broker runs on until cmd/parley notices (it polls) and
// restarts the node as a standby, while another node may serve already, with the same durable
// queues rebuilt from their logs. Until then this broker must deliver nothing: the queues' own
// proposals still commit through their groups' new leaders, and the new serving node's queue
// takes those entries as another node's, marked redelivered; delivered here too, unflagged, a
// client would get a message again without the redelivered flag (RabbitMQ sets it on every
// delivery after the first), or before the flagged one, in any order. The check reads the lead
// as the host's loop last saw it, so it fences this node as soon as its raft has heard of the
// newer term, before any entry of that term is applied here.
//
// Without the lease, deliveries pause (they are not dropped: the queues look again, see
// Queue.nextWake) and publishes wait (VHost.Publish, awaitLease): the lease comes back, or the
// node learns it was deposed. The lease closes the window in which a cut-off node's raft has
// not heard of the new term yet (a quiesced group 0 may take seconds to), during which it
// would deliver what the new serving node delivers too.
//
// A queue host (queuehost.go) has no group 0 and is not fenced by this: its queues check their
// own group's lease (Queue.fenced).
func (b *Broker) fenced() bool {
	g := b.metaGroup
	if g == nil {
		return false
	}
	if g.IsLeader() {
		if !b.led.Load() {
			b.led.Store(true)
		}
		return !g.HasLease()
	}
	return b.led.Load()
}

// deposed reports whether this node has led group 0 and no longer does (see fenced).
func (b *Broker) deposed() bool {
	g := b.metaGroup
	return g != nil && !g.IsLeader() && b.led.Load()
}

// ErrNoMajority is what a publish gets from a serving node that has lost its lease and did not
// get it back within publishLeaseWait (or learnt that it was deposed): AMQP closes the
// connection with 320 CONNECTION_FORCED, MQTT answers with its implementation-specific error
// and STOMP with an ERROR frame. The client reconnects, to any node.
var ErrNoMajority = &meta.Error{Code: 320, Text: "this node lost contact with the cluster majority; reconnect to another node"}

// publishLeaseWait bounds how long a publish waits for a lost lease to come back: longer than a
// lost lease takes to resolve (the lease comes back with the next echoes, or CheckQuorum makes
// the node step down within two election timeouts of waking), shorter than clients' timeouts.
const publishLeaseWait = 10 * time.Second

// awaitLease returns nil at once while this node may serve, else waits (bounded) for the lease
// to come back; ErrNoMajority if it does not, or the node was deposed.
func (b *Broker) awaitLease() error {
	if !b.fenced() {
		return nil
	}
	deadline := time.Now().Add(publishLeaseWait)
	for b.fenced() {
		if b.deposed() || b.closed.Load() || time.Now().After(deadline) {
			return ErrNoMajority
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// New builds a broker with the default vhost "/" and its predeclared exchanges. With a Host it
// first recovers the durable metadata and queues from storage.
func New(log *zap.Logger, cfg Config) (*Broker, error) {
	def := DefaultConfig()
	if cfg.QueueInbox <= 0 {
		cfg.QueueInbox = def.QueueInbox
	}
	if cfg.Now == nil {
		cfg.Now = def.Now
	}
	b := &Broker{log: log, cfg: cfg, meta: meta.New()}
	m := map[string]*VHost{}
	b.vhosts.Store(&m)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.syncVHostsLocked()
	if cfg.Host != nil {
		if err := b.recoverDurable(context.Background()); err != nil {
			b.closeQueuesLocked()
			return nil, err
		}
		b.startRebalancer()
		if len(cfg.Host.Members()) > 1 && cfg.Spread == nil {
			go b.keepLeads() // leads.go; with spread queues the rebalancer places the leads
		}
	}
	return b, nil
}

// Close stops every queue goroutine. Consumers are not notified: their connections are closing too.
func (b *Broker) Close() {
	if b.closed.Swap(true) {
		return
	}
	if b.stopc != nil {
		close(b.stopc)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeQueuesLocked()
}

func (b *Broker) closeQueuesLocked() {
	for _, v := range *b.vhosts.Load() {
		for _, q := range v.queueMap() {
			q.stop()
		}
	}
	if b.server != nil {
		b.server.mu.Lock()
		hosted := make([]*Queue, 0, len(b.server.hosted))
		for g, q := range b.server.hosted {
			hosted = append(hosted, q)
			delete(b.server.hosted, g)
		}
		b.server.mu.Unlock()
		// Parked again, so the node's serving broker (or a later queue host) can adopt them.
		for _, q := range hosted {
			q.stop()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := b.cfg.Host.Park(ctx, q.group.ID(), QueueStandIn()); err != nil && !errors.Is(err, cluster.ErrStopped) {
				b.log.Warn("hosted queue's group not parked", zap.Uint64("group", q.group.ID()), zap.Error(err))
			}
			cancel()
		}
	}
}

// NewConnectionID returns a process-unique connection id, the owner of exclusive queues.
func (b *Broker) NewConnectionID() uint64 { return b.nextConnection.Add(1) }

// VHost returns the named virtual host.
func (b *Broker) VHost(name string) (*VHost, bool) {
	v, ok := (*b.vhosts.Load())[name]
	return v, ok
}

// AddVHost creates a virtual host with its predeclared exchanges.
func (b *Broker) AddVHost(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.meta.AddVHost(name); err != nil {
		return fmt.Errorf("add vhost %q: %w", name, err)
	}
	b.syncVHostsLocked()
	return b.persistMetaLocked()
}

// syncVHostsLocked makes the vhost map match the metadata. b.mu held.
func (b *Broker) syncVHostsLocked() {
	old := *b.vhosts.Load()
	next := make(map[string]*VHost, len(old)+1)
	for name, v := range old {
		if b.meta.HasVHost(name) {
			next[name] = v
		}
	}
	for _, name := range b.meta.VHosts() {
		if _, ok := next[name]; !ok {
			v := &VHost{b: b, name: name}
			qm := map[string]*Queue{}
			v.queues.Store(&qm)
			v.router.Store(b.meta.Router(name))
			next[name] = v
		}
	}
	b.vhosts.Store(&next)
}

// now is the broker's clock in Unix milliseconds, the unit of the queue state machine.
func (b *Broker) now() int64 { return b.cfg.Now().UnixMilli() }

// serverNamedQueue returns a fresh amq.gen- name as RabbitMQ makes them.
func serverNamedQueue() string {
	var r [16]byte
	_, _ = rand.Read(r[:])
	return meta.ServerNamedQueue(r)
}
