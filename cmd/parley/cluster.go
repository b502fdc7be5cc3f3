package main

// Running parley as one node of a cluster (cluster.peers set).
//
// Design note (first cut of issue 7; DESIGN.md §5 wants more, see "Deviation" below).
//
// One node serves: the leader of group 0 (the metadata) runs the broker and the client
// listeners, exactly as a single node does. Every other node is a standby: it keeps a parked
// replica (cluster/replica.go) of group 0 and of every durable queue's group (one per partition
// group for the small queues packed into them, broker/partition.go; a partition group's replica
// is never removed), so each group has
// the cluster's nodes as voters and commits only once a majority has fsynced, and its client
// listeners forward each client connection, byte for byte, to the serving node's listener of
// the same protocol (addresses learnt from the peers' transport hellos). A client may therefore
// connect to any node; a publisher confirm (the broker's future) completes once a majority
// holds the message.
//
// When a standby becomes group 0's leader (the serving node died or was cut off; CheckQuorum
// makes a cut-off leader step down), it stops forwarding and starts the broker: broker.New
// calls AddGroup for group 0 and each durable queue as on a restart, which adopts the parked
// replicas in place, takes the lead of each group and waits until every entry committed
// before is applied, so no confirmed message is missing from the rebuilt queues. Unacked
// messages come back as the queue's live messages, redelivered.
//
// A serving node that loses group 0's leadership stops serving: it shuts down its broker and
// listeners (clients reconnect, to any node) and re-executes itself, coming back as a standby.
// watchServing notices only at its next poll; the broker itself stops delivering as soon as
// the node's raft has heard of the new leader, since the new serving node may deliver the same
// messages already, and even before that, as soon as its leader lease runs out (a cut-off
// node's raft may hear of no new leader for seconds, a quiesced group 0 not even running
// CheckQuorum): the serving node delivers, and takes publishes, only while a majority has
// answered its lease probes within the lease period, which ends before the majority may elect
// anyone else (cluster/lease.go, broker.Broker's fenced).
//
// The serving node leads every durable queue's group it runs (not the spread queues hosted
// elsewhere): AddGroup takes each lead at start, and broker/leads.go takes back any lead a
// standby wins later (a new queue's first election, a failover).
//
// A standby's replicas are not inert: group 0's stand-in and each queue group's stand-in are the
// broker's own pure state machines (broker.MetaStandIn, broker.QueueStandIn), which apply every
// entry and deliver nothing, so a standby snapshots and compacts its logs as the serving node
// does and its disk does not grow with every message ever published.
//
// Membership (membership.go here, cluster/membership.go for the raft part): a node started with
// peers that do not name it joins a running cluster; `parleyctl cluster join`, sent to any node
// and forwarded to the serving node, adds it to group 0 and every durable queue group as a
// learner and promotes it when caught up; `parleyctl cluster leave` removes a node from every
// group, and the removed node stops. A standby writes the first configuration of a queue's
// group only when it applies, live, the metadata entry that creates the queue, and with the
// membership as of that entry (not as it is when the replica is created, a Join or Leave may
// have moved on); any other replica waits for the group's leader to send it (see
// applyReplicaList). The serving node holds cluster.Host.LockMembership from creating the group
// until that entry applies, so it starts the group with the same members.
//
// Spread queues (cluster.spread_queues, on by default; issue 7): the serving
// node's broker places each new durable queue on the least-loaded member and records the
// placement with the queue in group 0 (meta.QueueDef.Place), and a queue runs on the node it
// is placed on, which leads its group: that node's standby runs a queue host
// (broker.NewQueueHost, broker/queuehost.go) next to its replicas, which adopts the group's
// replica and takes its lead when the serving node's proxy asks it to host the queue, and the
// serving node's *broker.Queue is a proxy (broker/remote.go) forwarding each operation over
// the cluster RPC channel (cluster/rpc.go, on the one connection per peer) and relaying the
// deliveries back. When a queue's host dies, its group elects a new leader and the proxy
// re-attaches to it (or to another voter, which takes the lead), its consumers staying
// attached; unacked deliveries come again redelivered, and an ack of the dead host's delivery
// ids is dropped (delivery ids carry the host session's epoch). When the node comes back, the
// serving node's rebalancer (broker/rebalance.go) moves its queues back to it, the same way.
// When the serving node dies, the new one closes its queue host first (parking what it hosted)
// and its broker runs locally the queues placed on it and proxies the others (to their
// placement, or, while that node is down, to another voter). A queue host answers and delivers
// only while it leads the queue's group, and a deposed serving node's proxies hand nothing to
// their consumers (broker.Broker's deposed). A join or leave does not take the queues' leads
// to the serving node: each group's leader changes its own configuration when the serving
// node asks it over the RPC channel (cluster/membership_remote.go), so the queues keep running
// where they run (a node leaving first hands the leads it has to another voter).
//
// Deviation from DESIGN.md §5: one node still serves every client (the metadata, routing,
// connections and consumers live on the serving node); a client of a standby is forwarded per
// connection, byte for byte, not per operation. Exclusive and auto-delete queues, MQTT session
// queues and packed queues always run on the serving node (broker/remote.go says why). A node
// that joins gets new queues and a share of the older ones (broker/rebalance.go's reshare), but
// not of the queues the serving node runs itself. With cluster.spread_queues off the serving
// node leads every group (taking back leads a standby won: broker/leads.go).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/cluster"
	"github.com/parleymq/parley/storage"
)

