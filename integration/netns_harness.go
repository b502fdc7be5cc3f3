package integration

// Clusters in network namespaces (issue 7 item 5).
//
// Topology, all made with iproute2 (`ip`), nothing else needed:
//
//	test process (this netns) ── veth ──┐
//	                                    ├─ br0 in the "switch" netns
//	node 1 netns: eth0 10.A.B.1 ── veth ┤
//	node 2 netns: eth0 10.A.B.2 ── veth ┤
//	node 3 netns: eth0 10.A.B.3 ── veth ┘
//
// The test process has 10.A.B.254 and reaches every node's client and HTTP ports. Each node
// runs in its own namespace (`ip netns exec`, which execs parley, so the pid the test signals
// is parley's) and listens on its own address; its peers are the other nodes' addresses, and
// the client connections a standby forwards go over the same network, so they are cut too.
//
// A link between two nodes is cut with a blackhole route to the peer's /32 in each node's
// namespace: packets are dropped silently, both ways, as a partition does (no RST, no ICMP,
// unlike the proxies of cluster_partition_test.go, which close the connections at once). The
// test process's own link is never cut, so it still reads a cut-off node's status.
//
// Namespaces are named parley-it-<pid>-<n>-…; they are deleted at t.Cleanup, after the
// processes stopped, and namespaces of a test binary that no longer runs (killed before its
// cleanup) are deleted by the next run, with the parley processes still running in them.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Ports every node of a netns cluster uses on its own address (each node has its own network,
// so they do not collide; none is a protocol's standard port).
const (
	nsAMQPPort    = 35672
	nsMQTTPort    = 31883
	nsHTTPPort    = 35680
	nsClusterPort = 35673
)

const nsPrefix = "parley-it-"

var nsSeq atomic.Uint64

// netnsConfig lets guest log in from the test process's address, which is not loopback.
const netnsConfig = `users:
  - name: guest
    password: guest
    tags: [administrator]
    loopback_only: false
`

// NetnsCluster is a cluster of parley processes, each in its own network namespace.
type NetnsCluster struct {
	Nodes []*Node

	t      testing.TB
	prefix string
	net    string // "10.A.B."

	mu  sync.Mutex
	cut map[[2]int]bool // pairs of node ids (lo, hi) whose link is cut
}

// ip runs `ip args...`, bounded, and returns its combined output with the error.
func ip(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// netnsUsable skips the test unless it runs as root with a working `ip netns`.
func netnsUsable(t testing.TB) {
	t.Helper()
	if ExternalURL() != "" {
		t.Skipf("starts its own parley cluster; %s points at an external broker", ExternalURLEnv)
	}
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (ip netns add); run as root, as CI does")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2's ip is not installed (apt-get install iproute2): no network namespaces")
	}
	probe := fmt.Sprintf("%s%d-probe", nsPrefix, os.Getpid())
	if _, err := ip("netns", "add", probe); err != nil {
		t.Skipf("network namespaces unavailable here: %v", err)
	}
	_, _ = ip("netns", "del", probe)
}

// sweepStaleNetns deletes namespaces left by test binaries that died before their cleanup.
func sweepStaleNetns() {
	out, err := ip("netns", "list")
	if err != nil {
		return
	}
	for line := range strings.Lines(out) {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, nsPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", pidText)); err == nil {
			continue // its test binary still runs
		}
		// Its parley processes outlived it (a test binary killed by -timeout runs no cleanup):
		// they would keep the namespace, and their CPU, after its name is gone.
		if pids, err := ip("netns", "pids", name); err == nil {
			for _, f := range strings.Fields(pids) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		_, _ = ip("netns", "del", name)
	}
}

// freeSubnet picks 10.A.B.0/24 that no interface of this namespace uses.
func freeSubnet() (string, error) {
	out, err := ip("-4", "-o", "addr", "show")
	if err != nil {
		return "", err
	}
	routes, _ := ip("-4", "route", "show")
	for range 100 {
		cand := fmt.Sprintf("10.%d.%d.", 200+rand.IntN(50), rand.IntN(256))
		if !strings.Contains(out, " "+cand) && !strings.Contains(routes, cand+"0/") {
			return cand, nil
		}
	}
	return "", fmt.Errorf("no free 10.x.y.0/24 subnet")
}

