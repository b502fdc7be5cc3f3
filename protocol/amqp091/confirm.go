package amqp091

import (
	"sync"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/protocol/amqp091/wire"
)

// confirmTracker numbers a channel's publishes in confirm mode (from 1, AMQP 0-9-1 RabbitMQ
// extension "confirm.select") and emits basic.ack/basic.nack strictly in sequence order. The
// core completes publishes out of order (each queue on its own goroutine); outcomes wait here
// until every earlier one is known, so a run of consecutive acks goes out as a single
// basic.ack multiple=true. Emission happens on the writer goroutine just before a write, which
// coalesces confirms that complete close together.
type confirmTracker struct {
	mu     sync.Mutex
	next   uint64  // next sequence number to assign; 0 until confirm.select
	low    uint64  // lowest sequence number not yet emitted
	state  []uint8 // outcome of low+i: 0 pending, confirmAck, confirmNack
	hold   uint64  // the publish the reader is still handling: emission stops before it
	closed bool
	marked bool // already queued on the writer
}

const (
	confirmPending uint8 = iota
	confirmAck
	confirmNack
)

// assign numbers a publish and holds emission at it until release: a mandatory publish's
// basic.return must precede its basic.ack. Reader goroutine.
func (t *confirmTracker) assign() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.next == 0 {
		t.next, t.low = 1, 1
	}
	seq := t.next
	t.next++
	t.state = append(t.state, confirmPending)
	t.hold = seq
	return seq
}

// callback returns the core's Confirm for seq.
func (t *confirmTracker) callback(ch *channel, seq uint64) broker.Confirm {
	return func(ok bool) { t.done(ch, seq, ok) }
}

// done records an outcome; any goroutine, must not block.
func (t *confirmTracker) done(ch *channel, seq uint64, ok bool) {
	t.mu.Lock()
	if t.closed || seq < t.low {
		t.mu.Unlock()
		return
	}
	v := confirmAck
	if !ok {
		v = confirmNack
	}
	t.state[seq-t.low] = v
	schedule := seq == t.low && seq != t.hold && !t.marked
	if schedule {
		t.marked = true
	}
	t.mu.Unlock()
	if schedule {
		ch.c.markConfirms(ch)
	}
}

// release ends the hold set by assign.
func (t *confirmTracker) release(ch *channel, seq uint64) {
	t.mu.Lock()
	if t.hold == seq {
		t.hold = 0
	}
	schedule := !t.closed && len(t.state) > 0 && t.state[0] != confirmPending && !t.marked
	if schedule {
		t.marked = true
	}
	t.mu.Unlock()
	if schedule {
		ch.c.markConfirms(ch)
	}
}

// close drops every outstanding confirm: the channel is gone.
func (t *confirmTracker) close() {
	t.mu.Lock()
	t.closed = true
	t.state = nil
	t.mu.Unlock()
}

// emit appends basic.ack/basic.nack frames for the known prefix of outcomes. Writer goroutine.
func (t *confirmTracker) emit(ch *channel) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.marked = false
	if t.closed {
		return
	}
	n := 0
	b := ch.c.w.Lock()
	for n < len(t.state) && t.state[n] != confirmPending && t.low+uint64(n) != t.hold {
		v := t.state[n]
		start := n
		for n < len(t.state) && t.state[n] == v && t.low+uint64(n) != t.hold {
			n++
		}
		tag := t.low + uint64(n) - 1
		multiple := n-start > 1
		if v == confirmAck {
			b = wire.AppendMethodFrame(b, ch.id, &wire.BasicAck{DeliveryTag: tag, Multiple: multiple})
		} else {
			b = wire.AppendMethodFrame(b, ch.id, &wire.BasicNack{DeliveryTag: tag, Multiple: multiple})
		}
	}
	ch.c.w.Unlock(b)
	if n > 0 {
		t.low += uint64(n)
		t.state = append(t.state[:0], t.state[n:]...)
	}
}

// txState buffers a transactional channel's work until tx.commit (AMQP 0-9-1 §1.9 tx class).
type txState struct {
	publishes  []txPublish
	acks       []txAck
	committing bool
}

type txPublish struct {
	m         *message.Message
	mandatory bool
}

type txAck struct {
	ps []pendingAck
	o  queue.Outcome
}

// txCommit publishes and settles everything buffered, waits until every queue has accepted
// the publishes (RabbitMQ replies tx.commit-ok only then), and starts a new transaction.
func (ch *channel) txCommit() error {
	if ch.tx == nil {
		return newError(preconditionFailed, "channel is not transactional")
	}
	tx := ch.tx
	ch.tx = &txState{}
	var wg sync.WaitGroup
	confirm := func(bool) { wg.Done() }
	for _, p := range tx.publishes {
		wg.Add(1)
		routed, err := ch.c.vhost.Publish(p.m, confirm, &ch.scratch)
		if err != nil {
			// The exchange went away after basic.publish was checked.
			wg.Done()
			return err
		}
		if !routed && p.mandatory {
			ch.sendReturn(p.m)
		}
	}
	credit := 0
	for _, a := range tx.acks {
		for _, p := range a.ps {
			if p.credit {
				credit++
			}
		}
		settleGrouped(a.ps, a.o)
	}
	ch.releaseCredit(credit)
	ch.c.wakes.Flush() // the queues must run before the publishes can be confirmed
	wg.Wait()
	ch.send(&wire.TxCommitOk{})
	return nil
}

// txRollback discards buffered publishes and puts buffered acks back as unacked.
func (ch *channel) txRollback() error {
	if ch.tx == nil {
		return newError(preconditionFailed, "channel is not transactional")
	}
	ch.mu.Lock()
	for _, a := range ch.tx.acks {
		ch.unacked.restore(a.ps)
	}
	ch.mu.Unlock()
	ch.tx = &txState{}
	ch.send(&wire.TxRollbackOk{})
	return nil
}

// markConfirms schedules ch's pending publisher confirms for the writer's next write, so
// confirms that complete close together leave as one basic.ack multiple=true.
func (c *conn) markConfirms(ch *channel) {
	c.confirmMu.Lock()
	c.confirmDirty = append(c.confirmDirty, ch)
	c.confirmMu.Unlock()
	c.w.Wake()
}

// flushConfirms emits the confirms markConfirms scheduled; the writer goroutine runs it before
// each write.
func (c *conn) flushConfirms() {
	c.confirmMu.Lock()
	dirty := c.confirmDirty
	c.confirmDirty = c.confirmSpare[:0]
	c.confirmMu.Unlock()
	for i, ch := range dirty {
		ch.confirms.emit(ch)
		dirty[i] = nil
	}
	c.confirmMu.Lock()
	c.confirmSpare = dirty[:0]
	c.confirmMu.Unlock()
}