// errReexec asks main to re-execute the process: the node stopped serving and comes back as a
// standby.
var errReexec = errors.New("no longer the serving node; restarting as a standby")

// raftID is the number node_id ends in (parley-1 -> 1, node2 -> 2, 3 -> 3).
func raftID(nodeID string) (uint64, error) {
	i := len(nodeID)
	for i > 0 && nodeID[i-1] >= '0' && nodeID[i-1] <= '9' {
		i--
	}
	id, err := strconv.ParseUint(nodeID[i:], 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%w: node_id %q: in a cluster it must end in the node's number (1, 2, ...)", errUsage, nodeID)
	}
	return id, nil
}

// parsePeers reads cluster.peers, "ID=host:port,ID=host:port"; IDs may be node ids (parley-2)
// or their numbers (2).
func parsePeers(s string) (map[uint64]string, error) {
	peers := map[uint64]string{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, addr, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("%w: cluster.peers %q: want ID=host:port", errUsage, item)
		}
		id, err := raftID(strings.TrimSpace(name))
		if err != nil {
			return nil, fmt.Errorf("%w: cluster.peers %q: the id must be a node's number", errUsage, item)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("%w: cluster.peers %q: want ID=host:port", errUsage, item)
		}
		if _, dup := peers[id]; dup {
			return nil, fmt.Errorf("%w: cluster.peers: node %d listed twice", errUsage, id)
		}
		peers[id] = addr
	}
	return peers, nil
}

// forwardedListeners are the client listeners a standby forwards to the serving node.
func forwardedListeners(cfg Config) map[string]string {
	return map[string]string{
		"amqp": cfg.AMQP, "amqps": cfg.AMQPS, "mqtt": cfg.MQTT, "mqtts": cfg.MQTTS,
		"stomp": cfg.STOMP, "stomps": cfg.STOMPS, "ws-stomp": cfg.WSStomp, "ws-mqtt": cfg.WSMQTT, "ws": cfg.WS,
	}
}

// clusterNode is the cluster glue of a node with peers.
type clusterNode struct {
	cfg   Config
	log   *zap.Logger
	id    uint64
	peers map[uint64]string
	tr    *cluster.TCPTransport
	host  *cluster.Host
	meta  *cluster.Group

	// With cluster.spread_queues: the RPC channel, and while this node is a standby, the
	// broker that runs the durable queues the serving node places here (broker/queuehost.go).
	rpc    *cluster.RPC
	qhost  *broker.Broker
	qhostM sync.Mutex

	// replicas: groups a standby keeps for the durable queues group 0 names.
	repMu    sync.Mutex
	repWant  []queueList // lists from group 0's entries, in log order, not yet handled
	repWake  chan struct{}
	replicas map[uint64]bool
	// metaLive is set once group 0's replica has replayed what it had at start: from then on
	// each metadata entry is applied as it commits, so a queue that first appears in it was
	// created with the membership this node records at that moment.
	metaLive atomic.Bool
	// metaApplying is set (on the host's loop) while group 0's stand-in applies an entry.
	metaApplying bool
	// listed is the previous list of queue groups, nil while unknown (see applyReplicaList).
	listed map[uint64]bool
	// seen is every queue group a list named since this process started (keepReplicas only).
	seen map[uint64]bool

	serving   chan struct{} // closed when this node starts serving
	lost      chan struct{} // closed when it stops
	removed   chan struct{} // closed when it learns it was removed from the cluster
	rmOnce    sync.Once
	listening atomic.Bool // the broker's listeners are up (what the status calls serving)
}

