package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestClusterSpreadJoinWhilePublishing (issue 7, brief A item 2): with spread queues, six
// durable queues run two on each of three nodes while publishers send persistent messages to
// each with confirms; a fourth node is added with `parleyctl cluster join`, which makes it a
// voter of every queue's group. A join may delay a publish but must not nack it: the queues keep
// running where they run (the join asks each queue's host to add the node to its group rather
// than taking the group's lead, which moved the queue and nacked the publishes in flight). Every
// confirmed message is consumed afterwards and nothing is consumed that was never published.
func TestClusterSpreadJoinWhilePublishing(t *testing.T) {
	nodes, serving := startSpreadCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	c := dialRetry(t, serving)
	defer c.Close()
	ch := channel(t, c)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	queues := declareDurableQueues(t, ch, "join", 6)
	waitFor(t, "the six queues led two by each node", func() bool {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		defer scancel()
		_, led, err := spreadLeaders(sctx, serving, queues)
		return err == nil && led[1] == 2 && led[2] == 2 && led[3] == 2
	})
	// A queue on the serving node takes its group's lead a moment after the declaration, which
	// may drop a publish (publishUntilConfirmed): one confirmed message each before measuring.
	for _, q := range queues {
		publishUntilConfirmed(t, ctx, ch, q, func() string { return q + "/warm-up" })
	}

	var (
		mu        sync.Mutex
		confirmed = map[string]bool{}
		published = map[string]bool{}
		nacked    []string
	)
	for _, q := range queues {
		confirmed[q+"/warm-up"], published[q+"/warm-up"] = true, true
	}
	stop := make(chan struct{})
	errs := make(chan error, len(queues))
	var wg sync.WaitGroup
	for _, q := range queues {
		pc := dialRetry(t, serving)
		defer pc.Close()
		pch := channel(t, pc)
		if err := pch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			// Up to 16 publishes in flight, so some are in flight whenever the join changes a
			// group's configuration.
			const window = 16
			var inFlight []*amqp.DeferredConfirmation
			var bodies []string
			settle := func() error {
				ok, err := inFlight[0].WaitContext(ctx)
				if err != nil {
					return fmt.Errorf("confirm of %s: %w", bodies[0], err)
				}
				mu.Lock()
				if ok {
					confirmed[bodies[0]] = true
				} else {
					nacked = append(nacked, bodies[0])
				}
				mu.Unlock()
				inFlight, bodies = inFlight[1:], bodies[1:]
				return nil
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					for len(inFlight) > 0 {
						if err := settle(); err != nil {
							errs <- err
							return
						}
					}
					return
				default:
				}
				b := fmt.Sprintf("%s/%d", q, i)
				mu.Lock()
				published[b] = true
				mu.Unlock()
				dc, err := pch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
					amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(b)})
				if err != nil {
					errs <- fmt.Errorf("publish %s: %w", b, err)
					return
				}
				inFlight, bodies = append(inFlight, dc), append(bodies, b)
				if len(inFlight) >= window {
					if err := settle(); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	stopPublishing := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopPublishing()

	time.Sleep(time.Second) // publishing under way before the join
	n4 := StartJoiningNodeArgs(t, 4, spreadArgs(t, true), nodes[0])
	out, err := Parleyctl(t, "--http", serving.HTTPAddr, "--timeout", "120s", "cluster", "join", "parley-4="+n4.ClusterAddr)
	if err != nil {
		t.Fatalf("parleyctl cluster join: %v\n%s", err, out)
	}
	t.Logf("parleyctl cluster join: %s", strings.TrimSpace(out))
	all := append(append([]*Node(nil), nodes...), n4)
	waitVoters(t, all, []uint64{1, 2, 3, 4}, 1+len(queues))
	time.Sleep(time.Second) // and on for a moment after it
	stopPublishing()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	if len(nacked) > 0 {
		t.Errorf("%d publishes nacked during the join (a join must at most delay a publish): %v", len(nacked), nacked)
	}
	t.Logf("%d messages confirmed, %d nacked, during the join", len(confirmed), len(nacked))
	mu.Unlock()

	got := map[string]bool{}
	for _, q := range queues {
		for b := range getAll(t, ch, q) {
			got[b] = true
		}
	}
	for b := range confirmed {
		if !got[b] {
			t.Errorf("confirmed message %s lost", b)
		}
	}
	for b := range got {
		if !published[b] {
			t.Errorf("message %q consumed but never published", b)
		}
	}
}
