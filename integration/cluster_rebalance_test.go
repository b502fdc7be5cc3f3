package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// spreadLeaders reads, from a node's status, the leader of each queue group (queues declared
// in order: their group ids grow), and how many groups each node leads.
func spreadLeaders(ctx context.Context, n *Node, queues []string) (map[string]uint64, map[uint64]int, error) {
	st, err := n.Status(ctx)
	if err != nil {
		return nil, nil, err
	}
	var groups []uint64
	leader := map[uint64]uint64{}
	for _, g := range st.Groups {
		if g.ID != 0 {
			groups = append(groups, g.ID)
			leader[g.ID] = g.Leader
		}
	}
	slices.Sort(groups)
	if len(groups) != len(queues) {
		return nil, nil, fmt.Errorf("%d queue groups, want %d", len(groups), len(queues))
	}
	of, led := map[string]uint64{}, map[uint64]int{}
	for i, g := range groups {
		of[queues[i]] = leader[g]
		led[leader[g]]++
	}
	return of, led, nil
}

// TestClusterSpreadRebalance (issue 7 item 2): six durable queues spread over three nodes, their
// placement recorded in the metadata; a node that runs two of them is killed with SIGKILL and
// its queues fail over to the other nodes; when it is restarted, the serving node moves them
// back to it, so the groups' leaders (what parleyctl cluster status shows) are on all three
// nodes again, each queue on the node it was placed on. Throughout, consumers connected to the
// serving node stay attached: every confirmed message is consumed, a message delivered again
// is marked redelivered, and the acks of deliveries made before a move (stale delivery ids)
// settle nothing else.
func TestClusterSpreadRebalance(t *testing.T) {
	nodes, serving := startSpreadCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	c := dialRetry(t, serving)
	defer c.Close()
	ch := channel(t, c)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	queues := declareDurableQueues(t, ch, "rebal", 6)
	// waitSpread waits until each queue is led by the node want gives (nil: any, as long as
	// each node leads two).
	waitSpread := func(what string, want map[string]uint64) map[string]uint64 {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			of, led, err := spreadLeaders(ctx, serving, queues)
			if err == nil && led[1] == 2 && led[2] == 2 && led[3] == 2 {
				same := true
				for q, n := range want {
					same = same && of[q] == n
				}
				if same {
					return of
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: queue group leaders %v (per node %v, status error %v), want two per node as %v", what, of, led, err, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	placed := waitSpread("after the declarations", nil)
	t.Logf("placement: %v (node %d serves)", placed, serving.ID)

	var mu sync.Mutex
	confirmed := map[string]bool{}
	got := map[string]int{}
	var problems []string
	next := 0
	publish := func(n int) {
		t.Helper()
		for _, q := range queues {
			for range n {
				// After a nack (the queue moving) the next attempt has a new body, so a nacked
				// message that was enqueued after all is not taken for a duplicate.
				body := publishUntilConfirmed(t, ctx, ch, q, func() string {
					b := fmt.Sprintf("%s/%d", q, next)
					next++
					return b
				})
				mu.Lock()
				confirmed[body] = true
				mu.Unlock()
			}
		}
	}
	// One consumer per queue on the serving node, each holding its first two deliveries
	// unacked (until the end).
	cc := dialRetry(t, serving)
	defer cc.Close()
	var held []amqp.Delivery
	for _, q := range queues {
		cch := channel(t, cc)
		if err := cch.Qos(10, 0, false); err != nil {
			t.Fatal(err)
		}
		ds, err := cch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			t.Fatalf("consume %s: %v", q, err)
		}
		go func() {
			kept := 0
			for d := range ds {
				body := string(d.Body)
				mu.Lock()
				got[body]++
				if !strings.HasPrefix(body, q+"/") {
					problems = append(problems, fmt.Sprintf("%s got %s", q, body))
				}
				if got[body] > 1 && !d.Redelivered {
					problems = append(problems, fmt.Sprintf("%s delivered %d times, the last not marked redelivered", body, got[body]))
				}
				hold := kept < 2
				if hold {
					kept++
					held = append(held, d)
				}
				mu.Unlock()
				if !hold {
					_ = d.Ack(false)
				}
			}
		}()
	}
	waitConsumed := func(what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			mu.Lock()
			missing := ""
			for body := range confirmed {
				if got[body] == 0 {
					missing = body
					break
				}
			}
			mu.Unlock()
			if missing == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: confirmed message %s never consumed", what, missing)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	publish(20)
	waitConsumed("before the kill")

	var victim *Node
	for _, n := range nodes {
		if n != serving {
			victim = n
			break
		}
	}
	victim.Kill()
	t.Logf("killed node %d", victim.ID)
	publish(20)
	waitConsumed("with a node down")
	if _, led, err := spreadLeaders(ctx, serving, queues); err != nil || led[uint64(victim.ID)] != 0 {
		t.Fatalf("with node %d down it still leads queue groups: %v, %v", victim.ID, led, err)
	}

	victim.Restart()
	t.Logf("restarted node %d", victim.ID)
	waitSpread("after the restart", placed)
	publish(20)
	waitConsumed("after the queues moved back")

	mu.Lock()
	stale := held
	mu.Unlock()
	for _, d := range stale {
		_ = d.Ack(false) // an ack of an ended session's delivery is dropped, not an error
	}
	publish(5)
	waitConsumed("after the stale acks")
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
	if c.IsClosed() || cc.IsClosed() {
		t.Fatal("a client connection to the serving node closed while queues moved")
	}
}
