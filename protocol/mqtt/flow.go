package mqtt

import (
	"time"

	"github.com/parleymq/parley/broker"
)

// Flow control for publishers. A publisher's reader never waited for delivery: with ten
// publishers and one subscriber, Parley read ten sockets as fast as they came while the one
// subscriber's queue grew by tens of thousands of messages a second (run 11: in 106k/s, out
// 59k/s, p50 latency 6 s), and the CPU spent taking messages that only piled up, on two cores
// shared with the clients, was taken from the delivery. Mosquitto, single-threaded, shares one
// core between reading and writing; RabbitMQ blocks a publisher's connection by credit flow
// when the queue processes fall behind. Here a connection whose publish reached a queue that
// has a consumer and more than Config.PublishFlowLimit ready messages reads no further packet
// until that queue is down to half the limit: the client's socket fills and its publishes
// wait in its own TCP stack. Nothing is dropped and QoS 0 is treated as QoS 1 (RabbitMQ's
// native MQTT instead drops QoS 0 messages for a subscriber whose mailbox is over
// mqtt.mailbox_soft_limit).
//
// The wait ends early when the queue hands its consumers nothing (Queue.Delivered) for
// flowStallTicks ticks of the broker's idle clock (a subscriber that stopped reading must not
// stop every publisher to its topic: it only fills its own queue, as before), and flow control
// is then off for that session for flowOffAfterStall; and it never lasts longer than
// flowMaxWait at a time, so the client's keep-alive is served (its PINGREQ is read between two
// waits). A queue without consumers (an offline persistent session) never holds publishers
// back, nor (not yet) does a queue served by another node, whose deliveries are not counted
// here (Queue.Delivered is -1).

const (
	flowStallTicks    = 200             // idle ticks (5 ms) without a delivery: stalled (1 s)
	flowMaxWait       = 2 * time.Second // one wait at most, then one more burst is read
	flowOffAfterStall = 10 * time.Second
)

// noteFlow runs after each publish the core took: it remembers the longest queue the publish
// reached that is over the limit, for awaitFlow once the burst is over.
func (x *session) noteFlow() {
	limit := x.s.cfg.PublishFlowLimit
	if limit < 0 {
		return
	}
	for _, q := range x.scratch.Queues() {
		n := q.Len()
		if n <= limit || q.ConsumerCount() == 0 || q.Delivered() < 0 {
			continue
		}
		if x.flowQ != nil && x.flowQ.Len() >= n {
			continue
		}
		if !x.flowOffUntil.IsZero() {
			if time.Now().Before(x.flowOffUntil) {
				return
			}
			x.flowOffUntil = time.Time{}
		}
		x.flowQ = q
	}
}

// awaitFlow waits, before the connection reads its next packet, while the queue noteFlow
// found is over half the limit and its consumers drain it. It runs on the connection's reader
// after a burst (conn.serve).
//
//go:noinline
func (x *session) awaitFlow() {
	q := x.flowQ
	x.flowQ = nil
	low := x.s.cfg.PublishFlowLimit / 2
	last := q.Delivered()
	still := 0
	deadline := time.Now().Add(flowMaxWait)
	for q.Len() > low && q.ConsumerCount() > 0 && !x.cl.Closed() {
		waitTick(x.s.b)
		// Progress is what the consumers took, not the length: other publishers may still
		// be adding to it.
		n := q.Delivered()
		if n != last {
			last, still = n, 0
		} else if still++; still >= flowStallTicks {
			x.flowOffUntil = time.Now().Add(flowOffAfterStall)
			return
		}
		if time.Now().After(deadline) {
			return
		}
	}
}

func waitTick(b *broker.Broker) { <-b.IdleTick() }
