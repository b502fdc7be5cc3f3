package cluster

import (
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// TestThreeNodesOverLocalNetwork runs one group on three hosts connected by
// a LocalNetwork: the same host code a single node runs, with peers. It
// checks replication, a proposal forwarded by a follower, and failover when
// the leader is cut off.
func TestThreeNodesOverLocalNetwork(t *testing.T) {
	ctx := testContext(t)
	net := NewLocalNetwork()
	peers := map[uint64]string{1: "n1", 2: "n2", 3: "n3"}
	hosts := map[uint64]*Host{}
	sms := map[uint64]*kv{}
	groups := map[uint64]*Group{}
	for id := range peers {
		eng := openEngine(t, t.TempDir(), vfs.Default)
		t.Cleanup(func() { _ = eng.Close() })
		h := startHost(t, Config{
			NodeID:       id,
			Peers:        peers,
			Transport:    net.Transport(id),
			TickInterval: 5 * time.Millisecond,
			// Small, so the cut-off node falls behind the compacted log
			// and must catch up from a snapshot.
			SnapshotEntries: 20,
		}, eng)
		net.Attach(h)
		hosts[id] = h
		sms[id] = newKV()
		groups[id] = addGroup(t, ctx, h, 100, sms[id])
	}
	t.Cleanup(func() {
		for _, h := range hosts {
			h.Stop()
		}
	})

	leaderAmong := func(ids ...uint64) uint64 {
		var lead uint64
		waitFor(t, ctx, "a leader all agree on", func() bool {
			lead = groups[ids[0]].Leader()
			if lead == 0 {
				return false
			}
			for _, id := range ids {
				if groups[id].Leader() != lead {
					return false
				}
			}
			return groups[lead].IsLeader()
		})
		return lead
	}
	propose := func(id uint64, cmd string) {
		t.Helper()
		for {
			f, err := groups[id].Propose(ctx, []byte(cmd))
			if err != nil {
				t.Fatalf("propose %s on node %d: %v", cmd, id, err)
			}
			_, err = f.Wait(ctx)
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("propose %s on node %d: %v", cmd, id, err)
			}
			// Dropped by an election in progress: retry, as a client would.
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
	converged := func(ids ...uint64) {
		t.Helper()
		waitFor(t, ctx, "replicas to converge", func() bool {
			want, _ := sms[ids[0]].state()
			for _, id := range ids[1:] {
				got, _ := sms[id].state()
				if !maps.Equal(got, want) {
					return false
				}
			}
			return true
		})
	}

	lead := leaderAmong(1, 2, 3)
	for i := range 50 {
		propose(lead, fmt.Sprintf("a%d=x", i))
	}
	follower := lead%3 + 1
	propose(follower, "forwarded=yes")
	converged(1, 2, 3)
	if v, _ := sms[lead].get("forwarded"); v != "yes" {
		t.Fatalf("forwarded proposal not applied on the leader")
	}

	// Cut the leader off: the other two elect a new one and go on.
	net.Isolate(lead, true)
	var rest []uint64
	for id := range peers {
		if id != lead {
			rest = append(rest, id)
		}
	}
	waitFor(t, ctx, "a new leader", func() bool {
		l := groups[rest[0]].Leader()
		return l != 0 && l != lead && groups[l].IsLeader()
	})
	newLead := leaderAmong(rest...)
	for i := range 60 {
		propose(newLead, fmt.Sprintf("b%d=y", i))
	}
	converged(rest...)

	// Heal: the old leader catches up, from a snapshot since the log it
	// misses is compacted away.
	net.Isolate(lead, false)
	converged(1, 2, 3)
	if v, _ := sms[lead].get("b59"); v != "y" {
		t.Fatal("old leader did not catch up")
	}
	var snaps uint64
	for _, h := range hosts {
		snaps += h.Metrics().Snapshots
	}
	if snaps == 0 {
		t.Fatal("no snapshot taken")
	}
	if m := hosts[lead].Metrics(); m.SnapshotsReceived == 0 {
		t.Fatalf("old leader caught up without a snapshot: %+v", m)
	}
	propose(lead%3+1, "z=1")
	converged(1, 2, 3)
}

// dropProposals is a Transport that loses every forwarded proposal, as a full peer queue or a
// leader in the middle of a transfer does.
type dropProposals struct{ inner Transport }

func (d dropProposals) Send(group uint64, msgs []*raftpb.Message) {
	kept := msgs[:0:0]
	for _, m := range msgs {
		if m.GetType() != raftpb.MsgProp {
			kept = append(kept, m)
		}
	}
	if len(kept) > 0 {
		d.inner.Send(group, kept)
	}
}

// A proposal a follower forwards to its leader and that is lost on the way completes with
// ErrDropped (bounded) instead of waiting for ever while the leader stays the same.
func TestLostForwardedProposalExpires(t *testing.T) {
	ctx := testContext(t)
	net := NewLocalNetwork()
	peers := map[uint64]string{1: "n1", 2: "n2", 3: "n3"}
	groups := map[uint64]*Group{}
	for id := range peers {
		eng := openEngine(t, t.TempDir(), vfs.NewMem())
		t.Cleanup(func() { _ = eng.Close() })
		h := startHost(t, Config{NodeID: id, Peers: peers, Transport: dropProposals{net.Transport(id)},
			TickInterval: 5 * time.Millisecond}, eng)
		net.Attach(h)
		groups[id] = addGroup(t, ctx, h, 3, newKV())
	}
	var lead uint64
	waitFor(t, ctx, "a leader", func() bool {
		lead = groups[1].Leader()
		return lead != 0 && groups[lead].IsLeader()
	})
	follower := lead%3 + 1
	f, err := groups[follower].Propose(ctx, []byte("lost=1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Wait(ctx); !errors.Is(err, ErrDropped) {
		t.Fatalf("lost forwarded proposal: %v, want ErrDropped", err)
	}
	if groups[follower].Leader() != lead {
		t.Fatalf("the leader changed (%d -> %d): the test did not test expiry", lead, groups[follower].Leader())
	}
	// The leader's own proposals are unaffected.
	f, err = groups[lead].Propose(ctx, []byte("kept=1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}