// newClusterHost makes the node's cluster host. Without peers it is the single node of today:
// raft id 1, no transport, no cluster listener, and a nil clusterNode.
func newClusterHost(cfg Config, eng *storage.Engine, log *zap.Logger) (*cluster.Host, *clusterNode, error) {
	if strings.TrimSpace(cfg.Cluster.Peers) == "" {
		host, err := cluster.NewHost(cluster.Config{NodeID: 1}, eng, log.Named("cluster"))
		return host, nil, err
	}
	id, err := raftID(cfg.NodeID)
	if err != nil {
		return nil, nil, err
	}
	peers, err := parsePeers(cfg.Cluster.Peers)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Cluster.Listen == "off" {
		return nil, nil, fmt.Errorf("%w: cluster.listen is off but cluster.peers is set", errUsage)
	}
	// Peers not naming this node: it joins a running cluster (membership.go); a member's
	// `parleyctl cluster join` makes it one.
	self, listed := peers[id]
	join := !listed
	if join {
		self = cfg.Cluster.Listen
	}
	if !join && len(peers) < 2 {
		return nil, nil, fmt.Errorf("%w: cluster.peers lists no node but this one", errUsage)
	}
	advertise := map[string]string{}
	for name, addr := range forwardedListeners(cfg) {
		if addr != "off" {
			advertise[name] = advertised(addr, self)
		}
	}
	if cfg.HTTP != "off" {
		advertise["http"] = advertised(cfg.HTTP, self) // join and leave go to the serving node's
	}
	tr, err := cluster.NewTCPTransport(cluster.TCPConfig{
		NodeID: id, Listen: cfg.Cluster.Listen, Peers: peers, Meta: advertise,
		Advertise: advertised(self, self),
	}, log.Named("transport"))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: cluster.listen: %v", errUsage, err)
	}
	cn := &clusterNode{
		cfg: cfg, log: log.Named("node"), id: id, peers: peers, tr: tr,
		repWake: make(chan struct{}, 1), replicas: map[uint64]bool{},
		serving: make(chan struct{}), lost: make(chan struct{}), removed: make(chan struct{}),
	}
	host, err := cluster.NewHost(cluster.Config{
		NodeID: id, Peers: peers, Join: join, Transport: tr, OnRemoved: cn.onRemoved,
	}, eng, log.Named("cluster"))
	if err != nil {
		tr.Close()
		return nil, nil, err
	}
	cn.host = host
	if cfg.Cluster.SpreadQueues {
		cn.rpc = cluster.NewRPC(tr, log.Named("rpc"))
		// A join asks each spread queue's host to add the new node to its group, instead of
		// taking the group's lead (which stops the queue there for a moment).
		host.ServeMembership(cn.rpc)
	}
	log.Info("cluster node", zap.Uint64("id", id), zap.String("listen", tr.Addr().String()),
		zap.Int("members", len(host.Members())), zap.Bool("joining", join && !cn.isMember()))
	return host, cn, nil
}

// advertised turns a listen address into one a peer can dial: a wildcard host becomes the
// host this node's cluster address names.
func advertised(listen, clusterAddr string) string {
	h, p, err := net.SplitHostPort(listen)
	if err != nil || (h != "" && h != "0.0.0.0" && h != "::") {
		return listen
	}
	ch, _, err := net.SplitHostPort(clusterAddr)
	if err != nil || ch == "" || ch == "0.0.0.0" || ch == "::" {
		ch = "127.0.0.1"
	}
	return net.JoinHostPort(ch, p)
}

// Listening records that the broker's client listeners are up: from now on the status says
// this node serves.
func (cn *clusterNode) Listening() {
	if cn != nil {
		cn.listening.Store(true)
	}
}

