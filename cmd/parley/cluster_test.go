package main

import (
	"errors"
	"fmt"
	"maps"
	"testing"
)

func TestRaftID(t *testing.T) {
	for in, want := range map[string]uint64{"parley-1": 1, "node2": 2, "3": 3, "n-12": 12} {
		if got, err := raftID(in); err != nil || got != want {
			t.Errorf("raftID(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"parley", "", "node-0", "x-99999999999999999999999"} {
		if _, err := raftID(in); !errors.Is(err, errUsage) {
			t.Errorf("raftID(%q): %v, want a configuration error", in, err)
		}
	}
}

func TestParsePeers(t *testing.T) {
	got, err := parsePeers("1=127.0.0.1:25672, parley-2=h2:25672,3=[::1]:9")
	want := map[uint64]string{1: "127.0.0.1:25672", 2: "h2:25672", 3: "[::1]:9"}
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("parsePeers: %v, %v", got, err)
	}
	for _, in := range []string{"1", "1=nohostport", "x=h:1", "1=h:1,1=h:2"} {
		if _, err := parsePeers(in); !errors.Is(err, errUsage) {
			t.Errorf("parsePeers(%q): %v, want a configuration error", in, err)
		}
	}
}

// The development cluster's three configs load, name three nodes that agree on the peers, and
// give every listener of every node its own port, so `make cluster` runs them on one machine.
func TestDevClusterConfigs(t *testing.T) {
	used := map[string]string{}
	var peers map[uint64]string
	for i := 1; i <= 3; i++ {
		file := fmt.Sprintf("../../configs/cluster/node%d.yaml", i)
		cfg, err := LoadConfig([]string{"--config", file}, noEnv)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if id, err := raftID(cfg.NodeID); err != nil || id != uint64(i) {
			t.Fatalf("%s: node id %q", file, cfg.NodeID)
		}
		p, err := parsePeers(cfg.Cluster.Peers)
		if err != nil || len(p) != 3 {
			t.Fatalf("%s: peers %v %v", file, p, err)
		}
		if peers != nil && !maps.Equal(p, peers) {
			t.Fatalf("%s: peers differ from node 1's", file)
		}
		peers = p
		if p[uint64(i)] != cfg.Cluster.Listen {
			t.Fatalf("%s: listens on %s but the peers say %s", file, cfg.Cluster.Listen, p[uint64(i)])
		}
		for name, addr := range map[string]string{
			"amqp": cfg.AMQP, "amqps": cfg.AMQPS, "mqtt": cfg.MQTT, "mqtts": cfg.MQTTS, "stomp": cfg.STOMP,
			"stomps": cfg.STOMPS, "http": cfg.HTTP, "ws_stomp": cfg.WSStomp, "ws_mqtt": cfg.WSMQTT, "ws": cfg.WS,
			"prometheus": cfg.Prometheus, "cluster": cfg.Cluster.Listen,
		} {
			if addr == "off" {
				continue
			}
			if other, dup := used[addr]; dup {
				t.Errorf("%s %s: %s already used by %s", file, name, addr, other)
			}
			used[addr] = fmt.Sprintf("node%d %s", i, name)
		}
	}
}
