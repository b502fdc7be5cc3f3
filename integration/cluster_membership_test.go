package integration

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestClusterJoinLeave: three parley processes; persistent messages published with confirms;
// a fourth process started with --peers naming only node 1 is added with `parleyctl cluster
// join` (sent to a standby, which forwards it to the serving node) and becomes a voter of
// every group on every node; a queue declared afterwards has it as a voter too. Then
// `parleyctl cluster leave` removes one of the original standbys (its process says so in its
// log and stops), and the serving node is killed with SIGKILL: the three voters left (the new
// node among them) elect a serving node, and every confirmed message of both queues is there.
func TestClusterJoinLeave(t *testing.T) {
	began := time.Now()
	phase := func(what string) { t.Logf("%v: %s", time.Since(began).Round(time.Millisecond), what) }
	nodes := StartCluster(t, 3)
	q1, q2 := Name(t, "before-join"), Name(t, "after-join")
	confirmed := map[string]map[string]bool{q1: {}, q2: {}}
	publish := func(n *Node, q string, count int) {
		t.Helper()
		c := dialRetry(t, n)
		defer c.Close()
		ch := channel(t, c)
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		for i := range count {
			body := fmt.Sprintf("%s-%d", q, len(confirmed[q])+i)
			publishConfirmed(t, ch, "", q, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
			confirmed[q][body] = true
		}
	}
	publish(nodes[0], q1, 200)

	serving := WaitServing(t, nodes)
	var standbys []*Node
	for _, n := range nodes {
		if n != serving {
			standbys = append(standbys, n)
		}
	}
	phase("published; starting node 4")
	n4 := StartJoiningNode(t, 4, nodes[0])
	joinStart := time.Now()
	out, err := Parleyctl(t, "--http", standbys[0].HTTPAddr, "--timeout", "60s", "cluster", "join", "parley-4="+n4.ClusterAddr)
	if err != nil {
		t.Fatalf("parleyctl cluster join: %v\n%s", err, out)
	}
	t.Logf("parleyctl cluster join: %s (%v, 200 messages in the queue)", strings.TrimSpace(out), time.Since(joinStart).Round(time.Millisecond))
	all := append(slices.Clone(nodes), n4)
	waitVoters(t, all, []uint64{1, 2, 3, 4}, 2)

	phase("node 4 a voter everywhere")
	// A queue declared after the join has the new node as a voter, on every node.
	publish(n4, q2, 50)
	waitVoters(t, all, []uint64{1, 2, 3, 4}, 3)
	out, err = Parleyctl(t, "--http", n4.HTTPAddr, "cluster", "status")
	if err != nil || !regexp.MustCompile(`(?m)^4\s+\S+\s+voter$`).MatchString(out) {
		t.Fatalf("parleyctl cluster status does not show node 4 as a voter: %v\n%s", err, out)
	}
	t.Logf("status after the join:\n%s", out)

	phase("second queue published")
	// One of the original standbys leaves; asked through the new node.
	gone := standbys[1]
	out, err = Parleyctl(t, "--http", n4.HTTPAddr, "cluster", "leave", fmt.Sprint(gone.ID))
	if err != nil {
		t.Fatalf("parleyctl cluster leave %d: %v\n%s", gone.ID, err, out)
	}
	var rest []uint64
	var live []*Node
	for _, n := range all {
		if n != gone {
			rest = append(rest, uint64(n.ID))
			live = append(live, n)
		}
	}
	slices.Sort(rest)
	waitVoters(t, live, rest, 3)
	waitFor(t, "the removed node to stop on its own", func() bool { return !gone.Running() })
	if log, err := os.ReadFile(gone.LogPath()); err != nil || !strings.Contains(string(log), "removed from the cluster") {
		t.Fatalf("the removed node's log does not say it was removed (%v)", err)
	}
	phase("the removed node stopped")
	gone.Kill() // reaps it if it lingers; a no-op when it stopped

	// A refused removal says why.
	if out, err := Parleyctl(t, "--http", n4.HTTPAddr, "cluster", "leave", fmt.Sprint(gone.ID)); err == nil {
		t.Fatalf("removing node %d twice succeeded:\n%s", gone.ID, out)
	} else {
		t.Logf("second leave refused: %s", strings.TrimSpace(out))
	}

	phase("killing the serving node")
	serving.Kill()
	var survivors []*Node
	for _, n := range live {
		if n != serving {
			survivors = append(survivors, n)
		}
	}
	next := WaitServing(t, survivors)
	t.Logf("node %d killed; node %d serves", serving.ID, next.ID)

	phase("a survivor serves")
	for _, q := range []string{q1, q2} {
		c := dialRetry(t, survivors[0])
		ch := channel(t, c)
		got := getAll(t, ch, q)
		c.Close()
		for body := range confirmed[q] {
			if !got[body] {
				t.Errorf("confirmed message %s lost", body)
			}
		}
		for body := range got {
			if !confirmed[q][body] {
				t.Errorf("message %q never published", body)
			}
		}
		t.Logf("%s: %d confirmed, %d consumed", q, len(confirmed[q]), len(got))
	}
}

// TestClusterLeaveServingNode: `parleyctl cluster leave` for the serving node itself moves
// serving to another node first (the old one restarts as a standby), then removes it; the
// removed process stops, the two nodes left serve, and every confirmed message is there. A
// removal that would leave a group without a live majority is refused.
func TestClusterLeaveServingNode(t *testing.T) {
	nodes := StartCluster(t, 3)
	q := Name(t, "leave-serving")
	c := dialRetry(t, nodes[0])
	ch := channel(t, c)
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	confirmed := map[string]bool{}
	for i := range 100 {
		body := fmt.Sprintf("m-%d", i)
		publishConfirmed(t, ch, "", q, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
		confirmed[body] = true
	}
	c.Close()

	serving := WaitServing(t, nodes)
	out, err := Parleyctl(t, "--http", serving.HTTPAddr, "--timeout", "90s", "cluster", "leave", fmt.Sprintf("parley-%d", serving.ID))
	if err != nil {
		t.Fatalf("parleyctl cluster leave of the serving node %d: %v\n%s", serving.ID, err, out)
	}
	t.Logf("parleyctl cluster leave %d:\n%s", serving.ID, strings.TrimSpace(out))
	var rest []*Node
	var ids []uint64
	for _, n := range nodes {
		if n != serving {
			rest = append(rest, n)
			ids = append(ids, uint64(n.ID))
		}
	}
	waitFor(t, "the removed node to stop on its own", func() bool { return !serving.Running() })
	serving.Kill()
	waitVoters(t, rest, ids, 2)
	next := WaitServing(t, rest)
	t.Logf("node %d left; node %d serves", serving.ID, next.ID)

	// With its only peer down, the serving node cannot hand serving over, so it cannot leave:
	// refused with the reason.
	other := rest[0]
	if other == next {
		other = rest[1]
	}
	other.Kill()
	out, err = Parleyctl(t, "--http", next.HTTPAddr, "--timeout", "30s", "cluster", "leave", fmt.Sprint(next.ID))
	if err == nil {
		t.Fatalf("removing the serving node with its only peer down succeeded:\n%s", out)
	}
	t.Logf("refused as it should be: %s", strings.TrimSpace(out))
	other.Restart()
	WaitServing(t, rest)

	cc := dialRetry(t, rest[0])
	defer cc.Close()
	// The queue may be placed on the restarted node (cluster.spread_queues): until the serving
	// node is in touch with it again, a basic.get answers 404 "home node ... down or
	// inaccessible", as RabbitMQ answers for a queue whose node is down. A get closes its
	// channel then; a successful one is given back by closing its channel.
	waitFor(t, "the queue to be reachable again", func() bool {
		ch := channel(t, cc)
		defer ch.Close()
		_, _, err := ch.Get(q, false)
		return err == nil
	})
	cch := channel(t, cc)
	got := getAll(t, cch, q)
	for body := range confirmed {
		if !got[body] {
			t.Errorf("confirmed message %s lost", body)
		}
	}
	t.Logf("%d confirmed, %d consumed", len(confirmed), len(got))
}

// waitVoters waits (bounded) until every node reports at least groups groups, each with
// exactly voters as voters and no learner.
func waitVoters(t testing.TB, nodes []*Node, voters []uint64, groups int) {
	t.Helper()
	var last string
	ok := func() bool {
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := n.Status(ctx)
			cancel()
			if err != nil {
				last = fmt.Sprintf("node %d: %v", n.ID, err)
				return false
			}
			if len(st.Groups) < groups {
				last = fmt.Sprintf("node %d runs %d groups", n.ID, len(st.Groups))
				return false
			}
			for _, g := range st.Groups {
				if !slices.Equal(g.Voters, voters) || len(g.Learners) > 0 {
					last = fmt.Sprintf("node %d group %d: voters %v learners %v", n.ID, g.ID, g.Voters, g.Learners)
					return false
				}
			}
		}
		return true
	}
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("voters %v in every group of every node: not within 60s (%s)", voters, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFor polls cond (bounded).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within 30s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterDeclareDuringJoin: durable queues are declared (and each given a confirmed
// persistent message) on the serving node all the while `parleyctl cluster join` adds a fourth
// node. Every queue's group must start with the same members on every node (the serving node
// and the standbys create their copies at different moments, and the membership changes in
// between) and end with the new node as a voter; every confirmed message is there, read through
// the new node (a nacked publish is sent again).
//
// With spread queues (cluster.spread_queues) a queue's first publish waits until the node it is
// placed on hosts it, which takes the group's first election, slowed down by the join's changes
// of the same group: the join ends before three queues are confirmed. There the test asks only
// that a declaration was under way while the join ran.
func TestClusterDeclareDuringJoin(t *testing.T) {
	for _, spread := range []bool{false, true} {
		t.Run(fmt.Sprintf("spread_queues=%v", spread), func(t *testing.T) { declareDuringJoin(t, spread) })
	}
}

func declareDuringJoin(t *testing.T, spread bool) {
	args := spreadArgs(t, spread)
	nodes := StartClusterArgs(t, 3, args...)
	serving := WaitServing(t, nodes)
	n4 := StartJoiningNodeArgs(t, 4, args, nodes[0])

	prefix := Name(t, "dj")
	stop := make(chan struct{})
	type result struct {
		queues []string
		err    error
	}
	done := make(chan result, 1)
	var started atomic.Int32 // declarations begun
	go func() {
		var r result
		defer func() { done <- r }()
		c, err := amqp.Dial(serving.URL)
		if err != nil {
			r.err = err
			return
		}
		defer c.Close()
		ch, err := c.Channel()
		if err == nil {
			err = ch.Confirm(false)
		}
		if err != nil {
			r.err = err
			return
		}
		for i := 0; i < 200; i++ {
			select {
			case <-stop:
				return
			default:
			}
			q := fmt.Sprintf("%s-%d", prefix, i)
			started.Add(1)
			if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
				r.err = fmt.Errorf("declare %s: %w", q, err)
				return
			}
			// A nack is allowed (the queue's group may change leader under the join, which
			// drops proposals in flight): publish again, as a client does, until acked.
			ok := false
			for try := 0; !ok && try < 10; try++ {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				dc, err := ch.PublishWithDeferredConfirm("", q, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(q)})
				if err == nil {
					ok, err = dc.WaitContext(ctx)
				}
				cancel()
				if err != nil {
					r.err = fmt.Errorf("publish to %s: %w", q, err)
					return
				}
			}
			if !ok {
				r.err = fmt.Errorf("publish to %s: nacked 10 times", q)
				return
			}
			r.queues = append(r.queues, q)
		}
	}()
	time.Sleep(200 * time.Millisecond) // some queues before the join starts
	out, err := Parleyctl(t, "--http", serving.HTTPAddr, "--timeout", "120s", "cluster", "join", "parley-4="+n4.ClusterAddr)
	begun := started.Load()
	close(stop)
	r := <-done
	if err != nil {
		t.Fatalf("parleyctl cluster join: %v\n%s", err, out)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !spread && len(r.queues) < 3 {
		t.Fatalf("only %d queues declared during the join: the test did not race them", len(r.queues))
	}
	if begun < 1 {
		t.Fatalf("no declaration begun before the join ended: the test did not race them")
	}
	t.Logf("%d queues declared while node 4 joined (%d declarations begun before it ended)", len(r.queues), begun)
	// Queues declared after the join's last pass over the groups were bootstrapped with the
	// new node already; the others were added by the join.
	all := append(slices.Clone(nodes), n4)
	waitVoters(t, all, []uint64{1, 2, 3, 4}, 1+len(r.queues))
	c := dialRetry(t, n4)
	defer c.Close()
	ch := channel(t, c)
	for _, q := range r.queues {
		// getAll returns a set: a nacked publish that committed after all is a second copy.
		if got := getAll(t, ch, q); !got[q] || len(got) != 1 {
			t.Fatalf("queue %s holds %v, want its message", q, got)
		}
	}
}
