package broker

import (
	"sync"
	"sync/atomic"
)

// inbox is a queue's bounded command queue. Any goroutine posts; the queue's goroutine takes
// everything waiting at once, as one batch (DESIGN.md §2). It is a slice under a mutex rather
// than a buffered channel because a channel allocates its whole capacity up front: 4096
// commands are about 450 KB, for every queue, and an MQTT broker has a queue per subscribing
// device. The slices here grow with what is actually waiting.
//
// A full inbox blocks the poster until the queue takes a batch (back-pressure, never a drop).
//
// The queue's goroutine runs only while there is work: with nothing waiting, no kick and no
// timer to wait for during a tick of the broker's idle clock (linger.go), it parks (returns),
// and the next post or kick starts a new one through start. An idle queue therefore costs no
// goroutine stack; thousands of MQTT sessions and AMQP queues sit idle most of the time. running, under mu, says whether a goroutine owns the queue;
// the mutex orders one goroutine's work on the state machine before the next one's.
type inbox struct {
	mu     sync.Mutex
	cmds   []command
	spare  []command     // the previous batch's slice, reused for the next
	limit  int           // posters block while this many commands wait
	room   chan struct{} // closed when a batch is taken, if someone waits for room; then replaced
	wake   chan struct{} // capacity 1: the queue's goroutine waits on it
	closed bool
	// waiting is len(cmds), for Queue.Backlog to read without the mutex.
	waiting atomic.Int64

	running bool   // a goroutine owns the queue
	kicked  bool   // Kick was called since the last take
	start   func() // starts the queue's goroutine (go q.run())
}

// newInbox returns an inbox whose goroutine is running (the caller starts it) and has a
// wake-up waiting, so it runs its first round at once.
func newInbox(limit int, start func()) *inbox {
	in := &inbox{limit: max(limit, 1), wake: make(chan struct{}, 1), running: true, start: start}
	in.wake <- struct{}{}
	return in
}

// signalLocked makes sure the queue's goroutine will run another round: it starts one if none
// runs, and leaves a wake-up for it either way. mu held.
func (in *inbox) signalLocked() {
	if in.closed {
		return
	}
	select {
	case in.wake <- struct{}{}:
	default:
	}
	if !in.running {
		in.running = true
		in.start()
	}
}

// kick asks for another delivery round (a consumer's outside credit came back).
func (in *inbox) kick() {
	in.mu.Lock()
	in.kicked = true
	in.signalLocked()
	in.mu.Unlock()
}

// park ends the running goroutine's ownership if nothing is waiting and nobody kicked since the
// last take; true means the goroutine must return now, touching nothing of the queue.
func (in *inbox) park() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.cmds) > 0 || in.kicked || in.closed {
		return false
	}
	in.running = false
	// An idle queue does not pin a burst's batch slices (cmds is empty here).
	if cap(in.spare) > keepBatch {
		in.spare = nil
	}
	if cap(in.cmds) > keepBatch {
		in.cmds = nil
	}
	return true
}

// post appends c, waiting while the inbox is full, and makes sure the queue's goroutine will
// take it. False when the queue has stopped (done is closed, or the inbox closed).
func (in *inbox) post(c command, done <-chan struct{}) bool {
	ok, _ := in.postDeferred(c, done, nil)
	return ok
}

// postDeferred is post for a poster that collects its wake-ups in w (nil: none, as post): when
// c is the first command waiting, the queue's goroutine is not woken and owe is true: the
// caller must call wakeUp (through w.Flush) before it blocks. A poster that does not defer
// always signals, so a command posted behind deferred ones (a call, which waits for its
// reply) never waits for a wake-up someone else owes. Before waiting for room, the inbox is
// signalled and w flushed: a full inbox's commands must be taken, and the poster's other
// queues must not wait for it.
func (in *inbox) postDeferred(c command, done <-chan struct{}, w *Wakes) (ok, owe bool) {
	in.mu.Lock()
	for len(in.cmds) >= in.limit && !in.closed {
		in.signalLocked()
		if in.room == nil {
			in.room = make(chan struct{})
		}
		room := in.room
		in.mu.Unlock()
		if w != nil {
			w.Flush()
		}
		select {
		case <-room:
		case <-done:
			return false, false
		}
		in.mu.Lock()
	}
	if in.closed {
		in.mu.Unlock()
		return false, false
	}
	in.cmds = append(in.cmds, c)
	in.waiting.Store(int64(len(in.cmds)))
	switch {
	case w == nil:
		in.signalLocked()
	case len(in.cmds) == 1:
		// Whoever posted the commands ahead either signalled or owes the wake-up too.
		owe = true
	}
	in.mu.Unlock()
	return true, owe
}

// wakeUp signals the queue's goroutine if commands wait: a deferred poster's wake-up.
func (in *inbox) wakeUp() {
	in.mu.Lock()
	if len(in.cmds) > 0 {
		in.signalLocked()
	}
	in.mu.Unlock()
}

// take returns every command waiting, in order. The caller hands the slice back with recycle
// once it has applied them.
func (in *inbox) take() []command {
	in.mu.Lock()
	batch := in.cmds
	in.cmds = in.spare[:0]
	in.spare = nil
	in.waiting.Store(0)
	in.kicked = false
	if in.room != nil {
		close(in.room)
		in.room = nil
	}
	in.mu.Unlock()
	return batch
}

// keepBatch is the largest batch slice (in commands) a parked queue keeps for its next run.
const keepBatch = 1024

// recycle keeps a batch's slice for a later one, whatever its size while the queue runs: a
// flooded queue takes batches of thousands of commands, and dropping each one made the next
// grow anew by append's doubling (a tenth of the bytes allocated per message in a 1p/1c
// transient flood, docs/performance.md). park gives back a slice above keepBatch.
func (in *inbox) recycle(batch []command) {
	clear(batch)
	in.mu.Lock()
	if in.spare == nil {
		in.spare = batch[:0]
	}
	in.mu.Unlock()
}

// close refuses further posts and returns what was still waiting.
func (in *inbox) close() []command {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closed = true
	rest := in.cmds
	in.cmds = nil
	if in.room != nil {
		close(in.room)
		in.room = nil
	}
	return rest
}
