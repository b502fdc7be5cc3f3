package broker

import (
	"time"
)

// Flow control for publishers: a connection whose publish reached a queue that is over its
// publishers' limit reads nothing more from its client until the queue is down to half the
// limit. The client's socket fills and its publishes wait in its own TCP stack; nothing is
// dropped. RabbitMQ gets the same effect from credit flow, which stops reading a publisher's
// socket while the queue processes behind it fall behind.
//
// Without it, a producer faster than the consumers of a queue filled that queue for as long as
// it published (1p/1c transient AMQP: in 192k msg/s, out 167k msg/s, p50 latency 0.9 s after a
// few seconds, docs/performance.md run 14), and the CPU spent taking messages that only piled
// up, on machines where the clients share the cores, was taken from the delivery.
//
// Which queues hold their publishers back depends on the protocol (FlowGate.WorkersExempt):
//   - MQTT (false): any queue with a consumer. An MQTT subscriber takes what it is sent, so a
//     queue that grows is one whose subscriber cannot keep up.
//   - AMQP and STOMP (true): not a queue whose last delivery round stopped with messages ready
//     only because every consumer was out of credit (prefetch, basic.qos): workers that
//     acknowledge at their own pace. A producer that enqueues a burst of jobs for slow workers
//     is not slowed by them, as in RabbitMQ. A queue whose consumers could take more but whose
//     connections' output is full (Queue.RefusedForOutput), or whose goroutine has not caught
//     up with its inbox, does hold them: the messages do not leave Parley as fast as they come.
//
// The wait ends early when the queue hands its consumers nothing (Queue.Delivered) for
// flowStallTicks ticks of the broker's idle clock (a consumer that stopped reading must not stop
// every publisher to its queue: it only fills its own queue, as before), and flow control is
// then off for that connection for flowOffAfterStall; and it never lasts longer than
// flowMaxWait at a time, so heartbeats and keep-alives are served (read between two waits). A
// queue served by another node is never waited for: its deliveries are not counted here
// (Queue.Delivered is -1).
const (
	flowStallTicks    = 200             // idle ticks (5 ms) without a delivery: stalled (1 s)
	flowMaxWait       = 2 * time.Second // one wait at most, then one more burst is read
	flowOffAfterStall = 10 * time.Second
)

// FlowGate is one publishing connection's flow control. Only the connection's reader uses it.
type FlowGate struct {
	// Limit is the ready count above which a queue holds this connection back; negative
	// turns flow control off.
	Limit int
	// WorkersExempt: a queue whose consumers are all held by their prefetch does not hold the
	// connection back (see above).
	WorkersExempt bool

	q        *Queue
	offUntil time.Time
}

// Note runs after a publish the core took, with the queues it reached: it remembers the longest
// of them that is over the limit, for Await once the burst of frames read is over.
func (g *FlowGate) Note(qs []*Queue) {
	if g.Limit < 0 {
		return
	}
	for _, q := range qs {
		n := q.Backlog()
		if n <= g.Limit || (g.q != nil && g.q.Backlog() >= n) || !g.holds(q) {
			continue
		}
		if !g.offUntil.IsZero() {
			if time.Now().Before(g.offUntil) {
				return
			}
			g.offUntil = time.Time{}
		}
		g.q = q
	}
}

// holds reports whether q's consumers are the kind that hold publishers back.
func (g *FlowGate) holds(q *Queue) bool {
	if q.ConsumerCount() == 0 || q.Delivered() < 0 {
		return false
	}
	return !g.WorkersExempt || !q.creditBound.Load()
}

// Held reports whether Note found a queue to wait for: the reader calls Await before it
// reads its next frame.
func (g *FlowGate) Held() bool { return g.q != nil }

// Await waits while the queue Note found is over half the limit and its consumers drain it;
// gone reports that the connection is closing.
func (g *FlowGate) Await(gone func() bool) {
	q := g.q
	g.q = nil
	if q == nil {
		return
	}
	low := g.Limit / 2
	last := q.Delivered()
	still := 0
	deadline := time.Now().Add(flowMaxWait)
	for q.Backlog() > low && g.holds(q) && !gone() {
		<-q.v.b.IdleTick()
		// Progress is what the consumers took, not the length: other publishers may still be
		// adding to it.
		if n := q.Delivered(); n != last {
			last, still = n, 0
		} else if still++; still >= flowStallTicks {
			g.offUntil = time.Now().Add(flowOffAfterStall)
			return
		}
		if time.Now().After(deadline) {
			return
		}
	}
}

// RefusedForOutput is called by a consumer's Allow (on the queue's goroutine) that refuses a
// delivery because its connection's unwritten output is over its high-water mark: the queue's
// round then did not stop for credit alone (FlowGate.WorkersExempt).
func (q *Queue) RefusedForOutput() { q.outputRefused = true }

// noteRoundEnd records, at the end of a delivery round, whether messages are left ready only
// because the consumers are out of credit.
func (q *Queue) noteRoundEnd(more bool) {
	held := !more && !q.outputRefused && q.sm.Len() > 0 && q.sm.ConsumerCount() > 0
	if q.creditBound.Load() != held {
		q.creditBound.Store(held)
	}
	q.outputRefused = false
}
