package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Node is one parley process of a cluster started by StartCluster.
type Node struct {
	*Server
	// ID is the node's number (its node_id is parley-<ID>).
	ID int
	// HTTPAddr serves GET /api/cluster/status.
	HTTPAddr string
	// MQTTAddr is the node's MQTT listener.
	MQTTAddr string
	// ClusterAddr is the node's cluster (raft transport) address.
	ClusterAddr string
}

// ClusterStatus is the part of GET /api/cluster/status the tests read.
type ClusterStatus struct {
	Node           uint64 `json:"node"`
	Serving        bool   `json:"serving"`
	MetadataLeader uint64 `json:"metadata_leader"`
	Groups         []struct {
		ID       uint64            `json:"id"`
		Leader   uint64            `json:"leader"`
		Term     uint64            `json:"term"`
		Commit   uint64            `json:"commit"`
		Applied  uint64            `json:"applied"`
		Parked   bool              `json:"parked"`
		Voters   []uint64          `json:"voters"`
		Learners []uint64          `json:"learners"`
		Lag      map[string]uint64 `json:"lag"`
		Quiesced bool              `json:"quiesced"`
		Lease    bool              `json:"lease"`
	} `json:"groups"`
	Members []struct {
		ID   uint64 `json:"id"`
		Addr string `json:"addr"`
	} `json:"members"`
}

// StartCluster starts n parley processes on loopback forming one cluster (each with its own
// data directory, AMQP, MQTT, HTTP and cluster ports) and waits until one of them serves.
func StartCluster(t testing.TB, n int) []*Node {
	t.Helper()
	return StartClusterArgs(t, n)
}

// StartClusterArgs is StartCluster with more arguments for every node's command line.
func StartClusterArgs(t testing.TB, n int, extraArgs ...string) []*Node {
	t.Helper()
	return StartClusterNodeArgs(t, n, nil, extraArgs...)
}

// StartClusterNodeArgs is StartClusterArgs with, besides, arguments of each node's own
// (perNode(i) for the node of index i; nil: none), such as a listener's port.
func StartClusterNodeArgs(t testing.TB, n int, perNode func(i int) []string, extraArgs ...string) []*Node {
	t.Helper()
	if ExternalURL() != "" {
		t.Skipf("starts its own parley cluster; %s points at an external broker", ExternalURLEnv)
	}
	clusterPorts := make([]int, n)
	httpPorts := make([]int, n)
	mqttPorts := make([]int, n)
	var peers []string
	for i := range n {
		var err error
		if clusterPorts[i], err = freePort(); err != nil {
			t.Fatal(err)
		}
		if httpPorts[i], err = freePort(); err != nil {
			t.Fatal(err)
		}
		if mqttPorts[i], err = freePort(); err != nil {
			t.Fatal(err)
		}
		peers = append(peers, fmt.Sprintf("%d=127.0.0.1:%d", i+1, clusterPorts[i]))
	}
	nodes := make([]*Node, n)
	for i := range n {
		httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPorts[i]))
		mqttAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(mqttPorts[i]))
		s := StartParley(t, append([]string{
			"--node-id", fmt.Sprintf("parley-%d", i+1),
			"--cluster", net.JoinHostPort("127.0.0.1", strconv.Itoa(clusterPorts[i])),
			"--peers", strings.Join(peers, ","),
			"--http", httpAddr,
			"--mqtt", mqttAddr}, append(nodeArgs(perNode, i), extraArgs...)...)...)
		nodes[i] = &Node{Server: s, ID: i + 1, HTTPAddr: httpAddr, MQTTAddr: mqttAddr,
			ClusterAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(clusterPorts[i]))}
	}
	WaitServing(t, nodes)
	return nodes
}

func nodeArgs(perNode func(int) []string, i int) []string {
	if perNode == nil {
		return nil
	}
	return perNode(i)
}

