package cluster

import (
	"context"
	"fmt"
	"maps"
	"net"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parleymq/parley/storage"
)

// tcpNode is one node of a test cluster over real loopback TCP.
type tcpNode struct {
	id    uint64
	dir   string
	addr  string
	eng   *storage.Engine
	tr    *TCPTransport
	host  *Host
	sm    *kv
	group *Group
}

func startTCPNode(t *testing.T, ctx context.Context, n *tcpNode, peers map[uint64]string, ln net.Listener) {
	t.Helper()
	n.eng = openEngine(t, n.dir, vfs.Default)
	tr, err := NewTCPTransport(TCPConfig{
		NodeID:     n.id,
		Listener:   ln,
		Listen:     n.addr,
		Peers:      peers,
		Meta:       map[string]string{"name": fmt.Sprintf("n%d", n.id)},
		MaxBackoff: 100 * time.Millisecond,
	}, testLogger(t))
	if err != nil {
		t.Fatalf("node %d transport: %v", n.id, err)
	}
	n.tr = tr
	h, err := NewHost(Config{
		NodeID:          n.id,
		Peers:           peers,
		Transport:       tr,
		TickInterval:    10 * time.Millisecond,
		SnapshotEntries: 30,
	}, n.eng, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	tr.Start(h)
	n.host = h
	n.sm = newKV()
	n.group = addGroup(t, ctx, h, 7, n.sm)
}

func (n *tcpNode) stop() {
	if n.host == nil {
		return
	}
	n.host.Stop()
	n.tr.Close()
	_ = n.eng.Close()
	n.host, n.tr, n.eng = nil, nil, nil
}

// TestThreeNodesOverTCP runs a group on three hosts joined by TCPTransport over loopback, with
// real Pebble: it replicates, forwards a follower's proposal, elects a new leader when the
// leader's host is closed, and the closed node, restarted on the same address and data, catches
// up (from a snapshot: its missing log was compacted) and serves again.
func TestThreeNodesOverTCP(t *testing.T) {
	ctx := testContext(t)
	peers := map[uint64]string{}
	lns := map[uint64]net.Listener{}
	nodes := map[uint64]*tcpNode{}
	for id := uint64(1); id <= 3; id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[id] = ln
		peers[id] = ln.Addr().String()
		nodes[id] = &tcpNode{id: id, dir: t.TempDir(), addr: ln.Addr().String()}
	}
	for id, n := range nodes {
		startTCPNode(t, ctx, n, peers, lns[id])
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop()
		}
	})

	leaderAmong := func(ids ...uint64) uint64 {
		t.Helper()
		var lead uint64
		waitFor(t, ctx, "a leader all agree on", func() bool {
			lead = nodes[ids[0]].group.Leader()
			if lead == 0 || nodes[lead].host == nil {
				return false
			}
			for _, id := range ids {
				if nodes[id].group.Leader() != lead {
					return false
				}
			}
			return nodes[lead].group.IsLeader()
		})
		return lead
	}
	propose := func(id uint64, cmd string) {
		t.Helper()
		for {
			f, err := nodes[id].group.Propose(ctx, []byte(cmd))
			if err != nil {
				t.Fatalf("propose %s on node %d: %v", cmd, id, err)
			}
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err = f.Wait(wctx)
			cancel()
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("propose %s on node %d: %v", cmd, id, err)
			}
			// Dropped by an election (or a lost forward): retry, as a client would.
		}
	}
	converged := func(ids ...uint64) {
		t.Helper()
		waitFor(t, ctx, "replicas to converge", func() bool {
			want, _ := nodes[ids[0]].sm.state()
			for _, id := range ids[1:] {
				got, _ := nodes[id].sm.state()
				if !maps.Equal(got, want) {
					return false
				}
			}
			return true
		})
	}

	lead := leaderAmong(1, 2, 3)
	for i := range 40 {
		propose(lead, fmt.Sprintf("a%d=x", i))
	}
	follower := lead%3 + 1
	propose(follower, "forwarded=yes")
	converged(1, 2, 3)
	for _, n := range nodes {
		for _, p := range n.tr.Peers() {
			if !p.Connected || p.Meta["name"] != fmt.Sprintf("n%d", p.ID) {
				t.Fatalf("node %d sees peer %+v", n.id, p)
			}
		}
	}

	// Close the leader's host and transport: the two others elect a leader and go on.
	old := nodes[lead]
	old.stop()
	var rest []uint64
	for id := range nodes {
		if id != lead {
			rest = append(rest, id)
		}
	}
	waitFor(t, ctx, "a new leader", func() bool {
		l := nodes[rest[0]].group.Leader()
		return l != 0 && l != lead && nodes[l].group.IsLeader()
	})
	newLead := leaderAmong(rest...)
	for i := range 80 {
		propose(newLead, fmt.Sprintf("b%d=y", i))
	}
	converged(rest...)

	// Restart it on the same address and data: it recovers its own log, then catches up.
	startTCPNode(t, ctx, old, peers, nil)
	converged(1, 2, 3)
	if v, _ := old.sm.get("b79"); v != "y" {
		t.Fatal("restarted node did not catch up")
	}
	if v, _ := old.sm.get("a39"); v != "x" {
		t.Fatal("restarted node lost what it had before")
	}
	if m := old.host.Metrics(); m.SnapshotsReceived == 0 {
		t.Fatalf("restarted node caught up without a snapshot though its log was compacted: %+v", m)
	}
	propose(lead, "after=restart")
	converged(1, 2, 3)
}

// A full peer queue drops (and reports) instead of blocking the host's loop: Send returns at
// once to a peer that never answers.
func TestTCPSendNeverBlocks(t *testing.T) {
	// A listener that accepts nothing: the dial succeeds (backlog) but no hello comes back.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tr, err := NewTCPTransport(TCPConfig{
		NodeID: 1, Listen: "127.0.0.1:0",
		Peers:    map[uint64]string{1: "", 2: ln.Addr().String()},
		QueueLen: 4,
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	eng := openEngine(t, t.TempDir(), vfs.NewMem())
	defer eng.Close()
	h := startHost(t, Config{NodeID: 1, Peers: map[uint64]string{1: "", 2: ln.Addr().String()}, Transport: tr}, eng)
	tr.Start(h)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10000 {
			tr.Send(5, sampleMessages())
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Send blocked on an unresponsive peer")
	}
	if p := tr.Peers()[0]; p.Dropped == 0 || p.Connected {
		t.Fatalf("peer status after flooding an unresponsive peer: %+v", p)
	}
}
