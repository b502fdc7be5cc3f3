package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// faultEvents is how many fault and repair events TestClusterRandomFaults runs: 10 in make
// test, 60 under make test-long.
func faultEvents() int {
	if os.Getenv("PARLEY_TEST_LONG") != "" {
		return 60
	}
	return 10
}

// faultSeedEnv replays a run of TestClusterRandomFaults: its seed is in the test's log.
const faultSeedEnv = "PARLEY_FAULT_SEED"

// faultChecker compares what the publishers had confirmed with what the consumers got.
type faultChecker struct {
	mu        sync.Mutex
	next      uint64          // sequence numbers sent so far are < next
	confirmed map[uint64]bool // confirmed by the broker
	consumed  map[uint64]int  // deliveries per sequence number
	// fresh counts the deliveries not marked redelivered, per sequence number: at most one.
	fresh    map[uint64]int
	problems []string // what the consumers saw that must not happen
	// history has each delivery of a message (who got it, flag, time), for the problem report:
	// a message delivered twice says by which nodes and in which order.
	history map[uint64][]string
}

func newFaultChecker() *faultChecker {
	return &faultChecker{confirmed: map[uint64]bool{}, consumed: map[uint64]int{}, fresh: map[uint64]int{}}
}

// take allocates the sequence number of the next publish.
func (ck *faultChecker) take() uint64 {
	ck.mu.Lock()
	defer ck.mu.Unlock()
	ck.next++
	return ck.next - 1
}

func (ck *faultChecker) confirm(seq uint64) {
	ck.mu.Lock()
	ck.confirmed[seq] = true
	ck.mu.Unlock()
}

// delivered records a delivery: its body must be one a publisher sent, and only one delivery of
// a message may say it is not a redelivery. Not necessarily the first to arrive: deliveries on
// two connections are not ordered, and a delivery sent just before a partition cut its
// connection's path (a client of a standby is forwarded through it) arrives after the heal,
// after the redelivery the new serving node made meanwhile on another connection
// (TestClusterRandomFaults saw "redelivered=true" 1 ms before "redelivered=false" so).
func (ck *faultChecker) delivered(body []byte, redelivered bool) {
	ck.deliveredBy("drain", body, redelivered)
}

// deliveredBy is delivered with who says which consumer got it.
func (ck *faultChecker) deliveredBy(who string, body []byte, redelivered bool) {
	ck.mu.Lock()
	defer ck.mu.Unlock()
	if len(body) < 8 {
		ck.problem("a message no publisher sent: %q", body)
		return
	}
	seq := binary.BigEndian.Uint64(body)
	if seq >= ck.next {
		ck.problem("message %d was never published (%d sent)", seq, ck.next)
		return
	}
	if ck.history == nil {
		ck.history = map[uint64][]string{}
	}
	ck.history[seq] = append(ck.history[seq], fmt.Sprintf("%s redelivered=%v at %s", who, redelivered, time.Now().Format("15:04:05.000000")))
	if !redelivered && ck.fresh[seq] > 0 {
		ck.problem("message %d delivered %d times, %d of them without the redelivered flag: %q", seq, ck.consumed[seq]+1, ck.fresh[seq]+1, ck.history[seq])
	}
	if !redelivered {
		ck.fresh[seq]++
	}
	ck.consumed[seq]++
}

func (ck *faultChecker) problem(format string, args ...any) {
	if len(ck.problems) < 50 {
		ck.problems = append(ck.problems, fmt.Sprintf(format, args...))
	}
}

// missing counts the confirmed messages not consumed yet.
func (ck *faultChecker) missing() (n int, example uint64) {
	ck.mu.Lock()
	defer ck.mu.Unlock()
	for seq := range ck.confirmed {
		if ck.consumed[seq] == 0 {
			n++
			example = seq
		}
	}
	return n, example
}

func (ck *faultChecker) counts() (sent uint64, confirmed, consumed, redeliveries int) {
	ck.mu.Lock()
	defer ck.mu.Unlock()
	for _, n := range ck.consumed {
		redeliveries += n - 1
	}
	return ck.next, len(ck.confirmed), len(ck.consumed), redeliveries
}

