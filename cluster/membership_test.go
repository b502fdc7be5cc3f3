package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// memberNode is one host of a membership test over real loopback TCP and real Pebble.
type memberNode struct {
	id      uint64
	dir     string
	ln      net.Listener
	addr    string
	n       *tcpNode
	removed atomic.Bool
	sms     map[uint64]*kv
	groups  map[uint64]*Group
	// snapEvery is the hosts' SnapshotEntries (default 30).
	snapEvery uint64
}

func newMemberNode(t *testing.T, id uint64) *memberNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &memberNode{id: id, dir: t.TempDir(), ln: ln, addr: ln.Addr().String(),
		sms: map[uint64]*kv{}, groups: map[uint64]*Group{}}
}

// start opens the node's storage, transport and host and adds groups; join: it is a new node
// that knows only peers.
func (m *memberNode) start(t *testing.T, ctx context.Context, peers map[uint64]string, join bool, groups ...uint64) {
	t.Helper()
	if m.ln == nil {
		ln, err := net.Listen("tcp", m.addr)
		if err != nil {
			t.Fatal(err)
		}
		m.ln = ln
	}
	n := &tcpNode{id: m.id, dir: m.dir, addr: m.addr}
	n.eng = openEngine(t, m.dir, vfs.Default)
	tr, err := NewTCPTransport(TCPConfig{
		NodeID: m.id, Listener: m.ln, Peers: peers, Advertise: m.addr, MaxBackoff: 100 * time.Millisecond,
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	m.ln = nil // the transport owns it now
	n.tr = tr
	h, err := NewHost(Config{
		NodeID: m.id, Peers: peers, Join: join, Transport: tr,
		TickInterval: 10 * time.Millisecond, SnapshotEntries: cmp.Or(m.snapEvery, 30),
		OnRemoved: func() { m.removed.Store(true) },
	}, n.eng, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	tr.Start(h)
	n.host = h
	m.n = n
	for _, gid := range groups {
		m.sms[gid] = newKV()
		m.groups[gid] = addGroup(t, ctx, h, gid, m.sms[gid])
	}
}

func (m *memberNode) conf(t *testing.T, ctx context.Context, gid uint64) (voters, learners []uint64) {
	t.Helper()
	st, err := m.n.host.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range st {
		if g.ID == gid {
			return g.Voters, g.Learners
		}
	}
	t.Fatalf("node %d runs no group %d", m.id, gid)
	return nil, nil
}

func memberIDs(ms []Member) []uint64 {
	var ids []uint64
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	return ids
}

// TestJoinPromoteLeaveOverTCP: three hosts over TCP run two groups with data (the first
// compacted, so a newcomer catches up by snapshot). A fourth host that knows only one member
// joins: it is a learner first (commits go on without it), then Join promotes it to voter in
// every group; every host records it, and a group created afterwards has it as a voter. Then a
// node leaves: it is removed from every group, told so (OnRemoved), and forgotten by the
// others; the leader cannot remove itself. The leader is then stopped: the remaining three
// voters (the new node among them) elect and commit, a removal that would leave no live
// majority is refused, and the new node, restarted with its original (joining) configuration,
// comes back with its membership and configuration from storage.
func TestJoinPromoteLeaveOverTCP(t *testing.T) {
	ctx := testContext(t)
	nodes := map[uint64]*memberNode{}
	peers := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		nodes[id] = newMemberNode(t, id)
		peers[id] = nodes[id].addr
	}
	for _, m := range nodes {
		m.start(t, ctx, peers, false, 7, 8)
	}
	t.Cleanup(func() {
		for _, m := range nodes {
			if m.n != nil {
				m.n.stop()
			}
		}
	})

	leaderOf := func(gid uint64, among ...uint64) uint64 {
		t.Helper()
		var lead uint64
		waitFor(t, ctx, fmt.Sprintf("a leader of group %d", gid), func() bool {
			lead = nodes[among[0]].groups[gid].Leader()
			if lead == 0 || !slices.Contains(among, lead) {
				return false
			}
			for _, id := range among {
				if nodes[id].groups[gid].Leader() != lead {
					return false
				}
			}
			return nodes[lead].groups[gid].IsLeader()
		})
		return lead
	}
	propose := func(id, gid uint64, cmd string) {
		t.Helper()
		for {
			f, err := nodes[id].groups[gid].Propose(ctx, []byte(cmd))
			if err != nil {
				t.Fatalf("propose %s on node %d: %v", cmd, id, err)
			}
			if _, err = f.Wait(ctx); err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("propose %s on node %d: %v", cmd, id, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	converged := func(gid uint64, ids ...uint64) {
		t.Helper()
		waitFor(t, ctx, fmt.Sprintf("group %d to converge on %v", gid, ids), func() bool {
			want, _ := nodes[ids[0]].sms[gid].state()
			for _, id := range ids[1:] {
				if got, _ := nodes[id].sms[gid].state(); !maps.Equal(got, want) {
					return false
				}
			}
			return true
		})
	}

	lead := leaderOf(7, 1, 2, 3)
	for i := range 100 {
		propose(lead, 7, fmt.Sprintf("a%d=1", i))
	}
	propose(lead, 8, "b=1")

	// Node 4 knows only the leader.
	n4 := newMemberNode(t, 4)
	nodes[4] = n4
	n4.start(t, ctx, map[uint64]string{lead: peers[lead]}, true, 7, 8)
	if v, _ := n4.conf(t, ctx, 7); len(v) != 0 {
		t.Fatalf("a joining node bootstrapped group 7 with voters %v", v)
	}
	host := nodes[lead].n.host

	// First step by hand: a learner receives the log but does not count.
	err := host.ensureConf(ctx, 7, 4, func(gc groupConf) bool { return slices.Contains(gc.learners, 4) },
		raftpb.ConfChangeAddLearnerNode, confContext{set: true, members: host.membersWith(4, n4.addr)})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{1, 2, 3} {
		waitFor(t, ctx, "the learner in every configuration", func() bool {
			v, l := nodes[id].conf(t, ctx, 7)
			return slices.Equal(l, []uint64{4}) && !slices.Contains(v, 4)
		})
	}
	converged(7, 1, 2, 3, 4)
	if m := n4.n.host.Metrics(); m.SnapshotsReceived == 0 {
		t.Fatalf("the learner caught up without a snapshot, so the test did not cover it: %+v", m)
	}

	// Join finishes: promoted everywhere, in both groups.
	if err := host.Join(ctx, 4, n4.addr); err != nil {
		t.Fatal(err)
	}
	for _, gid := range []uint64{7, 8} {
		for id := range nodes {
			waitFor(t, ctx, fmt.Sprintf("node 4 a voter of group %d on node %d", gid, id), func() bool {
				v, l := nodes[id].conf(t, ctx, gid)
				return slices.Equal(v, []uint64{1, 2, 3, 4}) && len(l) == 0
			})
		}
	}
	for id := range nodes {
		if got := memberIDs(nodes[id].n.host.Members()); !slices.Equal(got, []uint64{1, 2, 3, 4}) {
			t.Fatalf("node %d records members %v", id, got)
		}
	}
	converged(8, 1, 2, 3, 4)

	// A group created after the join has the new node as a voter, on every node.
	for _, m := range nodes {
		m.sms[9] = newKV()
		m.groups[9] = addGroup(t, ctx, m.n.host, 9, m.sms[9])
	}
	for id := range nodes {
		if v, _ := nodes[id].conf(t, ctx, 9); !slices.Equal(v, []uint64{1, 2, 3, 4}) {
			t.Fatalf("new group 9 on node %d has voters %v", id, v)
		}
	}
	l9 := leaderOf(9, 1, 2, 3, 4)
	propose(l9, 9, "c=1")
	converged(9, 1, 2, 3, 4)

	// The node that joined (its configuration lists one peer) leads a group as any member does:
	// it heartbeats (or quiesces) its followers, which therefore never campaign against it. It
	// used to take itself for the group's lone voter, and stopped ticking the groups it led.
	polls := 0
	waitFor(t, ctx, "node 4 leading group 9", func() bool {
		if polls++; polls%40 == 1 {
			_ = n4.n.host.TransferLeadership(ctx, 9, 4)
		}
		return leaderOf(9, 1, 2, 3, 4) == 4 && n4.groups[9].Serving()
	})
	term := func(id uint64) uint64 {
		st, err := nodes[id].n.host.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range st {
			if g.ID == 9 {
				return g.Term
			}
		}
		return 0
	}
	t4 := term(4)
	time.Sleep(5 * nodes[1].n.host.electionTimeout()) // long enough for any follower to campaign
	for id := range nodes {
		if got, l := term(id), nodes[id].groups[9].Leader(); got != t4 || l != 4 {
			t.Fatalf("group 9 led by the joined node: node %d at term %d with leader %d, want term %d, leader 4", id, got, l, t4)
		}
	}
	propose(4, 9, "led-by-4=1")
	converged(9, 1, 2, 3, 4)

	// Leave: the leader cannot remove itself; another node can go.
	if err := host.Leave(ctx, lead); !errors.Is(err, ErrLeaderLeaving) {
		t.Fatalf("leader removing itself: %v, want ErrLeaderLeaving", err)
	}
	gone := lead%3 + 1 // one of 1..3, not the leader
	if err := host.Leave(ctx, gone); err != nil {
		t.Fatal(err)
	}
	var rest []uint64
	for id := range nodes {
		if id != gone {
			rest = append(rest, id)
		}
	}
	slices.Sort(rest)
	for _, gid := range []uint64{7, 8, 9} {
		if v, l := nodes[lead].conf(t, ctx, gid); !slices.Equal(v, rest) || len(l) != 0 {
			t.Fatalf("group %d after node %d left: voters %v learners %v", gid, gone, v, l)
		}
	}
	waitFor(t, ctx, "the removed node to be told", func() bool { return nodes[gone].removed.Load() })
	for _, id := range rest {
		waitFor(t, ctx, fmt.Sprintf("node %d to forget node %d", id, gone), func() bool {
			return slices.Equal(memberIDs(nodes[id].n.host.Members()), rest)
		})
	}
	if err := host.Leave(ctx, gone); !errors.Is(err, ErrMembership) {
		t.Fatalf("removing a node twice: %v, want ErrMembership", err)
	}
	nodes[gone].n.stop()
	delete(nodes, gone)

	// The leader goes: the three voters left (node 4 among them) elect and commit.
	nodes[lead].n.stop()
	var live []uint64
	for _, id := range rest {
		if id != lead {
			live = append(live, id)
		}
	}
	for _, gid := range []uint64{7, 8, 9} {
		l := leaderOf(gid, live...)
		propose(l, gid, "after=1")
		converged(gid, live...)
	}
	// With the old leader down, removing a live voter would leave one live of two.
	l7 := leaderOf(7, live...)
	other := live[0]
	if other == l7 {
		other = live[1]
	}
	if err := nodes[l7].n.host.Leave(ctx, other); !errors.Is(err, ErrMembership) {
		t.Fatalf("removal leaving no live majority: %v, want ErrMembership", err)
	}

	// Node 4 restarts with the configuration it joined with: storage has the rest.
	n4.n.stop()
	n4.start(t, ctx, map[uint64]string{lead: peers[lead]}, true, 7, 8, 9)
	if got := memberIDs(n4.n.host.Members()); !slices.Equal(got, rest) {
		t.Fatalf("restarted node 4 records members %v, want %v", got, rest)
	}
	for _, gid := range []uint64{7, 8, 9} {
		if v, _ := n4.conf(t, ctx, gid); !slices.Equal(v, rest) {
			t.Fatalf("restarted node 4: group %d voters %v, want %v", gid, v, rest)
		}
		converged(gid, live...)
	}
	propose(leaderOf(7, live...), 7, "restarted=1")
	converged(7, live...)
}

func TestCheckRemoval(t *testing.T) {
	active := func(ids ...uint64) map[uint64]bool {
		m := map[uint64]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	for _, tc := range []struct {
		name string
		gc   groupConf
		id   uint64
		ok   bool
	}{
		{"last voter", groupConf{voters: []uint64{1}, active: active(1)}, 1, false},
		{"learner", groupConf{voters: []uint64{1}, learners: []uint64{2}, active: active(1)}, 2, true},
		{"all live", groupConf{voters: []uint64{1, 2, 3}, active: active(1, 2, 3)}, 3, true},
		{"one of two left down", groupConf{voters: []uint64{1, 2, 3}, active: active(1, 3)}, 3, false},
		{"the down one", groupConf{voters: []uint64{1, 2, 3}, active: active(1, 3)}, 2, true},
		{"four to three, one down", groupConf{voters: []uint64{1, 2, 3, 4}, active: active(1, 2, 4)}, 4, true},
	} {
		err := checkRemoval(tc.gc, tc.id)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrMembership)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestConfContextRoundTrip(t *testing.T) {
	for _, c := range []confContext{
		{node: 1, seq: 1 << 60, set: true, members: []Member{{1, "a:1"}, {4, "127.0.0.1:25672"}}},
		{node: 2, seq: 5},
		{node: 3, seq: 9, set: true, members: []Member{}},
	} {
		got, ok := decodeConfContext(c.encode())
		if !ok || got.node != c.node || got.seq != c.seq || got.set != c.set || !slices.Equal(got.members, c.members) {
			t.Errorf("round trip %+v: %+v %v", c, got, ok)
		}
	}
	for _, bad := range [][]byte{nil, {2}, {1, 1}, append(confContext{node: 1}.encode(), 0), confContext{node: 1, set: true, members: []Member{{1, "x"}}}.encode()[:7]} {
		if _, ok := decodeConfContext(bad); ok {
			t.Errorf("decoded %x", bad)
		}
	}
}

// A node learns members it was not configured with from a peer's hello (the peer's membership
// record), and connects to them: how a node that missed a join, or installed the metadata
// group's snapshot, finds the new members.
func TestTransportLearnsMembersFromHello(t *testing.T) {
	ctx := testContext(t)
	var ms []*memberNode
	all := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		m := newMemberNode(t, id)
		ms = append(ms, m)
		all[id] = m.addr
	}
	// Node 3 (the highest id: it dials nobody) knows only node 2; 1 and 2 know everyone.
	for _, m := range ms {
		peers := all
		if m.id == 3 {
			peers = map[uint64]string{2: all[2], 3: all[3]}
		}
		m.start(t, ctx, peers, false)
		t.Cleanup(m.n.stop)
	}
	// Node 1 dials node 3 (lower id dials), so make node 1 unaware of 3 instead: restart it with
	// only node 2 in its configuration and nothing stored; it must learn node 3 from node 2.
	ms[0].n.stop()
	ms[0].dir = t.TempDir()
	ms[0].start(t, ctx, map[uint64]string{1: all[1], 2: all[2]}, false)
	waitFor(t, ctx, "node 1 to connect to node 3, learnt from node 2's hello", func() bool {
		for _, p := range ms[0].n.tr.Peers() {
			if p.ID == 3 && p.Connected && p.Addr == all[3] {
				return true
			}
		}
		return false
	})
}

// A Join that fails (the new node never comes up, so it never catches up and Join runs out of
// time) is rolled back: no group keeps the node as a learner or voter, no host records it, a
// group created afterwards does not have it; a second Join, with the node up, succeeds.
func TestFailedJoinRollsBack(t *testing.T) {
	ctx := testContext(t)
	nodes := map[uint64]*memberNode{}
	peers := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		nodes[id] = newMemberNode(t, id)
		peers[id] = nodes[id].addr
	}
	for _, m := range nodes {
		m.start(t, ctx, peers, false, 7, 8)
	}
	t.Cleanup(func() {
		for _, m := range nodes {
			if m.n != nil {
				m.n.stop()
			}
		}
	})
	var lead uint64
	waitFor(t, ctx, "a leader of group 7", func() bool {
		lead = nodes[1].groups[7].Leader()
		return lead != 0 && nodes[lead].groups[7].IsLeader()
	})
	host := nodes[lead].n.host

	// Node 4's address: reserved, then closed, so nothing answers there.
	n4 := newMemberNode(t, 4)
	_ = n4.ln.Close()
	n4.ln = nil
	jctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err := host.Join(jctx, 4, n4.addr)
	cancel()
	if err == nil {
		t.Fatal("joining a node that is not there succeeded")
	}
	t.Logf("join of an absent node: %v", err)
	confs := func(want []uint64, gids ...uint64) {
		t.Helper()
		for _, gid := range gids {
			for id := range nodes {
				waitFor(t, ctx, fmt.Sprintf("group %d on node %d to have voters %v and no learner", gid, id, want), func() bool {
					v, l := nodes[id].conf(t, ctx, gid)
					return slices.Equal(v, want) && len(l) == 0
				})
			}
		}
	}
	confs([]uint64{1, 2, 3}, 7, 8)
	for id := range nodes {
		waitFor(t, ctx, fmt.Sprintf("node %d to forget node 4", id), func() bool {
			return slices.Equal(memberIDs(nodes[id].n.host.Members()), []uint64{1, 2, 3})
		})
	}
	for _, m := range nodes {
		m.sms[9] = newKV()
		m.groups[9] = addGroup(t, ctx, m.n.host, 9, m.sms[9])
	}
	confs([]uint64{1, 2, 3}, 9)

	// The retry, with the node up: it converges to a member in full.
	n4.start(t, ctx, map[uint64]string{lead: peers[lead]}, true, 7, 8, 9)
	nodes[4] = n4
	if err := host.Join(ctx, 4, n4.addr); err != nil {
		t.Fatal(err)
	}
	confs([]uint64{1, 2, 3, 4}, 7, 8, 9)
	for id := range nodes {
		if got := memberIDs(nodes[id].n.host.Members()); !slices.Equal(got, []uint64{1, 2, 3, 4}) {
			t.Fatalf("node %d records members %v", id, got)
		}
	}
}

// hookKV is a kv whose Apply also tells onApply (on the host's loop) what it applied.
type hookKV struct {
	*kv
	onApply func(data []byte)
}

func (s hookKV) Apply(index uint64, data []byte) any {
	r := s.kv.Apply(index, data)
	s.onApply(data)
	return r
}

// Groups created while a node joins start with the same voters on every node. Group 7 plays
// the metadata group: a "creator" on the node that leads it creates group after group as the
// broker declares queues (LockMembership, AddGroup, then an entry "create=<id>" in group 7,
// unlock), and every other node, applying that entry, takes BootstrapVoters then and creates
// its copy with AddReplicaWith later, as cmd/parley's standbys do. Meanwhile node 4 joins, which
// changes the membership record in group 7's log. Every copy of every group must start with
// the voters its creator gave it, and end with node 4 among them.
func TestGroupCreationDuringJoin(t *testing.T) {
	ctx := testContext(t)
	nodes := map[uint64]*memberNode{}
	peers := map[uint64]string{}
	for id := uint64(1); id <= 4; id++ {
		nodes[id] = newMemberNode(t, id)
		nodes[id].snapEvery = 1 << 20 // node 4 replays group 7's entries, as it would a log
		if id <= 3 {
			peers[id] = nodes[id].addr
		}
	}
	type created struct {
		gid    uint64
		voters []uint64
	}
	var mu sync.Mutex
	startVoters := map[uint64]map[uint64][]uint64{} // group -> node -> voters it started with
	setStart := func(gid, node uint64, voters []uint64) {
		mu.Lock()
		defer mu.Unlock()
		if startVoters[gid] == nil {
			startVoters[gid] = map[uint64][]uint64{}
		}
		startVoters[gid][node] = voters
	}
	var creator atomic.Uint64
	start := func(m *memberNode, ps map[uint64]string, join bool) {
		todo := make(chan created, 1000)
		m.start(t, ctx, ps, join)
		h := m.n.host
		m.sms[7] = newKV()
		sm := hookKV{kv: m.sms[7], onApply: func(data []byte) {
			if gid, ok := strings.CutPrefix(string(data), "create="); ok && creator.Load() != m.id {
				n, _ := strconv.ParseUint(gid, 10, 64)
				todo <- created{gid: n, voters: h.BootstrapVoters()}
			}
		}}
		m.groups[7] = addGroup(t, ctx, h, 7, sm)
		go func() {
			for c := range todo {
				if _, err := h.AddReplicaWith(ctx, c.gid, newKV(), c.voters); err != nil {
					t.Errorf("node %d: replica of group %d: %v", m.id, c.gid, err)
					continue
				}
				setStart(c.gid, m.id, c.voters)
			}
		}()
		t.Cleanup(func() { close(todo) })
	}
	for id := uint64(1); id <= 3; id++ {
		start(nodes[id], peers, false)
	}
	t.Cleanup(func() {
		for _, m := range nodes {
			if m.n != nil {
				m.n.stop()
			}
		}
	})
	var lead uint64
	waitFor(t, ctx, "a leader of group 7", func() bool {
		lead = nodes[1].groups[7].Leader()
		return lead != 0 && nodes[lead].groups[7].Serving()
	})
	creator.Store(lead)
	host := nodes[lead].n.host
	start(nodes[4], map[uint64]string{lead: peers[lead]}, true)

	var gids []uint64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for gid := uint64(100); gid < 140; gid++ {
			select {
			case <-stop:
				done <- nil
				return
			case <-time.After(5 * time.Millisecond):
			}
			unlock, err := host.LockMembership(ctx)
			if err != nil {
				done <- err
				return
			}
			voters := host.BootstrapVoters()
			if _, err := host.AddGroup(ctx, gid, newKV()); err != nil {
				unlock()
				done <- err
				return
			}
			setStart(gid, lead, voters)
			f, err := nodes[lead].groups[7].Propose(ctx, fmt.Appendf(nil, "create=%d", gid))
			if err == nil {
				_, err = f.Wait(ctx)
			}
			unlock()
			if err != nil {
				done <- fmt.Errorf("group %d: %w", gid, err)
				return
			}
			mu.Lock()
			gids = append(gids, gid)
			mu.Unlock()
		}
		done <- nil
	}()
	time.Sleep(30 * time.Millisecond) // a few groups before the join
	jerr := host.Join(ctx, 4, nodes[4].addr)
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if jerr != nil {
		t.Fatal(jerr)
	}
	// Groups created after Join's last pass are not its business: a later Join would take
	// them; the ones it saw have node 4.
	if err := host.Join(ctx, 4, nodes[4].addr); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	all := slices.Clone(gids)
	mu.Unlock()
	if len(all) < 5 {
		t.Fatalf("only %d groups created during the join: the test did not race them", len(all))
	}
	t.Logf("%d groups created while node 4 joined", len(all))
	waitFor(t, ctx, "every copy of every group created", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, gid := range all {
			// Node 4 creates a copy only once it applies the entry; the others always.
			if len(startVoters[gid]) < 3 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	for _, gid := range all {
		want := startVoters[gid][lead]
		for node, v := range startVoters[gid] {
			if v != nil && !slices.Equal(v, want) {
				t.Errorf("group %d: node %d started it with voters %v, its creator (node %d) with %v", gid, node, v, lead, want)
			}
		}
	}
	mu.Unlock()
	for _, gid := range all {
		for id := range nodes {
			waitFor(t, ctx, fmt.Sprintf("group %d on node %d to have voters 1-4", gid, id), func() bool {
				v, l := nodes[id].conf(t, ctx, gid)
				return slices.Equal(v, []uint64{1, 2, 3, 4}) && len(l) == 0
			})
		}
	}
}
