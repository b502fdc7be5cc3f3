package integration

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3"
	sframe "github.com/go-stomp/stomp/v3/frame"
)

// Small queues packed into partition groups (issue 7 item 2, broker/partition.go): MQTT
// persistent sessions and durable STOMP subscriptions share a few raft groups.

// Partition group ids as broker/meta numbers them: [1<<61, 1<<62); a queue's own group is at or
// above 1<<62 (or, from before groups were recorded, has the top bit set).
const (
	partitionGroupBase = uint64(1) << 61
	ownGroupBase       = uint64(1) << 62
)

// groupKinds counts a node's raft groups: partition groups and queues' own groups.
func groupKinds(t testing.TB, n *Node) (partitions, own int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := n.Status(ctx)
	if err != nil {
		t.Fatalf("node %d status: %v", n.ID, err)
	}
	for _, g := range st.Groups {
		switch {
		case g.ID >= partitionGroupBase && g.ID < ownGroupBase:
			partitions++
		case g.ID >= ownGroupBase:
			own++
		}
	}
	return partitions, own
}

// parkSessions connects n MQTT 3.1.1 persistent sessions prefix-<i> through addr, each
// subscribing to its own topic at QoS 1, and disconnects them.
func parkSessions(t testing.TB, addr, prefix string, n int) {
	t.Helper()
	for i := range n {
		c, _, _ := connect3(t, addr, fmt.Sprintf("%s-%d", prefix, i), false)
		wait3(t, "subscribe", c.Subscribe(fmt.Sprintf("%s/%d", prefix, i), 1, nil))
		c.Disconnect(50)
	}
}

// queueForSessions publishes, through addr, the messages <prefix>-<i>-<j> (j < per) to each
// session's topic.
func queueForSessions(t testing.TB, addr, prefix string, n, per int) {
	t.Helper()
	p, _, _ := connect3(t, addr, fmt.Sprintf("pub-%s-%d", prefix, time.Now().UnixNano()), true)
	for i := range n {
		for j := range per {
			wait3(t, "publish", p.Publish(fmt.Sprintf("%s/%d", prefix, i), 1, false, fmt.Sprintf("%s-%d-%d", prefix, i, j)))
		}
	}
	p.Disconnect(50)
}

// expectSessions reconnects each session through addr and waits for its queued messages
// (redeliveries flagged DUP of the same ones allowed).
func expectSessions(t testing.TB, addr, prefix string, n, per int) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		c, in, present := connect3(t, addr, id, false)
		if !present {
			t.Errorf("%s: session present false", id)
		}
		var want []string
		again := map[string]bool{}
		for j := range per {
			w := fmt.Sprintf("%s-%d-%d", prefix, i, j)
			want, again[w] = append(want, w), true
		}
		expectPayloads(t, id, in, again, want...)
		c.Disconnect(50)
	}
}

// Many persistent sessions on one node share at most partition_groups (16) raft groups, not one
// each; a kill -9 keeps every session's queued messages.
func TestMQTTSessionsSharePartitionGroups(t *testing.T) {
	if ExternalURL() != "" {
		t.Skip("reads the broker's cluster status and kills it")
	}
	httpAddr := freeAddr(t)
	s, addr := StartParleyMQTT(t, "--http", httpAddr)
	n := &Node{Server: s, ID: 1, HTTPAddr: httpAddr}
	const sessions = 100
	parkSessions(t, addr, "pdev", sessions)
	queueForSessions(t, addr, "pdev", sessions, 2)
	parts, own := groupKinds(t, n)
	if parts == 0 || parts > 16 || own != 0 {
		t.Fatalf("%d persistent sessions run %d partition groups and %d own groups; want 1 to 16 and 0", sessions, parts, own)
	}
	s.Kill()
	s.Restart()
	waitListening(t, addr)
	if p, o := groupKinds(t, n); p != parts || o != 0 {
		t.Fatalf("after kill -9: %d partition groups and %d own groups, want %d and 0", p, o, parts)
	}
	expectSessions(t, addr, "pdev", sessions, 2)
}

// durableSub are the headers of a durable STOMP topic subscription.
func durableSub(id string) []func(*sframe.Frame) error {
	return []func(*sframe.Frame) error{stomp.SubscribeOpt.Id(id), stomp.SubscribeOpt.Header("durable", "true"),
		stomp.SubscribeOpt.Header("auto-delete", "false")}
}