// Lost is closed when a serving node stops serving (nil for a single node: never).
func (cn *clusterNode) Lost() <-chan struct{} {
	if cn == nil {
		return nil
	}
	return cn.lost
}

// start connects to the peers and keeps the replicas of a standby. Call after host.Start.
func (cn *clusterNode) start(ctx context.Context) error {
	if cn == nil {
		return nil
	}
	cn.tr.Start(cn.host)
	stored, err := cn.host.StoredGroups()
	if err != nil {
		return fmt.Errorf("metadata group: %w", err)
	}
	if !slices.Contains(stored, broker.MetaGroup) && cn.isMember() {
		// A new cluster: every queue group 0 will name is created from now on.
		cn.listed = map[uint64]bool{}
	}
	g, err := cn.host.AddReplica(ctx, broker.MetaGroup, &metaWatch{StateMachine: broker.MetaStandIn(cn.noteMeta), cn: cn})
	if err != nil {
		return fmt.Errorf("metadata group: %w", err)
	}
	cn.meta = g
	cn.metaLive.Store(true)
	go cn.keepReplicas(ctx)
	if cn.rpc != nil {
		qh, err := broker.NewQueueHost(cn.log.Named("queuehost"), broker.Config{Host: cn.host})
		if err != nil {
			return fmt.Errorf("queue host: %w", err)
		}
		qh.ServeQueues(cn.rpc)
		cn.qhostM.Lock()
		cn.qhost = qh
		cn.qhostM.Unlock()
	}
	return nil
}

// spread is the broker's Spread configuration (nil unless cluster.spread_queues). It first
// stops the queues this node hosted as a standby, parking their groups, so the serving
// broker adopts the ones this node leads (broker/remote.go places a queue on its leader).
func (cn *clusterNode) spread() *broker.Spread {
	if cn == nil || cn.rpc == nil {
		return nil
	}
	cn.stopQueueHost()
	return &broker.Spread{RPC: cn.rpc, Nodes: func() []uint64 {
		var ids []uint64
		for _, m := range cn.host.Members() {
			ids = append(ids, m.ID)
		}
		return ids
	}, Reachable: cn.tr.Connected}
}

// stopQueueHost closes the queue host this node ran as a standby, if any, parking the groups
// of the queues it hosted.
func (cn *clusterNode) stopQueueHost() {
	cn.qhostM.Lock()
	qh := cn.qhost
	cn.qhost = nil
	cn.qhostM.Unlock()
	if qh != nil {
		qh.Close()
	}
}

// close stops the transport (after the host stopped).
func (cn *clusterNode) close() {
	if cn != nil {
		cn.stopQueueHost()
		if cn.rpc != nil {
			cn.rpc.Close()
		}
		cn.tr.Close()
	}
}

// metaWatch wraps group 0's stand-in so that noteMeta knows an applied entry from a restored
// snapshot.
type metaWatch struct {
	cluster.StateMachine
	cn *clusterNode
}

func (w *metaWatch) Apply(index uint64, data []byte) any {
	w.cn.metaApplying = true
	defer func() { w.cn.metaApplying = false }()
	return w.StateMachine.Apply(index, data)
}

// queueList is the durable queue groups group 0 named after one entry; live: applied as it
// committed (not replayed, not from a snapshot).
type queueList struct {
	ids  []uint64
	live bool
	// voters is the membership as of the entry that gave the list: a queue it creates starts
	// with these voters on this node, as on the node that created it (cluster/membership.go).
	voters []uint64
}

// noteMeta is told the durable queue groups group 0's records name, each time an applied entry
// may have changed them or a snapshot is restored (broker.MetaStandIn). It runs on the host's
// loop: it only records the list and wakes keepReplicas.
func (cn *clusterNode) noteMeta(ids []uint64, err error) {
	live := cn.metaApplying && cn.metaLive.Load()
	if err != nil {
		cn.log.Error("metadata entry not readable; replicas unchanged", zap.Error(err))
		return
	}
	cn.repMu.Lock()
	// Every list, in order, not just the latest: a queue deleted and declared again between two
	// wake-ups must lose its old group (and its messages) before it gets a new one of the same id.
	cn.repWant = append(cn.repWant, queueList{ids: ids, live: live, voters: cn.host.BootstrapVoters()})
	cn.repMu.Unlock()
	select {
	case cn.repWake <- struct{}{}:
	default:
	}
}