// faultDial connects with short heartbeats, so a connection stuck behind a cut link is noticed
// in seconds.
func faultDial(url string) (*amqp.Connection, error) {
	return amqp.DialConfig(url, amqp.Config{Heartbeat: 2 * time.Second, Dial: amqp.DefaultDial(3 * time.Second)})
}

// faultPublish publishes persistent messages with confirms (up to 64 unconfirmed) until ctx ends
// or the connection fails; confirmed ones go to the checker.
func faultPublish(ctx context.Context, url, q string, ck *faultChecker) {
	c, err := faultDial(url)
	if err != nil {
		return
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil || ch.Confirm(false) != nil {
		return
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1024))
	var tag uint64
	pending := map[uint64]uint64{} // delivery tag -> sequence number
	settle := func(cf amqp.Confirmation) {
		if seq, ok := pending[cf.DeliveryTag]; ok {
			delete(pending, cf.DeliveryTag)
			if cf.Ack {
				ck.confirm(seq)
			}
		}
	}
	for ctx.Err() == nil {
		for len(pending) >= 64 {
			select {
			case cf, ok := <-confirms:
				if !ok {
					return
				}
				settle(cf)
			case <-ctx.Done():
				return
			}
		}
		seq := ck.take()
		body := binary.BigEndian.AppendUint64(make([]byte, 0, 40), seq)
		body = append(body, "random-fault-test-payload"...)
		if ch.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body}) != nil {
			return
		}
		tag++
		pending[tag] = seq
		for drained := false; !drained; {
			select {
			case cf, ok := <-confirms:
				if !ok {
					return
				}
				settle(cf)
			default:
				drained = true
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Wait a little for the confirms in flight; what is not confirmed need not survive.
	wait := time.After(3 * time.Second)
	for len(pending) > 0 {
		select {
		case cf, ok := <-confirms:
			if !ok {
				return
			}
			settle(cf)
		case <-wait:
			return
		}
	}
}

// faultConsume consumes with manual acks (prefetch 32) until ctx ends or the connection fails.
func faultConsume(ctx context.Context, url, q string, ck *faultChecker) {
	c, err := faultDial(url)
	if err != nil {
		return
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil || ch.Qos(32, 0, false) != nil {
		return
	}
	dels, err := ch.ConsumeWithContext(ctx, q, "", false, false, false, false, nil)
	if err != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case d, ok := <-dels:
			if !ok {
				return
			}
			ck.deliveredBy(fmt.Sprintf("consumer via %s (connection %p) tag %d", url, c, d.DeliveryTag), d.Body, d.Redelivered)
			if d.Ack(false) != nil {
				return
			}
		}
	}
}

