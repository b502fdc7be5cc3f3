package stomp

import (
	"sync"
	"sync/atomic"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/parleymq/parley/protocol/stomp/wire"
)

// receipt is a RECEIPT owed to the client. holds counts what must finish first: the frame's
// own handling and each publish it made, which the core confirms on queue goroutines.
type receipt struct {
	id      string
	holds   atomic.Int32
	refused atomic.Bool
	dropped atomic.Bool
	written chan struct{} // closed once the RECEIPT is in the write buffer
	q       *receiptQueue
}

// hold adds one more thing the receipt waits for.
func (r *receipt) hold() { r.holds.Add(1) }

// release ends one hold; ok false means the core refused a publish (x-overflow
// reject-publish), which turns the receipt into an ERROR.
func (r *receipt) release(ok bool) {
	if !ok {
		r.refused.Store(true)
	}
	if r.holds.Add(-1) == 0 {
		r.q.flush()
	}
}

// receiptQueue writes receipts in the order their frames arrived, as RabbitMQ does
// (flush_pending_receipts with multiple): a receipt for a later frame never overtakes one
// still waiting for the core.
type receiptQueue struct {
	c       *conn
	mu      sync.Mutex
	pending []*receipt
}

func (q *receiptQueue) add(id string) *receipt {
	r := &receipt{id: id, written: make(chan struct{}), q: q}
	r.holds.Store(1)
	q.mu.Lock()
	q.pending = append(q.pending, r)
	q.mu.Unlock()
	return r
}

// drop abandons a receipt whose frame failed: the connection is about to end with an ERROR
// that carries the receipt-id instead.
func (q *receiptQueue) drop(r *receipt) {
	r.dropped.Store(true)
	r.release(true)
}

// flush writes every leading receipt that has nothing left to wait for.
func (q *receiptQueue) flush() {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, r := range q.pending {
		if r.holds.Load() > 0 {
			break
		}
		n++
		switch {
		case r.dropped.Load():
		case r.refused.Load():
			q.c.fail(&stompError{msg: "Message rejected", receiptID: r.id,
				detail: "A queue the message was routed to refused it (x-overflow reject-publish)"})
		default:
			c := q.c
			b := c.w.Lock()
			b = wire.AppendCommand(b, frame.RECEIPT)
			b = wire.AppendHeader(b, frame.ReceiptId, r.id, c.version)
			b = wire.AppendBody(b, nil)
			c.w.Unlock(b)
		}
		close(r.written)
	}
	if n > 0 {
		clear(q.pending[:n])
		q.pending = q.pending[n:]
	}
}
