package cluster

import (
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A group served on one node and parked on two: the parked replicas keep the log (the group
// commits with them), and when the serving node is cut off another node adopts the group with
// its real state machine and sees every committed entry, with no re-election of the group.
// Node 2's stand-in is a real state machine, so it snapshots and compacts its log as the
// serving node does, and the adoption starts from its own snapshot; node 3's is nil and keeps
// the whole log.
func TestReplicaAdoptedAfterFailover(t *testing.T) {
	ctx := testContext(t)
	net := NewLocalNetwork()
	peers := map[uint64]string{1: "n1", 2: "n2", 3: "n3"}
	hosts := map[uint64]*Host{}
	groups := map[uint64]*Group{}
	for id := range peers {
		eng := openEngine(t, t.TempDir(), vfs.Default)
		t.Cleanup(func() { _ = eng.Close() })
		h := startHost(t, Config{
			NodeID: id, Peers: peers, Transport: net.Transport(id),
			TickInterval: 10 * time.Millisecond, SnapshotEntries: 20,
		}, eng)
		net.Attach(h)
		hosts[id] = h
	}
	served := newKV()
	groups[1] = addGroup(t, ctx, hosts[1], 9, served)
	standIns := map[uint64]StateMachine{2: newKV(), 3: nil}
	for _, id := range []uint64{2, 3} {
		g, err := hosts[id].AddReplica(ctx, 9, standIns[id])
		if err != nil {
			t.Fatal(err)
		}
		groups[id] = g
	}
	// Node 1 takes the lead (it serves the group).
	waitFor(t, ctx, "a leader", func() bool { return groups[1].Leader() != 0 })
	if err := hosts[1].TransferLeadership(ctx, 9, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "node 1 serving", groups[1].Serving)
	for i := range 50 {
		for {
			f, err := groups[1].Propose(ctx, []byte(fmt.Sprintf("k%d=%d", i, i)))
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.Wait(ctx)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrDropped) {
				t.Fatalf("proposal %d: %v", i, err)
			}
			// A leader change on a loaded machine: retry, as the broker's publisher would.
		}
	}
	if hosts[1].Metrics().Snapshots == 0 {
		t.Fatal("the serving node took no snapshot")
	}
	if m := hosts[3].Metrics(); m.Snapshots != 0 {
		t.Fatalf("a parked replica with no stand-in took a snapshot: %+v", m)
	}
	waitFor(t, ctx, "node 2's stand-in to snapshot", func() bool { return hosts[2].Metrics().Snapshots > 0 })
	want, _ := served.state()

	net.Isolate(1, true)
	adopted := newKV()
	g, err := hosts[2].AddGroup(ctx, 9, adopted)
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if !g.Serving() || g.Leader() != 2 {
		t.Fatalf("adopted group: serving %v, leader %d", g.Serving(), g.Leader())
	}
	if got, _ := adopted.state(); !maps.Equal(got, want) {
		t.Fatalf("adopted state differs: got %d keys, want %d", len(got), len(want))
	}
	f, err := g.Propose(ctx, []byte("after=adopt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := adopted.get("after"); v != "adopt" {
		t.Fatal("adopted group does not apply new entries")
	}
	st, err := hosts[2].Status(ctx)
	if err != nil || len(st) != 1 || st[0].Leader != 2 || st[0].Parked || st[0].Lag == nil {
		t.Fatalf("status: %+v %v", st, err)
	}
	// A second AddGroup of a running, adopted group is refused.
	if _, err := hosts[2].AddGroup(ctx, 9, newKV()); err == nil {
		t.Fatal("adopting an adopted group succeeded")
	}
}
