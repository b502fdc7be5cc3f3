package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestClusterStandbySpaceComesBack is TestSpaceComesBack on a three-node cluster without spread
// queues (cluster.spread_queues off), measuring the standbys: spaceVolume of persistent 1 KB
// messages goes through a durable queue on the serving node, published with confirms (so every
// message is fsynced on a majority) and consumed by a consumer that acks each one, while a few messages at the head stay delivered and unacked. A
// standby keeps a replica of the queue's group whose stand-in is the queue's own log state
// machine (broker.QueueStandIn): it must snapshot and compact its log as the serving node does,
// so each standby's data directory comes back to within spaceMargin of its size after the queue
// was declared, instead of keeping every message ever published. The bodies are random: Pebble
// compresses what it writes, and a log of repetitive bodies would fit in the margin uncompacted.
func TestClusterStandbySpaceComesBack(t *testing.T) {
	nodes := StartClusterArgs(t, 3, spreadArgs(t, false)...)
	srv := WaitServing(t, nodes)
	q := Name(t, "cluster-space")
	admin := dialRetry(t, srv)
	defer admin.Close()
	if _, err := channel(t, admin).QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatalf("queue.declare %s: %v", q, err)
	}
	standbySpaceComesBack(t, nodes, srv, q, 1)
}