// keepReplicas adds and removes queue replicas as group 0 changes, until the node serves
// (then the broker owns the groups).
func (cn *clusterNode) keepReplicas(ctx context.Context) {
	// Groups stored from an earlier run are replicas until group 0 says otherwise.
	if stored, err := cn.host.StoredGroups(); err == nil {
		for _, id := range stored {
			if id != broker.MetaGroup && cn.host.Group(id) == nil {
				if _, err := cn.host.AddFollower(ctx, id, broker.StandIn(id)); err == nil {
					cn.replicas[id] = true
				}
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-cn.serving:
			return
		case <-cn.repWake:
		}
		cn.repMu.Lock()
		lists := cn.repWant
		cn.repWant = nil
		cn.repMu.Unlock()
		for _, want := range lists {
			cn.applyReplicaList(ctx, want)
		}
	}
}

// applyReplicaList makes the queue replicas match one list from group 0: removals first. A
// queue that appears in a live entry is new: this node writes its group's first configuration
// with the members it records, as the serving node did (cluster/membership.go). Any other
// replica waits for the group's leader to send it the configuration (AddFollower): a node that
// joined later, or replays its log, does not know the members the group was created with.
func (cn *clusterNode) applyReplicaList(ctx context.Context, list queueList) {
	want := list.ids
	prev := cn.listed
	cn.listed = make(map[uint64]bool, len(want))
	for _, id := range want {
		cn.listed[id] = true
	}
	if cn.seen == nil {
		cn.seen = map[uint64]bool{}
	}
	for id := range cn.replicas {
		// A replica no list of this run has named yet is one stored by an earlier run, and this
		// list is older than its queue: after a restart group 0 replays (or receives, "live", if
		// its commit index was not stored yet) the entries from before the queue's declaration.
		// Removing it would delete the entries this node acknowledged for it, and the group's
		// leader, which counts them as this node's, would then send a commit index past the end
		// of the re-created log (raft panics: "tocommit out of range"; TestClusterRandomFaults
		// found it). A queue deleted while the node was down is removed once a list that named
		// it no longer does.
		// A partition group is never removed (broker/partition.go): its queues come and go.
		if !slices.Contains(want, id) && cn.seen[id] && !broker.IsPartitionGroup(id) {
			if err := cn.host.RemoveGroup(ctx, id); err != nil {
				cn.log.Warn("deleted queue's replica not removed", zap.Uint64("group", id), zap.Error(err))
				continue
			}
			delete(cn.replicas, id)
		}
	}
	for _, id := range want {
		cn.seen[id] = true
		if !cn.replicas[id] {
			add := cn.host.AddFollower
			if list.live && prev != nil && !prev[id] {
				add = func(ctx context.Context, id uint64, sm cluster.StateMachine) (*cluster.Group, error) {
					return cn.host.AddReplicaWith(ctx, id, sm, list.voters)
				}
			}
			if _, err := add(ctx, id, broker.StandIn(id)); err != nil && !errors.Is(err, cluster.ErrGroupExists) {
				cn.log.Warn("queue replica not started", zap.Uint64("group", id), zap.Error(err))
				continue
			}
			cn.replicas[id] = true
		}
	}
}

// waitServing forwards client connections to the serving node until this node leads group 0
// and has applied all of it; then the caller starts the broker. It returns ctx's error when
// ctx ends first.
func (cn *clusterNode) waitServing(ctx context.Context) error {
	if cn == nil {
		return nil
	}
	fwd := cn.startForwarding()
	defer fwd.close()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	cn.log.Info("standby: forwarding clients to the serving node until this node serves")
	for !cn.meta.Serving() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	close(cn.serving)
	cn.log.Info("this node now serves the cluster's clients")
	go cn.watchServing(ctx)
	return nil
}

// watchServing closes lost when the node no longer leads group 0.
func (cn *clusterNode) watchServing(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !cn.meta.Serving() {
				cn.log.Warn("lost the lead of the metadata group: stop serving")
				close(cn.lost)
				return
			}
		}
	}
}

