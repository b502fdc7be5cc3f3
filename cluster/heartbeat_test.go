package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

func sampleBeats() []Heartbeat {
	return []Heartbeat{
		{Group: 0, Term: 1, Commit: 0},
		{Group: 1<<63 | 7, Term: 12, Commit: 1 << 40},
		{Group: 9, Term: 3, Resp: true},
		{Lease: true, Term: 1<<50 + 12345},
		{Lease: true, Resp: true, Term: 1},
	}
}

// A heartbeat list written by the encoder reads back the same, and corrupt lists are refused
// with ErrBadFrame.
func TestHeartbeatWire(t *testing.T) {
	buf := appendHeartbeats(nil, sampleBeats())
	buf = appendHeartbeats(buf, nil)
	r := bufio.NewReader(bytes.NewReader(buf))
	for _, want := range [][]Heartbeat{sampleBeats(), {}} {
		kind, body, err := readFrame(r, 1<<20)
		if err != nil || kind != kindHeartbeats {
			t.Fatalf("heartbeat frame: kind %d, %v", kind, err)
		}
		got, err := decodeHeartbeats(body)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("heartbeats: %+v, %v; want %+v", got, err, want)
		}
	}
	for name, body := range map[string][]byte{
		"huge count":      {0xff, 0xff, 0xff, 0x7f, 0, 1, 1},
		"unknown flag":    {1, 4, 1, 1},
		"lease cut short": {1, 3},
		"cut short":       {2, 1, 1, 1},
		"no commit":       {1, 0, 1, 1},
		"trailing bytes":  {1, 1, 1, 1, 0},
		"bad varint":      {1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	} {
		if _, err := decodeHeartbeats(body); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v, want ErrBadFrame", name, err)
		}
	}
}

// Only a heartbeat (or response) made of group, term and commit is coalesced, and it expands
// back into the message raft sent.
func TestBeatOf(t *testing.T) {
	u := func(v uint64) *uint64 { return &v }
	hb := &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: u(1), To: u(2), Term: u(5), Commit: u(9)}
	b, ok := beatOf(3, hb)
	if !ok || b != (Heartbeat{Group: 3, Term: 5, Commit: 9}) {
		t.Fatalf("heartbeat: %+v %v", b, ok)
	}
	if m := b.message(1, 2); m.GetType() != raftpb.MsgHeartbeat || m.GetFrom() != 1 || m.GetTo() != 2 ||
		m.GetTerm() != 5 || m.GetCommit() != 9 {
		t.Fatalf("expanded heartbeat: %v", m)
	}
	resp := &raftpb.Message{Type: raftpb.MsgHeartbeatResp.Enum(), From: u(2), To: u(1), Term: u(5)}
	b, ok = beatOf(3, resp)
	if !ok || b != (Heartbeat{Group: 3, Term: 5, Resp: true}) {
		t.Fatalf("response: %+v %v", b, ok)
	}
	if m := b.message(2, 1); m.GetType() != raftpb.MsgHeartbeatResp || m.GetFrom() != 2 || m.GetTo() != 1 ||
		m.GetTerm() != 5 || m.GetCommit() != 0 {
		t.Fatalf("expanded response: %v", m)
	}
	for name, m := range map[string]*raftpb.Message{
		"append":          {Type: raftpb.MsgApp.Enum(), From: u(1), To: u(2), Term: u(5)},
		"read index":      {Type: raftpb.MsgHeartbeat.Enum(), From: u(1), To: u(2), Term: u(5), Context: []byte("ri")},
		"quiesce":         {Type: raftpb.MsgHeartbeat.Enum(), From: u(1), To: u(2), Term: u(5), Index: u(9), Context: quiesceCtx},
		"wake":            {Type: raftpb.MsgHeartbeatResp.Enum(), From: u(2), To: u(1), Term: u(5), Context: wakeCtx},
		"response commit": {Type: raftpb.MsgHeartbeatResp.Enum(), From: u(2), To: u(1), Term: u(5), Commit: u(1)},
	} {
		if _, ok := beatOf(3, m); ok {
			t.Errorf("%s coalesced", name)
		}
	}
}