// TestClusterSpreadStandbySpaceComesBack is TestClusterStandbySpaceComesBack with
// cluster.spread_queues, the queue placed on a standby: that standby runs the queue's process
// (a queue host, broker/queuehost.go) and the serving node's queue is a proxy forwarding the
// publishes and acks to it. Both standbys' disks (the host's log and the other standby's
// replica) must come back as without spreading. Three queues are declared, one per node (the
// placement is round robin over the least loaded), and the test uses one a standby leads.
func TestClusterSpreadStandbySpaceComesBack(t *testing.T) {
	nodes, srv := startSpreadCluster(t)
	admin := dialRetry(t, srv)
	defer admin.Close()
	queues := declareDurableQueues(t, channel(t, admin), "spread-space", 3)
	var q string
	deadline := time.Now().Add(30 * time.Second)
	for q == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		of, _, err := spreadLeaders(ctx, srv, queues)
		cancel()
		for _, name := range queues {
			if l := of[name]; l != 0 && l != uint64(srv.ID) {
				q = name
				break
			}
		}
		if q == "" && time.Now().After(deadline) {
			t.Fatalf("none of %v is led by a standby after 30s (leaders %v, status error %v)", queues, of, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the queue %s runs on a standby (node %d serves)", q, srv.ID)
	standbySpaceComesBack(t, nodes, srv, q, len(queues))
}

// standbySpaceComesBack runs TestClusterStandbySpaceComesBack's load through the durable
// queue q, declared on the cluster nodes served by srv, with queues queue groups besides group
// 0, and checks the standbys' disks.
func standbySpaceComesBack(t *testing.T, nodes []*Node, srv *Node, q string, queues int) {
	t.Helper()
	var standbys []*Node
	for _, n := range nodes {
		if n != srv {
			standbys = append(standbys, n)
		}
	}
	admin := dialRetry(t, srv)
	defer admin.Close()
	ach := channel(t, admin)
	headConn := dialRetry(t, srv)
	defer headConn.Close()
	headCh := channel(t, headConn)
	holdHead(t, headCh, q)

	// The standbys have the queue's replica once group 0 told them about it: wait until each
	// runs it (a fixed sleep was too short on a loaded machine, and then the size "after the
	// declaration" was taken before the replica existed).
	for _, n := range standbys {
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := n.Status(ctx)
			cancel()
			if err == nil && len(st.Groups) >= 1+queues {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("standby node %d runs no replica of the queue's group after 30s: %+v %v", n.ID, st.Groups, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	start := make([]int64, len(standbys))
	peak := make([]atomic.Int64, len(standbys))
	for i, n := range standbys {
		start[i] = dirSize(t, n.dataDir)
		peak[i].Store(start[i])
	}
	sample := func() []int64 {
		now := make([]int64, len(standbys))
		for i, n := range standbys {
			now[i] = dirSize(t, n.dataDir)
			if now[i] > peak[i].Load() {
				peak[i].Store(now[i])
			}
		}
		return now
	}
	sampleDone, sampleStopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampleStopped)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sampleDone:
				return
			case <-tick.C:
				sample()
			}
		}
	}()
	stopSampling := sync.OnceFunc(func() { close(sampleDone); <-sampleStopped })
	defer stopSampling()

	total := int(spaceVolume() / spaceBodySize)
	perPublisher := total / spacePublishers
	total = perPublisher * spacePublishers

	consConn := dialRetry(t, srv)
	defer consConn.Close()
	consCh := channel(t, consConn)
	if err := consCh.Qos(512, 0, false); err != nil {
		t.Fatalf("basic.qos: %v", err)
	}
	deliveries := consume(t, consCh, q, "acker", false, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, spacePublishers)
	var wg sync.WaitGroup
	for p := range spacePublishers {
		pc := dialRetry(t, srv)
		defer pc.Close()
		pch := channel(t, pc)
		wg.Go(func() {
			if err := publishIncompressible(ctx, pch, q, uint64(p), perPublisher); err != nil {
				errs <- fmt.Errorf("publisher %d: %w", p, err)
				cancel()
			}
		})
	}
	consumeDeadline := time.After(5 * time.Minute)
	if os.Getenv("PARLEY_TEST_LONG") != "" {
		consumeDeadline = time.After(20 * time.Minute)
	}
	for got := 0; got < total; got++ {
		select {
		case m, ok := <-deliveries:
			if !ok {
				t.Fatalf("acking consumer's deliveries closed after %d of %d messages", got, total)
			}
			if len(m.Body) != spaceBodySize {
				t.Fatalf("message %d: body of %d bytes, want %d", got, len(m.Body), spaceBodySize)
			}
			if err := m.Ack(false); err != nil {
				t.Fatalf("basic.ack: %v", err)
			}
		case err := <-errs:
			t.Fatal(err)
		case <-consumeDeadline:
			t.Fatalf("only %d of %d messages consumed before the deadline", got, total)
		}
	}
	wg.Wait()
	if n := messageCount(t, consCh, q); n != 0 {
		t.Fatalf("queue holds %d ready messages after all were consumed, want 0", n)
	}
	// The acks are in the queue's inbox now (the passive declare above is ordered after them on
	// their connection), but their removals commit asynchronously. A message published after
	// them with a confirm is in the queue's log after them: once it is confirmed they are
	// committed too, so the failover below must find nothing acked.
	publishConfirmed(t, ach, "", q, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("marker")})

	// The standbys' logs come back: their stand-ins applied the removals, snapshotted, and
	// compacted the log up to the unacked head's bodies, which the snapshot copies instead.
	deadline := time.Now().Add(spaceWait)
	var now []int64
	for {
		now = sample()
		done := true
		for i := range standbys {
			done = done && now[i] <= start[i]+spaceMargin
		}
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	stopSampling()
	for i, n := range standbys {
		t.Logf("standby node %d: %d × %d B messages (%d MB) through %s; data directory %.1f MB after declare, %.1f MB peak, %.1f MB after (margin %d MB)",
			n.ID, total, spaceBodySize, total*spaceBodySize>>20, q, mb(start[i]), mb(peak[i].Load()), mb(now[i]), spaceMargin>>20)
	}
	for i, n := range standbys {
		if now[i] > start[i]+spaceMargin {
			t.Errorf("standby node %d: data directory is %.1f MB %v after the last ack, more than %.1f MB after the queue was declared + %d MB margin (peak %.1f MB); files:\n%s",
				n.ID, mb(now[i]), spaceWait, mb(start[i]), spaceMargin>>20, mb(peak[i].Load()), dirListing(n.dataDir))
		}
		if peak[i].Load()-start[i] < spaceSanity {
			t.Errorf("standby node %d: data directory peaked at %.1f MB, less than %d MB above its %.1f MB start: the volume never reached its disk, the test shows nothing",
				n.ID, mb(peak[i].Load()), spaceSanity>>20, mb(start[i]))
		}
	}

	// A standby takes over from its compacted log (the broker's queue starts from the snapshots
	// the stand-in took): the unacked head and the marker come back, in order, and nothing else.
	srv.Kill()
	next := WaitServing(t, standbys)
	c := dialRetry(t, next)
	defer c.Close()
	ch := channel(t, c)
	waitMessageCount(t, ch, q, spaceHeadUnacked+1)
	for i := range spaceHeadUnacked + 1 {
		want := fmt.Sprintf("head-%d", i)
		if i == spaceHeadUnacked {
			want = "marker"
		}
		m, ok := get(t, ch, q, true)
		if !ok || string(m.Body) != want {
			t.Fatalf("after failover, basic.get = %q (ok %v), want %s", m.Body, ok, want)
		}
	}
	expectEmpty(t, ch, q)
}

// publishIncompressible publishes n persistent messages of spaceBodySize random bytes on ch in
// confirm mode, keeping up to spaceInFlight unconfirmed.
func publishIncompressible(ctx context.Context, ch *amqp.Channel, q string, seed uint64, n int) error {
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm.select: %w", err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, spaceInFlight))
	rng := rand.NewChaCha8([32]byte{byte(seed), 1})
	body := make([]byte, spaceBodySize)
	inFlight := 0
	await := func() error {
		select {
		case c, ok := <-confirms:
			if !ok {
				return fmt.Errorf("channel closed with %d unconfirmed", inFlight)
			}
			if !c.Ack {
				return fmt.Errorf("message %d nacked", c.DeliveryTag)
			}
			inFlight--
			return nil
		case <-time.After(waitTimeout):
			return fmt.Errorf("no confirm within %v (%d in flight)", waitTimeout, inFlight)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i := range n {
		for inFlight >= spaceInFlight {
			if err := await(); err != nil {
				return err
			}
		}
		_, _ = rng.Read(body)
		err := ch.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
		if err != nil {
			return fmt.Errorf("publish #%d: %w", i, err)
		}
		inFlight++
	}
	for inFlight > 0 {
		if err := await(); err != nil {
			return err
		}
	}
	return nil
}
