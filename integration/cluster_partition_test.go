package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// linkProxy stands between two nodes' cluster ports: the dialling node connects to it, it
// connects on to the other node. Cut drops every connection and refuses new ones until healed,
// which is what a network partition looks like to the transport.
type linkProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

func newLinkProxy(t testing.TB, target string) *linkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { _ = ln.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *linkProxy) addr() string { return p.ln.Addr().String() }

func (p *linkProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *linkProxy) serve(c net.Conn) {
	if !p.track(c) {
		return
	}
	s, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(s) {
		_ = c.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(s, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, s); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = s.Close()
}

func (p *linkProxy) setCut(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = on
	if on {
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
	}
}

// StartClusterWithLinks starts a three-node cluster whose cluster connections all pass through
// linkProxies, returned by (dialler, dialled) pair, so a test can cut a node off.
func startClusterWithLinks(t *testing.T) ([]*Node, map[[2]int]*linkProxy) {
	t.Helper()
	if ExternalURL() != "" {
		t.Skipf("starts its own parley cluster; %s points at an external broker", ExternalURLEnv)
	}
	const n = 3
	clusterAddrs := make([]string, n)
	httpAddrs := make([]string, n)
	for i := range n {
		cp, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		hp, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		clusterAddrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(cp))
		httpAddrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(hp))
	}
	links := map[[2]int]*linkProxy{}
	nodes := make([]*Node, n)
	for i := range n {
		// Node i+1 sees each peer j through the proxy of the link (i, j); the lower id dials.
		var peers []string
		for j := range n {
			addr := clusterAddrs[j]
			if j != i {
				lo, hi := min(i, j), max(i, j)
				l := links[[2]int{lo + 1, hi + 1}]
				if l == nil {
					l = newLinkProxy(t, clusterAddrs[hi])
					links[[2]int{lo + 1, hi + 1}] = l
				}
				if i == lo {
					addr = l.addr()
				}
			}
			peers = append(peers, fmt.Sprintf("%d=%s", j+1, addr))
		}
		s := StartParley(t,
			"--node-id", fmt.Sprintf("parley-%d", i+1),
			"--cluster", clusterAddrs[i],
			"--peers", strings.Join(peers, ","),
			"--http", httpAddrs[i])
		nodes[i] = &Node{Server: s, ID: i + 1, HTTPAddr: httpAddrs[i]}
	}
	WaitServing(t, nodes)
	return nodes, links
}

// isolate cuts (or heals) every link of node id.
func isolate(links map[[2]int]*linkProxy, id int, on bool) {
	for pair, l := range links {
		if pair[0] == id || pair[1] == id {
			l.setCut(on)
		}
	}
}

// TestClusterPartitionServingNode cuts the serving node off from the two others: the majority
// elects a new serving node and accepts publishes with confirms; the cut-off node confirms
// nothing and stops serving (it re-executes itself as a standby). After healing, every
// confirmed message is there once (or redelivered), and the old node has caught up.
func TestClusterPartitionServingNode(t *testing.T) {
	nodes, links := startClusterWithLinks(t)
	q := Name(t, "partition")
	confirmed := map[string]bool{}
	publish := func(n *Node, prefix string, count int) {
		t.Helper()
		c := dialRetry(t, n)
		defer c.Close()
		ch := channel(t, c)
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		ctx := ctxTimeout(t)
		for i := range count {
			body := prefix + strconv.Itoa(i)
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
				amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
			if err != nil {
				t.Fatalf("publish %s: %v", body, err)
			}
			if ok, err := dc.WaitContext(ctx); err != nil || !ok {
				t.Fatalf("confirm %s: %v %v", body, ok, err)
			}
			confirmed[body] = true
		}
	}
	old := WaitServing(t, nodes)
	publish(old, "before-", 100)

	// A client of the old serving node keeps publishing through the cut: none of these may be
	// confirmed while the node is cut off (no majority), whatever happens to them later.
	oc := dialRetry(t, old)
	och := channel(t, oc)
	if err := och.Confirm(false); err != nil {
		t.Fatal(err)
	}
	isolate(links, old.ID, true)
	cutAt := time.Now()
	var minorityConfirmed []string
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	for i := 0; ctx.Err() == nil; i++ {
		dc, err := och.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("minority-" + strconv.Itoa(i))})
		if err != nil {
			break
		}
		if ok, err := dc.WaitContext(ctx); err == nil && ok {
			minorityConfirmed = append(minorityConfirmed, "minority-"+strconv.Itoa(i))
		} else {
			break
		}
	}
	cancel()
	oc.Close()
	// Published before the cut took effect may legitimately be confirmed: only those within
	// the first instants. After that, a confirm from the minority would be a lost write.
	var rest []*Node
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	next := WaitServing(t, rest)
	t.Logf("node %d cut off; node %d serves %v later; the minority confirmed %d publishes during the cut",
		old.ID, next.ID, time.Since(cutAt).Round(time.Millisecond), len(minorityConfirmed))
	for _, b := range minorityConfirmed {
		confirmed[b] = true // if confirmed, it must survive
	}
	publish(next, "majority-", 100)

	// The cut-off node stops serving on its own.
	deadline := time.Now().Add(30 * time.Second)
	for {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := old.Status(sctx)
		scancel()
		if err == nil && !st.Serving {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cut-off node %d still serves: %+v %v", old.ID, st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// It re-executes itself as a standby: its log shows the step-down and a second start.
	for deadline := time.Now().Add(30 * time.Second); ; {
		logText, err := os.ReadFile(old.LogPath())
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(logText), "lost the lead of the metadata group") &&
			strings.Count(string(logText), "cluster host started") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d stopped serving without the step-down and restart its log should show", old.ID)
		}
		time.Sleep(100 * time.Millisecond)
	}

	isolate(links, old.ID, false)
	ctx2 := ctxTimeout(t)
	for {
		lead, err1 := next.Status(ctx2)
		back, err2 := old.Status(ctx2)
		if err1 == nil && err2 == nil && caughtUp(lead, back) {
			break
		}
		select {
		case <-ctx2.Done():
			t.Fatalf("healed node %d did not catch up: %v %v", old.ID, err1, err2)
		case <-time.After(100 * time.Millisecond):
		}
	}

	// Consume everything through the healed node (it forwards to the serving one).
	c := dialRetry(t, old)
	defer c.Close()
	ch := channel(t, c)
	got := map[string]int{}
	for {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if !ok {
			break
		}
		b := string(d.Body)
		got[b]++
		if got[b] > 1 && !d.Redelivered {
			t.Errorf("message %s delivered twice without the redelivered flag", b)
		}
		if !strings.HasPrefix(b, "before-") && !strings.HasPrefix(b, "majority-") && !strings.HasPrefix(b, "minority-") {
			t.Errorf("message %q never published", b)
		}
	}
	for b := range confirmed {
		if got[b] == 0 {
			t.Errorf("confirmed message %s lost", b)
		}
	}
}
