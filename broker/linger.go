package broker

import (
	"sync"
	"time"
)

// lingerTick is the idle clock's period. A queue's goroutine with nothing to do stays parked on
// its inbox for one to two ticks before it ends (Queue.run): a queue that gets a command every
// few milliseconds (an MQTT subscriber's PUBACKs, a consumer's acks, a fixed-rate publisher)
// keeps its goroutine instead of starting a new one per command, while a queue that went quiet
// gives its goroutine back within 2 × lingerTick, so idle queues cost what they did.
const lingerTick = 5 * time.Millisecond

// idleClock tells lingering queue goroutines that a tick has passed, for all of them at once:
// one channel, closed at each tick and replaced by the next caller's. A timer per queue would
// cost every queue a timer and its channel for as long as it lives (an MQTT broker keeps tens of
// thousands of idle queues); this costs one goroutine and one ticker for the whole broker, and
// only while some queue lingers: the goroutine stops at a tick nobody waited for.
type idleClock struct {
	mu      sync.Mutex
	next    chan struct{} // closed at the next tick; nil when nobody waits for it
	running bool          // the ticking goroutine is alive
}

// tick returns a channel that is closed at the clock's next tick, between now and lingerTick
// from now.
func (c *idleClock) tick() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next == nil {
		c.next = make(chan struct{})
	}
	if !c.running {
		c.running = true
		go c.run()
	}
	return c.next
}

func (c *idleClock) run() {
	t := time.NewTicker(lingerTick)
	defer t.Stop()
	for range t.C {
		c.mu.Lock()
		next := c.next
		c.next = nil
		if next == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		close(next)
	}
}

// IdleTick returns a channel closed at the broker's idle clock's next tick, between now and
// 5 ms from now. Protocol adapters linger on it as queues do: an MQTT connection keeps its
// packet-handling goroutine while its client is busy and ends it once a whole tick passed
// without a packet (protocol/mqtt, conn.deep).
func (b *Broker) IdleTick() <-chan struct{} { return b.idle.tick() }