// Status reads the node's cluster status.
func (n *Node) Status(ctx context.Context) (ClusterStatus, error) {
	var st ClusterStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTPAddr+"/api/cluster/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// WaitServing waits (bounded) until one of the running nodes says it serves, and returns it.
func WaitServing(t testing.TB, nodes []*Node) *Node {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if !n.Running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := n.Status(ctx)
			cancel()
			if err == nil && st.Serving {
				return n
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no node of the cluster serves within 60s")
	return nil
}

// WaitConverged waits (bounded by within) until every node in nodes reports the same groups,
// each with the same leader, term and commit index on every node, applied as far as it is
// committed: the nodes' data has converged. It fails the test with the last statuses if not.
func WaitConverged(t testing.TB, nodes []*Node, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for {
		why := converged(nodes)
		if why == "" {
			return
		}
		last = why
		if time.Now().After(deadline) {
			t.Fatalf("the nodes' data did not converge within %v: %s", within, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// converged returns "" when the nodes agree (see WaitConverged), else what differs.
func converged(nodes []*Node) string {
	type key struct{ leader, term, commit uint64 }
	var ref map[uint64]key
	var refID int
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := n.Status(ctx)
		cancel()
		if err != nil {
			return fmt.Sprintf("node %d: %v", n.ID, err)
		}
		groups := map[uint64]key{}
		for _, g := range st.Groups {
			if g.Applied < g.Commit {
				return fmt.Sprintf("node %d group %d: applied %d < commit %d", n.ID, g.ID, g.Applied, g.Commit)
			}
			if g.Leader == 0 {
				return fmt.Sprintf("node %d group %d: no leader", n.ID, g.ID)
			}
			groups[g.ID] = key{g.Leader, g.Term, g.Commit}
		}
		if ref == nil {
			ref, refID = groups, n.ID
			continue
		}
		if len(groups) != len(ref) {
			return fmt.Sprintf("node %d has %d groups, node %d has %d", n.ID, len(groups), refID, len(ref))
		}
		for id, k := range ref {
			if groups[id] != k {
				return fmt.Sprintf("group %d: node %d has (leader, term, commit) %v, node %d has %v", id, refID, k, n.ID, groups[id])
			}
		}
	}
	return ""
}

// StartJoiningNode starts node id as a new node for a running cluster: its --peers lists only
// the members given (not itself), so it bootstraps nothing and waits for `parleyctl cluster
// join` to make it a member. Its client listener forwards to the serving node meanwhile.
func StartJoiningNode(t testing.TB, id int, members ...*Node) *Node {
	t.Helper()
	return StartJoiningNodeArgs(t, id, nil, members...)
}

// StartJoiningNodeArgs is StartJoiningNode with more arguments for the node's command line.
func StartJoiningNodeArgs(t testing.TB, id int, extraArgs []string, members ...*Node) *Node {
	t.Helper()
	clusterPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	httpPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	var peers []string
	for _, m := range members {
		peers = append(peers, fmt.Sprintf("%d=%s", m.ID, m.ClusterAddr))
	}
	clusterAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(clusterPort))
	httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))
	args := []string{
		"--node-id", fmt.Sprintf("parley-%d", id),
		"--cluster", clusterAddr,
		"--peers", strings.Join(peers, ","),
		"--http", httpAddr}
	s := StartParley(t, append(args, extraArgs...)...)
	return &Node{Server: s, ID: id, HTTPAddr: httpAddr, ClusterAddr: clusterAddr}
}

var (
	ctlOnce sync.Once
	ctlPath string
	ctlErr  error
)

// Parleyctl runs the parleyctl binary (built once per test binary) with args, bounded, and
// returns its combined output.
func Parleyctl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctlOnce.Do(func() {
		dir, err := os.MkdirTemp("", "parleyctl-integration-bin-")
		if err != nil {
			ctlErr = err
			return
		}
		ctlPath = filepath.Join(dir, "parleyctl")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", ctlPath, "github.com/parleymq/parley/cmd/parleyctl").CombinedOutput()
		if err != nil {
			ctlErr = fmt.Errorf("go build ./cmd/parleyctl: %v\n%s", err, out)
		}
	})
	if ctlErr != nil {
		t.Fatal(ctlErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, ctlPath, args...).CombinedOutput()
	return string(out), err
}