// Awake groups (quiescence off) between three nodes over TCP: their heartbeats travel as one
// list per peer and tick, the lists keep every follower with its leader (no election for many
// election timeouts), and the groups replicate. The same cluster without coalescing sends a
// message per heartbeat.
//
// With old3, node 3 does not offer the lists in its hello, as a node of an earlier version: the
// others send it single heartbeats, and it is followed and heartbeats as well as the others.
func TestCoalescedHeartbeatsOverTCP(t *testing.T) {
	for _, tc := range []struct{ coalesce, old3 bool }{{true, false}, {false, false}, {true, true}} {
		coalesce := tc.coalesce
		t.Run(fmt.Sprintf("coalesce=%v,old3=%v", coalesce, tc.old3), func(t *testing.T) {
			ctx := testContext(t)
			c := startQClusterWith(t, ctx, 20, func(cfg *Config) {
				cfg.noQuiesce = true
				cfg.noCoalesce = !coalesce
				if tc.old3 && cfg.NodeID == 3 {
					cfg.Transport.(*TCPTransport).noBeatOffer = true
				}
			})
			terms := func() map[[2]uint64]uint64 {
				out := map[[2]uint64]uint64{}
				for id, n := range c.nodes {
					st, err := n.host.Status(ctx)
					if err != nil {
						t.Fatal(err)
					}
					for _, g := range st {
						out[[2]uint64{id, g.ID}] = g.Term
					}
				}
				return out
			}
			frames := func() (sent, frames uint64) {
				for _, n := range c.nodes {
					for _, p := range n.tr.Peers() {
						sent, frames = sent+p.Sent, frames+p.Frames
					}
				}
				return sent, frames
			}
			m0 := map[uint64]Metrics{}
			for id, n := range c.nodes {
				m0[id] = n.host.Metrics()
			}
			t0 := terms()
			s0, f0 := frames()
			time.Sleep(5 * c.nodes[1].host.electionTimeout()) // long enough for any follower to campaign
			if t1 := terms(); len(t1) != 3*len(c.ids) || !maps.Equal(t0, t1) {
				t.Fatalf("terms changed while the leader heartbeated: %v, then %v", t0, t1)
			}
			for _, gid := range c.ids {
				for id, n := range c.nodes {
					if l := n.groups[gid].Leader(); l != 1 {
						t.Fatalf("group %d on node %d: leader %d, want 1", gid, id, l)
					}
				}
			}
			s1, f1 := frames()
			for id, n := range c.nodes {
				m := n.host.Metrics()
				beats, lists := m.HeartbeatsCoalesced-m0[id].HeartbeatsCoalesced, m.HeartbeatLists-m0[id].HeartbeatLists
				if m.Quiesced != 0 {
					t.Fatalf("node %d quiesced %d groups with quiescence off", id, m.Quiesced)
				}
				if !coalesce {
					if beats != 0 {
						t.Fatalf("node %d coalesced %d heartbeats with coalescing off", id, beats)
					}
					continue
				}
				// Each node sends heartbeats (node 1) or responses (2 and 3) to its peers, a
				// tick's worth of twenty groups in each list.
				if lists == 0 || beats < 2*lists {
					t.Fatalf("node %d: %d heartbeats in %d lists", id, beats, lists)
				}
			}
			t.Logf("%d raft messages in %d frames", s1-s0, f1-f0)
			if tc.old3 {
				for _, id := range []uint64{1, 2} {
					for _, p := range c.nodes[id].tr.Peers() {
						if p.ID == 3 && p.Sent >= 2*p.Frames {
							t.Fatalf("node %d sent node 3, which does not read lists, %d messages in %d frames", id, p.Sent, p.Frames)
						}
					}
				}
			}
			if coalesce && (s1-s0) < 2*(f1-f0) {
				t.Fatalf("%d raft messages in %d frames: heartbeats were not coalesced", s1-s0, f1-f0)
			}
			gid := c.ids[3]
			c.propose(2, gid, "awake=yes")
			waitFor(t, ctx, "the entry applied on every node", func() bool {
				for _, n := range c.nodes {
					if v, _ := n.sms[gid].get("awake"); v != "yes" {
						return false
					}
				}
				return true
			})
		})
	}
}
