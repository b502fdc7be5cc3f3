package cluster

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"
)

// BenchmarkIdleGroups3Nodes measures what 1,000 idle groups cost on a three-node cluster in one
// process over loopback TCP (real Pebble): every group has three voters, led by node 1 (as
// cmd/parley's serving node leads every group), parked replicas on nodes 2 and 3. After every
// group has a leader, it samples the process's CPU time (user+system, all three nodes) over
// the benchmark's iterations of one second each and reports it as a share of one core, plus the
// raft messages sent per second and how many of the 3,000 replicas are quiesced at the end.
//
//	go test ./cluster/ -run '^$' -bench IdleGroups3Nodes -benchtime 10x
func BenchmarkIdleGroups3Nodes(b *testing.B) {
	benchGroups3Nodes(b, 1000, false, nil)
}

// BenchmarkIdleGroups3NodesSpread is BenchmarkIdleGroups3Nodes with the groups' leaders spread
// over the three nodes (group i led by node 1 + i%3), as cluster.spread_queues places durable
// queues: the idle cost should not depend on which node leads.
//
//	go test ./cluster/ -run '^$' -bench IdleGroups3NodesSpread -benchtime 10x
func BenchmarkIdleGroups3NodesSpread(b *testing.B) {
	benchGroups3Nodes(b, 1000, true, nil)
}

// BenchmarkAwakeGroups3Nodes is BenchmarkIdleGroups3Nodes with quiescence off, so the 1,000
// groups stay awake and heartbeat every tick (the default 100ms), with heartbeats coalesced per
// node pair (coalesce=true, heartbeat.go) or sent one by one (coalesce=false): what coalescing
// saves. frames/s counts the messages on the wire (a coalesced list is one), msgs/s the raft
// messages they carry.
//
//	go test ./cluster/ -run '^$' -bench AwakeGroups3Nodes -benchtime 10x
func BenchmarkAwakeGroups3Nodes(b *testing.B) {
	for _, coalesce := range []bool{false, true} {
		name := "coalesce=false"
		if coalesce {
			name = "coalesce=true"
		}
		b.Run(name, func(b *testing.B) {
			benchGroups3Nodes(b, 1000, false, func(cfg *Config) {
				cfg.noQuiesce = true
				cfg.noCoalesce = !coalesce
			})
		})
	}
}

// benchGroups3Nodes starts three nodes with groups groups led by node 1, or by the three nodes
// in turn with spread (each host's Config changed by adjust, if not nil), waits for them to
// settle, and reports the CPU and messages of b.N seconds of doing nothing.
func benchGroups3Nodes(b *testing.B, groups int, spread bool, adjust func(*Config)) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	peers := map[uint64]string{}
	lns := map[uint64]net.Listener{}
	for id := uint64(1); id <= 3; id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		lns[id], peers[id] = ln, ln.Addr().String()
	}
	hosts := map[uint64]*Host{}
	trs := map[uint64]*TCPTransport{}
	for id := uint64(1); id <= 3; id++ {
		eng := openEngine(b, b.TempDir(), vfs.Default)
		defer eng.Close()
		tr, err := NewTCPTransport(TCPConfig{NodeID: id, Listener: lns[id], Peers: peers}, zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		defer tr.Close()
		cfg := Config{NodeID: id, Peers: peers, Transport: tr}
		if adjust != nil {
			adjust(&cfg)
		}
		h := startHost(b, cfg, eng)
		defer h.Stop()
		tr.Start(h)
		hosts[id], trs[id] = h, tr
	}
	gs := make([]*Group, groups)
	for i := range groups {
		gid := uint64(1000 + i)
		lead := uint64(1)
		if spread {
			lead = 1 + uint64(i%3)
		}
		for id := uint64(1); id <= 3; id++ {
			if id == lead {
				continue
			}
			if _, err := hosts[id].AddReplica(ctx, gid, nil); err != nil {
				b.Fatal(err)
			}
		}
		gs[i] = addGroup(b, ctx, hosts[lead], gid, newKV())
	}
	for _, g := range gs {
		for g.Leader() == 0 {
			if ctx.Err() != nil {
				b.Fatal("no leader")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(2 * time.Second) // elections settle
	sent := func() (msgs, frames uint64) {
		for _, tr := range trs {
			for _, p := range tr.Peers() {
				msgs, frames = msgs+p.Sent, frames+p.Frames
			}
		}
		return msgs, frames
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c0, t0 := cpu(), time.Now()
	s0, f0 := sent()
	b.ResetTimer()
	for range b.N {
		time.Sleep(time.Second)
	}
	b.StopTimer()
	wall := time.Since(t0)
	s1, f1 := sent()
	b.ReportMetric(float64(cpu()-c0)/float64(wall)*100, "%cpu")
	b.ReportMetric(float64(s1-s0)/wall.Seconds(), "msgs/s")
	b.ReportMetric(float64(f1-f0)/wall.Seconds(), "frames/s")
	quiesced := 0
	for _, h := range hosts {
		quiesced += h.Metrics().Quiesced
	}
	b.ReportMetric(float64(quiesced), "quiesced-replicas")
}