// servingAddr is the serving node's advertised address for a listener, or "".
func (cn *clusterNode) servingAddr(listener string) string {
	lead := cn.meta.Leader()
	if lead == 0 || lead == cn.id {
		return ""
	}
	for _, p := range cn.tr.Peers() {
		if p.ID == lead && p.Connected {
			return p.Meta[listener]
		}
	}
	return ""
}

// dialServing connects to the serving node's listener, waiting a few seconds for one to be
// known and listening (an election, or the new node starting its broker); nil if none.
func (cn *clusterNode) dialServing(listener string, f *forwarder) net.Conn {
	deadline := time.Now().Add(forwardWait)
	for {
		if target := cn.servingAddr(listener); target != "" {
			s, err := net.DialTimeout("tcp", target, 2*time.Second)
			if err == nil {
				return s
			}
			cn.log.Debug("serving node unreachable", zap.String("listener", listener), zap.Error(err))
		}
		if time.Now().After(deadline) || f.isClosed() {
			cn.log.Info("no serving node to forward a client to; closed", zap.String("listener", listener))
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// forwardWait bounds how long a standby holds a new client while no node serves.
const forwardWait = 10 * time.Second

func (f *forwarder) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// forwarder is a standby's client listeners.
type forwarder struct {
	mu     sync.Mutex
	lns    []net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func (cn *clusterNode) startForwarding() *forwarder {
	f := &forwarder{conns: map[net.Conn]struct{}{}}
	for name, addr := range forwardedListeners(cn.cfg) {
		if addr == "off" {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			cn.log.Warn("standby listener not started", zap.String("listener", name), zap.Error(err))
			continue
		}
		f.lns = append(f.lns, ln)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				if !f.track(c) {
					return
				}
				f.wg.Add(1)
				go func() {
					defer f.wg.Done()
					defer f.untrack(c)
					s := cn.dialServing(name, f)
					if s == nil {
						return // the client retries
					}
					if !f.track(s) {
						return
					}
					defer f.untrack(s)
					done := make(chan struct{}, 2)
					go func() { _, _ = io.Copy(s, c); done <- struct{}{} }()
					go func() { _, _ = io.Copy(c, s); done <- struct{}{} }()
					<-done
				}()
			}
		}()
	}
	return f
}

func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		_ = c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *forwarder) untrack(c net.Conn) {
	_ = c.Close()
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

// close stops the listeners (freeing the ports for the broker's own) and every forwarded
// connection.
func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	for _, ln := range f.lns {
		_ = ln.Close()
	}
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// clusterStatus is what GET /api/cluster/status returns (parleyctl cluster status prints it).
type clusterStatus struct {
	Node    uint64                `json:"node"`
	NodeID  string                `json:"node_id"`
	Serving bool                  `json:"serving"`
	Leader  uint64                `json:"metadata_leader"`
	Members []cluster.Member      `json:"members"`
	Peers   []cluster.PeerStatus  `json:"peers"`
	Groups  []cluster.GroupStatus `json:"groups"`
}

// statusHandler serves the cluster status and the membership changes (membership.go); cn nil
// is a single node.
func statusHandler(cfg Config, host *cluster.Host, cn *clusterNode) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/cluster/join", cn.handleJoin)
	mux.HandleFunc("POST /api/cluster/leave", cn.handleLeave)
	mux.HandleFunc("GET /api/cluster/status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		st := clusterStatus{Node: 1, NodeID: cfg.NodeID, Serving: true, Leader: 1}
		if cn != nil {
			st.Node = cn.id
			st.Leader = cn.meta.Leader()
			st.Serving = cn.listening.Load() && cn.meta.Serving()
			st.Peers = cn.tr.Peers()
		}
		st.Members = host.Members()
		groups, err := host.Status(ctx)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		slices.SortFunc(groups, func(a, b cluster.GroupStatus) int {
			switch {
			case a.ID < b.ID:
				return -1
			case a.ID > b.ID:
				return 1
			}
			return 0
		})
		st.Groups = groups
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	return mux
}

// reexec replaces the process with a fresh copy of itself (same arguments and environment).
func reexec() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("re-exec: %w", err)
	}
	return syscall.Exec(exe, os.Args, os.Environ())
}