// TestClusterRandomFaults runs a three-node cluster in network namespaces through a seeded
// random sequence of faults and repairs (kill -9 of a node, often the serving one; restart;
// isolating a node; cutting one link; healing) while two AMQP publishers with confirms and two
// consumers with manual acks run throughout, and an MQTT QoS 1 publisher and a device with a
// persistent session (cluster_faults_mqtt_test.go), each reconnecting to another node when its
// connection fails. At the end everything is healed and restarted; the cluster must then take
// a final batch through every node, the consumers must get every message ever confirmed, no
// message that was never published, and a message twice only as a redelivery; the nodes' data
// must converge. The seed is logged; PARLEY_FAULT_SEED=<seed> replays the same choices (the
// timing of the processes still differs from run to run).
func TestClusterRandomFaults(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(faultSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", faultSeedEnv, s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay: %s=%d go test -count=1 -run 'TestClusterRandomFaults$' ./integration/)", seed, faultSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))

	c := StartNetnsCluster(t, 3)
	nodes := c.Nodes
	q := Name(t, "faults")
	{
		conn := dialRetry(t, nodes[0])
		if _, err := channel(t, conn).QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}

	ck := newFaultChecker()
	// The MQTT side: a QoS 1 publisher and a device with a persistent session.
	mck := newFaultChecker()
	topic := "faults/" + q
	device := fmt.Sprintf("faults-dev-%d", os.Getpid())
	setupFaultDevice(t, nodes[0], device, topic, mck)

	pubCtx, stopPub := context.WithCancel(context.Background())
	conCtx, stopCon := context.WithCancel(context.Background())
	var pubs, cons sync.WaitGroup
	defer func() { stopPub(); stopCon(); pubs.Wait(); cons.Wait() }()
	client := func(wg *sync.WaitGroup, ctx context.Context, start int, run func(context.Context, *Node)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := start; ctx.Err() == nil; i++ {
				if n := nodes[i%len(nodes)]; n.Running() {
					run(ctx, n)
				}
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
	}
	for i := range 2 {
		client(&pubs, pubCtx, i, func(ctx context.Context, n *Node) { faultPublish(ctx, n.URL, q, ck) })
		client(&cons, conCtx, i+1, func(ctx context.Context, n *Node) { faultConsume(ctx, n.URL, q, ck) })
	}
	client(&pubs, pubCtx, 2, func(ctx context.Context, n *Node) { faultMQTTPublish(ctx, n.MQTTAddr, topic, mck) })
	client(&cons, conCtx, 1, func(ctx context.Context, n *Node) {
		_ = faultMQTTDevice(ctx, n.MQTTAddr, device, topic, false, mck)
	})

	// The faults start once messages flow.
	for warm := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, conf, got, _ := ck.counts()
		_, mconf, mgot, _ := mck.counts()
		if conf > 0 && got > 0 && mconf > 0 && mgot > 0 {
			break
		}
		if time.Now().After(warm) {
			t.Fatal("no message confirmed and consumed within 30s of the start, before any fault")
		}
	}
	down := map[int]bool{}
	faults := func() int {
		n := len(down)
		for a := 1; a <= 3; a++ {
			for b := a + 1; b <= 3; b++ {
				if c.Cut(a, b) {
					n++
				}
			}
		}
		return n
	}
	servingID := func() int {
		for _, n := range nodes {
			if down[n.ID] || !n.Running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := n.Status(ctx)
			cancel()
			if err == nil && st.Serving {
				return n.ID
			}
		}
		return 0
	}
	// victim is the serving node half the time (when one serves), else any node.
	victim := func() int {
		if rng.IntN(2) == 0 {
			if id := servingID(); id != 0 {
				return id
			}
		}
		return 1 + rng.IntN(3)
	}
	for ev := range faultEvents() {
		var did string
		repair := faults() > 0 && rng.IntN(3) > 0 || faults() >= 2
		switch {
		case repair && len(down) > 0 && (rng.IntN(2) == 0 || faults() == len(down)):
			for id := 1; id <= 3; id++ { // the lowest, so a seed replays the same choice
				if down[id] {
					nodes[id-1].Restart()
					delete(down, id)
					did = fmt.Sprintf("restart node %d", id)
					break
				}
			}
		case repair:
			c.HealAll()
			did = "heal every link"
		default:
			switch id := victim(); rng.IntN(3) {
			case 0:
				if down[id] {
					did = fmt.Sprintf("node %d already down: nothing", id)
					break
				}
				nodes[id-1].Kill()
				down[id] = true
				did = fmt.Sprintf("kill -9 node %d", id)
			case 1:
				c.Isolate(id, true)
				did = fmt.Sprintf("isolate node %d", id)
			default:
				other := 1 + (id+rng.IntN(2))%3
				c.SetLink(id, other, true)
				did = fmt.Sprintf("cut link %d-%d", id, other)
			}
		}
		pause := time.Duration(300+rng.IntN(1700)) * time.Millisecond
		sent, conf, got, redel := ck.counts()
		_, mconf, mgot, mredel := mck.counts()
		t.Logf("%s event %d: %s; then %v (so far AMQP: %d sent, %d confirmed, %d consumed, %d redeliveries; MQTT: %d PUBACKed, %d received, %d again)",
			time.Now().Format("15:04:05.000000"), ev+1, did, pause, sent, conf, got, redel, mconf, mgot, mredel)
		time.Sleep(pause)
	}

	// Repair everything; the cluster must then work through every node again.
	c.HealAll()
	for id := range down {
		nodes[id-1].Restart()
	}
	WaitServing(t, nodes)
	stopPub()
	pubs.Wait()
	for _, n := range nodes {
		finalAMQPBatch(t, n, q, ck)
	}
	finalMQTTBatch(t, nodes, topic, mck)

	// The consumers carry on until they have every confirmed message (bounded).
	deadline := time.Now().Add(120 * time.Second)
	for {
		n, _ := ck.missing()
		m, _ := mck.missing()
		if n == 0 && m == 0 {
			break
		}
		if time.Now().After(deadline) {
			stopCon()
			cons.Wait()
			// What is still in the queue counts too (a consumer may have been stuck).
			drainQueueFunc(t, nodes[0], q, ck.delivered)
			if n, example := ck.missing(); n > 0 {
				t.Errorf("%d confirmed messages never consumed (for instance %d)", n, example)
			}
			if n, example := mck.missing(); n > 0 {
				t.Errorf("MQTT: %d PUBACKed messages never reached the device (for instance %d)", n, example)
			}
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopCon()
	cons.Wait()
	// Left in the queue: only messages published but never confirmed, and redeliveries.
	drainQueueFunc(t, nodes[rng.IntN(3)], q, ck.delivered)
	for proto, k := range map[string]*faultChecker{"AMQP": ck, "MQTT": mck} {
		k.mu.Lock()
		for _, p := range k.problems {
			t.Errorf("%s: %s", proto, p)
		}
		k.mu.Unlock()
	}
	sent, conf, got, redel := ck.counts()
	msent, mconf, mgot, mredel := mck.counts()
	t.Logf("seed %d: %d events; AMQP: %d messages sent, %d confirmed, %d distinct consumed, %d redeliveries; MQTT: %d sent, %d PUBACKed, %d distinct received, %d again",
		seed, faultEvents(), sent, conf, got, redel, msent, mconf, mgot, mredel)
	if conf < 100 || mconf < 30 {
		t.Errorf("only %d AMQP and %d MQTT messages confirmed over the whole run: the test proved little", conf, mconf)
	}
	WaitConverged(t, nodes, 60*time.Second)
}

// finalAMQPBatch publishes 10 confirmed messages through node n once the cluster is whole. The
// cluster may still be settling (a node that was cut off rejoins and a leader changes): a nack
// or a closed connection is retried, bounded, under a new sequence number, since a message that
// was nacked may or may not be in the queue.
func finalAMQPBatch(t testing.TB, n *Node, q string, ck *faultChecker) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var ch *amqp.Channel
	var conn *amqp.Connection
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for i := 0; i < 10; {
		if time.Now().After(deadline) {
			t.Fatalf("node %d: 10 confirmed publishes not done within 60s of the repair (%d done)", n.ID, i)
		}
		if ch == nil {
			if conn != nil {
				conn.Close()
			}
			conn = dialRetry(t, n)
			var err error
			if ch, err = conn.Channel(); err != nil || ch.Confirm(false) != nil {
				ch = nil
				time.Sleep(200 * time.Millisecond)
				continue
			}
		}
		seq := ck.take()
		body := binary.BigEndian.AppendUint64(nil, seq)
		body = append(body, fmt.Sprintf("final-%d-%d", n.ID, i)...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
		ok := false
		if err == nil {
			ok, err = dc.WaitContext(ctx)
		}
		cancel()
		switch {
		case err == nil && ok:
			ck.confirm(seq)
			i++
		case err == nil:
			t.Logf("node %d: final publish %d nacked; again", n.ID, seq)
		default:
			t.Logf("node %d: final publish %d: %v; again", n.ID, seq, err)
			ch = nil
		}
	}
}
