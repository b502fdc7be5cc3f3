package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestClusterSpreadQueues (cluster.spread_queues, issue 7 stage 1): three parley processes on
// loopback; six durable queues declared through the serving node are placed over the three
// nodes (their groups' leaders, as the cluster status shows); confirmed publishes and acked
// consumption go through the serving node to each queue's node. Then a node that hosts queues
// is killed with SIGKILL: the consumers, connected to the serving node, stay attached; the
// messages they held unacked on the dead node's queues come again marked redelivered; publishing
// goes on, and every confirmed message is consumed.
func TestClusterSpreadQueues(t *testing.T) {
	nodes, serving := startSpreadCluster(t)
	// Bounds the whole test's publishing, which waits for six new groups' first elections
	// (1-2 s each) and for failovers: ctxTimeout's 10 s failed under load.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	c := dialRetry(t, serving)
	defer c.Close()
	ch := channel(t, c)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	queues := declareDurableQueues(t, ch, "spread", 6)
	// Each queue's group (declared in order: group ids grow) and its leader, from the serving
	// node's status (what parleyctl cluster status prints); wait until the placement shows on
	// all three nodes.
	hostOf := map[string]uint64{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := serving.Status(ctx)
		if err == nil {
			var groups []uint64
			leader := map[uint64]uint64{}
			for _, g := range st.Groups {
				if g.ID != 0 {
					groups = append(groups, g.ID)
					leader[g.ID] = g.Leader
				}
			}
			slices.Sort(groups)
			led := map[uint64]int{}
			if len(groups) == len(queues) {
				for i, g := range groups {
					hostOf[queues[i]] = leader[g]
					led[leader[g]]++
				}
			}
			// Round robin over three members: two queues each, once every group is led by
			// the node that runs its queue (a queue on the serving node takes its group's
			// lead a moment after the declaration; until then the status may show another
			// leader).
			if led[1] == 2 && led[2] == 2 && led[3] == 2 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue group leaders not spread over the three nodes: %v (status error %v)", hostOf, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("placement: %v (node %d serves)", hostOf, serving.ID)

	confirmed := map[string]map[string]bool{}
	publish := func(q string, from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			body := fmt.Sprintf("%s/%d", q, i)
			publishUntilConfirmed(t, ctx, ch, q, func() string { return body })
			confirmed[q][body] = true
		}
	}
	for _, q := range queues {
		confirmed[q] = map[string]bool{}
		publish(q, 0, 50)
	}

	// One consumer per queue, on the serving node; each keeps its first three deliveries
	// unacked.
	type tally struct {
		mu          sync.Mutex
		got         map[string]int
		held        []amqp.Delivery
		redelivered map[string]bool
	}
	cc := dialRetry(t, serving)
	defer cc.Close()
	tallies := map[string]*tally{}
	for _, q := range queues {
		cch := channel(t, cc)
		if err := cch.Qos(10, 0, false); err != nil {
			t.Fatal(err)
		}
		ds, err := cch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			t.Fatalf("consume %s: %v", q, err)
		}
		tl := &tally{got: map[string]int{}, redelivered: map[string]bool{}}
		tallies[q] = tl
		go func() {
			for d := range ds {
				tl.mu.Lock()
				tl.got[string(d.Body)]++
				if d.Redelivered {
					tl.redelivered[string(d.Body)] = true
				}
				hold := len(tl.held) < 3
				if hold {
					tl.held = append(tl.held, d)
				}
				tl.mu.Unlock()
				if !hold {
					_ = d.Ack(false)
				}
			}
		}()
	}
	waitAll := func(what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			missing := ""
			for _, q := range queues {
				tl := tallies[q]
				tl.mu.Lock()
				for body := range confirmed[q] {
					if tl.got[body] == 0 {
						missing = body
						break
					}
				}
				tl.mu.Unlock()
				if missing != "" {
					break
				}
			}
			if missing == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: confirmed message %s never consumed", what, missing)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitAll("before the kill")

	var victim *Node
	for _, n := range nodes {
		if n != serving && victim == nil {
			for _, h := range hostOf {
				if h == uint64(n.ID) {
					victim = n
				}
			}
		}
	}
	victim.Kill()
	t.Logf("killed node %d", victim.ID)
	for _, q := range queues {
		publish(q, 50, 100)
	}
	waitAll("after the kill")
	for _, q := range queues {
		tl := tallies[q]
		tl.mu.Lock()
		if hostOf[q] == uint64(victim.ID) {
			for _, d := range tl.held {
				if !tl.redelivered[string(d.Body)] {
					t.Errorf("%s: %s was unacked on the killed node and did not come again redelivered", q, d.Body)
				}
			}
		}
		held := tl.held
		tl.mu.Unlock()
		for _, d := range held {
			_ = d.Ack(false) // a stale ack on a dead node's queue is dropped, not an error
		}
	}
	if c.IsClosed() || cc.IsClosed() {
		t.Fatal("a client connection to the serving node closed during the failover of a queue")
	}
}

// TestClusterSpreadServingNodeDies (cluster.spread_queues): queues spread over three processes
// hold confirmed messages; the serving node is killed with SIGKILL. The new serving node runs
// locally the queues whose groups it leads and proxies the others to the node that runs them;
// a client of it consumes every confirmed message of every queue, including those that ran on
// the dead node.
func TestClusterSpreadServingNodeDies(t *testing.T) {
	nodes, serving := startSpreadCluster(t)
	// Bounds the whole test's publishing, which waits for six new groups' first elections
	// (1-2 s each) and for failovers: ctxTimeout's 10 s failed under load.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := dialRetry(t, serving)
	ch := channel(t, c)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirmed := map[string]map[string]bool{}
	var queues []string
	for i := range 6 {
		q := Name(t, fmt.Sprintf("spread-sd-%d", i))
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatalf("declare %s: %v", q, err)
		}
		queues = append(queues, q)
		confirmed[q] = map[string]bool{}
		for j := range 40 {
			body := fmt.Sprintf("%s/%d", q, j)
			publishUntilConfirmed(t, ctx, ch, q, func() string { return body })
			confirmed[q][body] = true
		}
	}
	serving.Kill()
	c.Close()
	var rest []*Node
	for _, n := range nodes {
		if n != serving {
			rest = append(rest, n)
		}
	}
	next := WaitServing(t, rest)
	t.Logf("node %d killed; node %d serves", serving.ID, next.ID)
	cc := dialRetry(t, next)
	defer cc.Close()
	cch := channel(t, cc)
	for _, q := range queues {
		got := map[string]bool{}
		deadline := time.Now().Add(60 * time.Second)
		for len(got) < len(confirmed[q]) {
			d, ok, err := cch.Get(q, false)
			if err != nil {
				t.Fatalf("get from %s: %v", q, err)
			}
			if !ok {
				if time.Now().After(deadline) {
					t.Fatalf("%s: %d of %d confirmed messages consumed, then none", q, len(got), len(confirmed[q]))
				}
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if !confirmed[q][string(d.Body)] {
				t.Fatalf("%s: got %q, never published", q, d.Body)
			}
			got[string(d.Body)] = true
			if err := d.Ack(false); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// startSpreadCluster starts three parley processes with cluster.spread_queues on and returns
// them and the serving one.
func startSpreadCluster(t *testing.T) ([]*Node, *Node) {
	t.Helper()
	nodes := StartClusterArgs(t, 3, spreadArgs(t, true)...)
	return nodes, WaitServing(t, nodes)
}

// spreadArgs is a node's command-line arguments setting cluster.spread_queues to on.
func spreadArgs(t testing.TB, on bool) []string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "spread.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "cluster:\n  spread_queues: %v\n", on), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"--config", cfg}
}

// TestClusterSpreadJoinGetsShare (issue 7): six durable queues spread over three processes
// (two each), with confirmed messages and consumers attached to the serving node holding some
// of them unacked; a fourth process joins (parleyctl cluster join). The rebalancer gives it its
// share of the queues placed before: it comes to lead a queue's group and run the queue. The
// consumers stay attached; publishing goes on; every confirmed message is consumed, and one
// consumed twice came again marked redelivered.
func TestClusterSpreadJoinGetsShare(t *testing.T) {
	nodes, serving := startSpreadCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := dialRetry(t, serving)
	defer c.Close()
	ch := channel(t, c)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	queues := declareDurableQueues(t, ch, "share", 6)
	confirmed := map[string]map[string]bool{}
	publish := func(from, to int) {
		t.Helper()
		for _, q := range queues {
			for i := from; i < to; i++ {
				body := fmt.Sprintf("%s/%d", q, i)
				publishUntilConfirmed(t, ctx, ch, q, func() string { return body })
				confirmed[q][body] = true
			}
		}
	}
	for _, q := range queues {
		confirmed[q] = map[string]bool{}
	}
	publish(0, 30)

	type tally struct {
		mu    sync.Mutex
		got   map[string]int
		again map[string]bool // came again marked redelivered
		held  int
	}
	tallies := map[string]*tally{}
	cc := dialRetry(t, serving)
	defer cc.Close()
	for _, q := range queues {
		cch := channel(t, cc)
		if err := cch.Qos(10, 0, false); err != nil {
			t.Fatal(err)
		}
		ds, err := cch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			t.Fatalf("consume %s: %v", q, err)
		}
		tl := &tally{got: map[string]int{}, again: map[string]bool{}}
		tallies[q] = tl
		go func() {
			for d := range ds {
				tl.mu.Lock()
				tl.got[string(d.Body)]++
				if d.Redelivered {
					tl.again[string(d.Body)] = true
				}
				hold := tl.held < 2 // held unacked across the move: they come again
				if hold {
					tl.held++
				}
				tl.mu.Unlock()
				if !hold {
					_ = d.Ack(false)
				}
			}
		}()
	}

	n4 := StartJoiningNodeArgs(t, 4, spreadArgs(t, true), nodes[0])
	out, err := Parleyctl(t, "--http", serving.HTTPAddr, "--timeout", "60s", "cluster", "join", "parley-4="+n4.ClusterAddr)
	if err != nil {
		t.Fatalf("parleyctl cluster join: %v\n%s", err, out)
	}
	t.Logf("parleyctl cluster join: %s", strings.TrimSpace(out))
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := serving.Status(ctx)
		led := 0
		if err == nil {
			for _, g := range st.Groups {
				if g.ID != 0 && g.Leader == 4 {
					led++
				}
			}
		}
		if led > 0 {
			t.Logf("node 4 leads %d queue groups", led)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 4 was given no queue (status error %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	publish(30, 50)

	deadline = time.Now().Add(60 * time.Second)
	for {
		missing := ""
		for _, q := range queues {
			tl := tallies[q]
			tl.mu.Lock()
			for body := range confirmed[q] {
				if tl.got[body] == 0 {
					missing = body
				}
			}
			tl.mu.Unlock()
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("confirmed message %s never consumed", missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, q := range queues {
		tl := tallies[q]
		tl.mu.Lock()
		for body, n := range tl.got {
			if !confirmed[q][body] {
				t.Errorf("%s: %q never published", q, body)
			}
			if n > 1 && !tl.again[body] {
				t.Errorf("%s: %s consumed %d times, never marked redelivered", q, body, n)
			}
		}
		tl.mu.Unlock()
	}
	if c.IsClosed() || cc.IsClosed() {
		t.Fatal("a client connection to the serving node closed while a queue moved to the new node")
	}
}

// declareDurableQueues declares n durable queues named after prefix and the test.
func declareDurableQueues(t *testing.T, ch *amqp.Channel, prefix string, n int) []string {
	t.Helper()
	var queues []string
	for i := range n {
		q := Name(t, fmt.Sprintf("%s-%d", prefix, i))
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatalf("declare %s: %v", q, err)
		}
		queues = append(queues, q)
	}
	return queues
}

// publishUntilConfirmed publishes a persistent message to queue q until it is confirmed and
// returns the body that was: a nack is allowed while a spread queue moves or its group changes
// leader (a queue on the serving node takes its group's lead a moment after the declaration),
// up to 20 of them; body gives each attempt's body.
func publishUntilConfirmed(t *testing.T, ctx context.Context, ch *amqp.Channel, q string, body func() string) string {
	t.Helper()
	for attempt := 0; ; attempt++ {
		b := body()
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(b)})
		if err != nil {
			t.Fatalf("publish %s: %v", b, err)
		}
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			t.Fatalf("confirm %s: %v", b, err)
		}
		if ok {
			return b
		}
		if attempt == 20 {
			t.Fatalf("%s nacked 20 times", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
