package cluster

import (
	"slices"
	"sync"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Transport carries a group's raft messages to other nodes. The host calls
// Send from its loop goroutine, so Send must not block: a transport queues
// (or drops: raft retransmits) and writes on its own goroutines. The
// receiving side hands each message to the destination host's Receive. The
// sending side reports back to its host: ReportUnreachable when a peer
// cannot be reached, and ReportSnapshot for every MsgSnap, delivered or not.
// It also reports each peer node's liveness (Host.PeerUp, Host.PeerDown),
// which quiesced groups rely on to notice a dead leader (quiesce.go); the
// host treats a peer it was never told about as down.
//
// TCPTransport (tcp.go) is the networked one: one TCP connection per peer
// multiplexing every group (DESIGN.md §5). Messages to this node itself never
// reach the transport: raft delivers those internally.
type Transport interface {
	Send(group uint64, msgs []*raftpb.Message)
}

// NopTransport drops every message. It is the transport of a single node,
// whose groups have no other voter to address.
type NopTransport struct{}

// Send drops msgs.
func (NopTransport) Send(uint64, []*raftpb.Message) {}

// LocalNetwork connects hosts in one process, for tests of several nodes
// without sockets: each host's Config.Transport is net.Transport(its id), and
// Attach registers the host to receive. Messages to a node not attached (or
// cut off with Isolate) are dropped, as a network would.
type LocalNetwork struct {
	mu       sync.Mutex
	hosts    map[uint64]*Host
	isolated map[uint64]bool
}

// NewLocalNetwork returns an empty network.
func NewLocalNetwork() *LocalNetwork {
	return &LocalNetwork{hosts: make(map[uint64]*Host), isolated: make(map[uint64]bool)}
}

// Attach makes h receive the messages addressed to its node id.
func (n *LocalNetwork) Attach(h *Host) {
	n.mu.Lock()
	defer n.mu.Unlock()
	id := h.cfg.NodeID
	n.hosts[id] = h
	n.reportLocked(id, !n.isolated[id])
}

// Detach stops delivering to node id.
func (n *LocalNetwork) Detach(id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reportLocked(id, false)
	delete(n.hosts, id)
}

// Isolate drops every message to or from node id while on is true.
func (n *LocalNetwork) Isolate(id uint64, on bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.isolated[id] = on
	n.reportLocked(id, !on)
}

// reportLocked tells node id and every other attached node (not isolated) that the link
// between them is up or down, as a transport reports peer liveness.
func (n *LocalNetwork) reportLocked(id uint64, up bool) {
	self := n.hosts[id]
	for oid, o := range n.hosts {
		if oid == id || n.isolated[oid] {
			continue
		}
		if up {
			o.PeerUp(id)
			if self != nil {
				self.PeerUp(oid)
			}
		} else {
			o.PeerDown(id)
			if self != nil {
				self.PeerDown(oid)
			}
		}
	}
}

// Transport is the Transport of node from.
func (n *LocalNetwork) Transport(from uint64) Transport {
	return localTransport{n: n, from: from}
}

type localTransport struct {
	n    *LocalNetwork
	from uint64
}

func (t localTransport) Send(group uint64, msgs []*raftpb.Message) {
	t.n.mu.Lock()
	self := t.n.hosts[t.from]
	cut := t.n.isolated[t.from]
	byDest := make(map[*Host][]*raftpb.Message)
	var lost, snapsSent []uint64
	for _, m := range msgs {
		h := t.n.hosts[m.GetTo()]
		if cut || h == nil || t.n.isolated[m.GetTo()] {
			lost = append(lost, m.GetTo())
			if m.GetType() == raftpb.MsgSnap && self != nil {
				self.ReportSnapshot(group, m.GetTo(), true)
			}
			continue
		}
		// A clone, as a wire would make: the sender's raft keeps the
		// entries it sent in its own log.
		byDest[h] = append(byDest[h], proto.Clone(m).(*raftpb.Message))
		if m.GetType() == raftpb.MsgSnap {
			snapsSent = append(snapsSent, m.GetTo())
		}
	}
	t.n.mu.Unlock()
	for h, ms := range byDest {
		h.Receive(group, ms)
	}
	if self == nil {
		return
	}
	for _, to := range snapsSent {
		self.ReportSnapshot(group, to, false)
	}
	for _, to := range lost {
		self.ReportUnreachable(group, to)
	}
}

// SendHeartbeats delivers a coalesced heartbeat list (heartbeat.go) as a network would: the
// destination's host expands it, unless either end is cut off or absent (then it is lost,
// unreported, as TCPTransport loses one).
func (t localTransport) SendHeartbeats(to uint64, beats []Heartbeat) {
	t.n.mu.Lock()
	h := t.n.hosts[to]
	if t.n.isolated[t.from] || t.n.isolated[to] {
		h = nil
	}
	t.n.mu.Unlock()
	if h != nil {
		h.ReceiveHeartbeats(t.from, slices.Clone(beats))
	}
}
