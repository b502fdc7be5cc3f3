package integration

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// failoverRounds is how many kill -9 rounds TestClusterFailoverRounds runs: 3 in make test, 25
// under make test-long.
func failoverRounds() int {
	if os.Getenv("PARLEY_TEST_LONG") != "" {
		return 25
	}
	return 3
}

// TestClusterFailoverRounds kills the serving node of a three-node cluster with SIGKILL while
// two publishers with confirms keep a durable queue busy (connected to random nodes,
// reconnecting to another node when theirs goes away), restarts it, and repeats. It logs how
// long each failover took (kill to another node serving) and checks at the end that every
// confirmed message is in the queue, nothing unpublished appeared, and duplicates carry the
// redelivered flag.
func TestClusterFailoverRounds(t *testing.T) {
	nodes := StartCluster(t, 3)
	q := Name(t, "failover")
	{
		c := dialRetry(t, nodes[0])
		ch := channel(t, c)
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var mu sync.Mutex
	confirmed := map[uint64]bool{}
	var next uint64
	var took []time.Duration
	for round := range failoverRounds() {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for p := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := p; ctx.Err() == nil; i++ {
					n := nodes[(i+round)%len(nodes)]
					if n.Running() {
						publishUntilKilled(ctx, n.URL, q, &mu, &next, confirmed)
					}
					select {
					case <-ctx.Done():
					case <-time.After(50 * time.Millisecond):
					}
				}
			}()
		}
		time.Sleep(time.Duration(200+rng.IntN(400)) * time.Millisecond)
		serving := WaitServing(t, nodes)
		killedAt := time.Now()
		serving.Kill()
		var rest []*Node
		for _, n := range nodes {
			if n != serving {
				rest = append(rest, n)
			}
		}
		nextServing := WaitServing(t, rest)
		took = append(took, time.Since(killedAt))
		time.Sleep(300 * time.Millisecond) // publishers carry on through the new node
		cancel()
		wg.Wait()
		serving.Restart()
		t.Logf("round %d: node %d killed, node %d serving after %v", round, serving.ID, nextServing.ID, took[len(took)-1].Round(time.Millisecond))
	}

	c := dialRetry(t, nodes[rand.IntN(len(nodes))])
	defer c.Close()
	ch := channel(t, c)
	consumed := map[uint64]bool{}
	for {
		d, ok, err := ch.Get(q, false)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if !ok {
			break
		}
		if len(d.Body) < 8 {
			t.Fatalf("a message that no publisher sent: %q", d.Body)
		}
		seq := binary.BigEndian.Uint64(d.Body)
		if seq >= next {
			t.Fatalf("message %d was never published", seq)
		}
		if consumed[seq] && !d.Redelivered {
			t.Fatalf("message %d delivered twice without the redelivered flag", seq)
		}
		consumed[seq] = true
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
	for seq := range confirmed {
		if !consumed[seq] {
			t.Errorf("confirmed message %d lost", seq)
		}
	}
	if len(confirmed) == 0 {
		t.Fatal("no message was ever confirmed: the test proved nothing")
	}
	slices.Sort(took)
	t.Logf("%d rounds, %d messages confirmed, all found; failover (kill -9 to serving): min %v, median %v, max %v",
		len(took), len(confirmed), took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond),
		took[len(took)-1].Round(time.Millisecond))
}