// extractDataDir replaces dir's contents with the data directory in the tar.gz archive.
func extractDataDir(t testing.TB, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Clean(h.Name)
		if h.Typeflag != tar.TypeReg || strings.Contains(name, "..") || strings.Contains(name, "/") {
			continue
		}
		out, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, tr); err != nil { //nolint:gosec // a committed fixture of a few KB
			t.Fatal(err)
		}
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A data directory written by the build before partitions (testdata/datadir-before-partitions:
// five MQTT 3.1.1 persistent sessions old-dev-<i> subscribed to old/dev/<i> with three QoS 1
// messages queued each, old-<i>-<j>, and a durable STOMP subscription old-sub to
// /topic/old.stomp with three persistent messages, stomp-<j>; made by the .py next to it
// against that build, stopped with SIGTERM) starts, keeps those queues in their own groups with
// their messages, and packs only the sessions declared afterwards; a restart keeps both.
func TestDataDirBeforePartitions(t *testing.T) {
	if ExternalURL() != "" {
		t.Skip("runs parley on a data directory of its own")
	}
	httpAddr, stompAddr := freeAddr(t), freeAddr(t)
	s, addr := StartParleyMQTT(t, "--http", httpAddr, "--stomp", stompAddr)
	n := &Node{Server: s, ID: 1, HTTPAddr: httpAddr}
	s.stop()
	extractDataDir(t, filepath.Join("testdata", "datadir-before-partitions.tar.gz"), s.dataDir)
	if err := s.start(); err != nil {
		t.Fatalf("parley on the old data directory: %v", err)
	}
	waitListening(t, addr)
	if got, _ := os.ReadFile(filepath.Join(s.dataDir, "FORMAT")); string(got) != "parley-data 4\n" {
		t.Errorf("FORMAT after opening the old directory: %q, want parley-data 4 (an older build must refuse it now)", got)
	}
	if p, own := groupKinds(t, n); p != 0 || own != 6 {
		t.Fatalf("old data directory: %d partition groups and %d own groups, want 0 and 6 (5 sessions, 1 STOMP subscription)", p, own)
	}
	// New sessions go into partitions; the old ones are untouched.
	parkSessions(t, addr, "newdev", 5)
	queueForSessions(t, addr, "newdev", 5, 1)
	p, own := groupKinds(t, n)
	if p == 0 || own != 6 {
		t.Fatalf("after new sessions: %d partition groups and %d own groups, want some and 6", p, own)
	}
	s.Restart()
	waitListening(t, addr)
	if p2, own2 := groupKinds(t, n); p2 != p || own2 != 6 {
		t.Fatalf("after a restart: %d partition groups and %d own groups, want %d and 6", p2, own2, p)
	}
	expectSessions(t, addr, "newdev", 5, 1)
	for i := range 5 {
		id := fmt.Sprintf("old-dev-%d", i)
		c, in, present := connect3(t, addr, id, false)
		if !present {
			t.Errorf("%s: session present false", id)
		}
		expectPayloads(t, id, in, nil, fmt.Sprintf("old-%d-0", i), fmt.Sprintf("old-%d-1", i), fmt.Sprintf("old-%d-2", i))
		c.Disconnect(50)
	}
	c := stompDial(t, stompAddr)
	sub, err := c.Subscribe("/topic/old.stomp", stomp.AckAuto, durableSub("old-sub")...)
	if err != nil {
		t.Fatal(err)
	}
	for j := range 3 {
		if m := stompRecv(t, sub); string(m.Body) != fmt.Sprintf("stomp-%d", j) {
			t.Fatalf("old durable STOMP subscription: got %q, want stomp-%d", m.Body, j)
		}
	}
}

// In a three-node cluster, persistent MQTT sessions and durable STOMP subscriptions run in
// partition groups, which every node replicates (one parked replica per partition group on a
// standby, not one per queue); after kill -9 of the serving node, a surviving node has every
// session's queued messages and the STOMP subscription's.
func TestClusterPartitionsSurviveKill(t *testing.T) {
	stompAddrs := make([]string, 3)
	for i := range stompAddrs {
		stompAddrs[i] = freeAddr(t)
	}
	nodes := StartClusterNodeArgs(t, 3, func(i int) []string { return []string{"--stomp", stompAddrs[i]} })
	const sessions = 20
	parkSessions(t, nodes[0].MQTTAddr, "cdev", sessions)

	c := stompDial(t, stompAddrs[1])
	if _, err := c.Subscribe("/topic/cl.stomp", stomp.AckClientIndividual, durableSub("cl-sub")...); err != nil {
		t.Fatal(err)
	}
	syncReceipt(t, c)
	_ = c.Disconnect()

	queueForSessions(t, nodes[2].MQTTAddr, "cdev", sessions, 2)
	p := stompDial(t, stompAddrs[2])
	for j := range 3 {
		if err := p.Send("/topic/cl.stomp", "text/plain", []byte(fmt.Sprint("st-", j)), stomp.SendOpt.Receipt, stomp.SendOpt.Header("persistent", "true")); err != nil {
			t.Fatal(err)
		}
	}
	_ = p.Disconnect()

	// Every node runs the same partition groups and no queue group of its own.
	var parts int
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range nodes {
		for {
			p, own := groupKinds(t, n)
			if n == nodes[0] {
				parts = p
			}
			if p == parts && own == 0 && p > 0 && p <= 16 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d runs %d partition groups and %d own groups; want %d (1 to 16) and 0", n.ID, p, own, parts)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	killed, rest := killServing(t, nodes)
	t.Logf("node %d killed", killed.ID)
	expectSessions(t, rest[0].MQTTAddr, "cdev", sessions, 2)
	var survivor string
	for i, n := range nodes {
		if n == rest[1] {
			survivor = stompAddrs[i]
		}
	}
	deadlineConn := time.Now().Add(clusterMQTTWait)
	var sc *stomp.Conn
	for {
		var err error
		sc, err = stomp.Dial("tcp", survivor, stomp.ConnOpt.Login("guest", "guest"), stomp.ConnOpt.Host("/"), stomp.ConnOpt.HeartBeat(0, 0))
		if err == nil {
			break
		}
		if time.Now().After(deadlineConn) {
			t.Fatalf("stomp dial %s after the kill: %v", survivor, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer func() { _ = sc.MustDisconnect() }()
	sub, err := sc.Subscribe("/topic/cl.stomp", stomp.AckAuto, durableSub("cl-sub")...)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < 3 {
		m := stompRecv(t, sub)
		got[string(m.Body)] = true
	}
	for j := range 3 {
		if !got[fmt.Sprint("st-", j)] {
			t.Fatalf("durable STOMP subscription after the kill: got %v", got)
		}
	}
}