// StartNetnsCluster starts n parley processes, each in its own network namespace, forming one
// cluster (AMQP, MQTT and HTTP on each node's address), and waits until one of them serves.
// The test is skipped (saying why) when it does not run as root or namespaces do not work.
func StartNetnsCluster(t testing.TB, n int, extraArgs ...string) *NetnsCluster {
	t.Helper()
	netnsUsable(t)
	sweepStaleNetns()
	bin, err := buildParley()
	if err != nil {
		t.Fatalf("building parley: %v", err)
	}
	subnet, err := freeSubnet()
	if err != nil {
		t.Fatal(err)
	}
	c := &NetnsCluster{
		t:      t,
		prefix: fmt.Sprintf("%s%d-%d-", nsPrefix, os.Getpid(), nsSeq.Add(1)),
		net:    subnet,
		cut:    map[[2]int]bool{},
	}
	// Registered before any process starts, so it runs after their cleanups stopped them.
	t.Cleanup(c.teardown)
	sw := c.prefix + "sw"
	hostIf := fmt.Sprintf("prl%x", rand.Uint32()&0xffffff) // unique in this namespace, < 16 bytes
	steps := [][]string{
		{"netns", "add", sw},
		{"-n", sw, "link", "set", "lo", "up"},
		{"-n", sw, "link", "add", "br0", "type", "bridge"},
		{"-n", sw, "link", "set", "br0", "up"},
		{"-n", sw, "link", "add", "host", "type", "veth", "peer", "name", hostIf, "netns", strconv.Itoa(os.Getpid())},
		{"-n", sw, "link", "set", "host", "master", "br0", "up"},
		{"addr", "add", c.net + "254/24", "dev", hostIf},
		{"link", "set", hostIf, "up"},
	}
	for i := 1; i <= n; i++ {
		ns := c.nodeNS(i)
		port := fmt.Sprintf("n%d", i)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"-n", sw, "link", "set", port, "master", "br0", "up"},
			[]string{"-n", ns, "addr", "add", c.IP(i) + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if _, err := ip(s...); err != nil {
			t.Fatalf("setting up the namespaces: %v", err)
		}
	}

	// guest may connect only from loopback by default, as in RabbitMQ; the test process
	// connects from 10.A.B.254.
	conf := filepath.Join(t.TempDir(), "parley.yaml")
	if err := os.WriteFile(conf, []byte(netnsConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	var peers []string
	for i := 1; i <= n; i++ {
		peers = append(peers, fmt.Sprintf("%d=%s", i, c.addr(i, nsClusterPort)))
	}
	for i := 1; i <= n; i++ {
		amqpAddr := c.addr(i, nsAMQPPort)
		mqttAddr := c.addr(i, nsMQTTPort)
		s := &Server{
			t:        t,
			binary:   bin,
			dataDir:  t.TempDir(),
			logPath:  filepath.Join(t.TempDir(), fmt.Sprintf("parley-%d.log", i)),
			AMQPAddr: amqpAddr,
			URL:      "amqp://guest:guest@" + amqpAddr + "/",
			wrap:     []string{"ip", "netns", "exec", c.nodeNS(i)},
			args: append([]string{
				"--config", conf,
				"--node-id", fmt.Sprintf("parley-%d", i),
				"--cluster", c.addr(i, nsClusterPort),
				"--peers", strings.Join(peers, ","),
				"--http", c.addr(i, nsHTTPPort),
				"--mqtt", mqttAddr,
			}, extraArgs...),
		}
		if err := s.start(); err != nil {
			s.printLogTail(t, 60)
			t.Fatalf("starting node %d in %s: %v", i, c.nodeNS(i), err)
		}
		t.Cleanup(func() {
			s.stop()
			if t.Failed() {
				s.printLogTail(t, 60)
			}
		})
		c.Nodes = append(c.Nodes, &Node{Server: s, ID: i, HTTPAddr: c.addr(i, nsHTTPPort), MQTTAddr: mqttAddr})
	}
	WaitServing(t, c.Nodes)
	return c
}

func (c *NetnsCluster) nodeNS(id int) string { return c.prefix + "n" + strconv.Itoa(id) }

// IP is node id's address.
func (c *NetnsCluster) IP(id int) string { return c.net + strconv.Itoa(id) }

func (c *NetnsCluster) addr(id, port int) string {
	return net.JoinHostPort(c.IP(id), strconv.Itoa(port))
}

// teardown deletes the namespaces (the veths and the bridge go with them).
func (c *NetnsCluster) teardown() {
	for i := 1; i <= len(c.Nodes) || i <= 9; i++ {
		_, _ = ip("netns", "del", c.nodeNS(i))
	}
	_, _ = ip("netns", "del", c.prefix+"sw")
}

// SetLink cuts (cut true) or heals the link between nodes a and b, both ways.
func (c *NetnsCluster) SetLink(a, b int, cut bool) {
	c.t.Helper()
	if a == b {
		return
	}
	key := [2]int{min(a, b), max(a, b)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut[key] == cut {
		return
	}
	verb := "add"
	if !cut {
		verb = "del"
	}
	for _, p := range [][2]int{{a, b}, {b, a}} {
		if _, err := ip("-n", c.nodeNS(p[0]), "route", verb, "blackhole", c.IP(p[1])+"/32"); err != nil {
			c.t.Fatalf("link %d-%d: %v", a, b, err)
		}
	}
	c.cut[key] = cut
}

// Isolate cuts (or heals) every link between node id and the other nodes; the test process
// still reaches it.
func (c *NetnsCluster) Isolate(id int, on bool) {
	c.t.Helper()
	for _, n := range c.Nodes {
		if n.ID != id {
			c.SetLink(id, n.ID, on)
		}
	}
}

// HealAll heals every cut link.
func (c *NetnsCluster) HealAll() {
	c.t.Helper()
	c.mu.Lock()
	var pairs [][2]int
	for p, on := range c.cut {
		if on {
			pairs = append(pairs, p)
		}
	}
	c.mu.Unlock()
	for _, p := range pairs {
		c.SetLink(p[0], p[1], false)
	}
}

// Cut reports whether the link between a and b is cut.
func (c *NetnsCluster) Cut(a, b int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut[[2]int{min(a, b), max(a, b)}]
}
