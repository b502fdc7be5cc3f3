package broker

import "sync"

// inbox is a queue's bounded command queue. Any goroutine posts; the queue's goroutine takes
// everything waiting at once, as one batch (DESIGN.md §2). It is a slice under a mutex rather
// than a buffered channel because a channel allocates its whole capacity up front: 4096
// commands are about 450 KB, for every queue, and an MQTT broker has a queue per subscribing
// device. The slices here grow with what is actually waiting.
//
// A full inbox blocks the poster until the queue takes a batch (back-pressure, never a drop).
type inbox struct {
	mu     sync.Mutex
	cmds   []command
	spare  []command     // the previous batch's slice, reused for the next
	limit  int           // posters block while this many commands wait
	room   chan struct{} // closed when a batch is taken, if someone waits for room; then replaced
	wake   chan struct{} // capacity 1: the queue's goroutine waits on it
	closed bool
}

func newInbox(limit int) *inbox {
	return &inbox{limit: max(limit, 1), wake: make(chan struct{}, 1)}
}

// post appends c, waiting while the inbox is full. False when the queue has stopped (done is
// closed, or the inbox closed).
func (in *inbox) post(c command, done <-chan struct{}) bool {
	in.mu.Lock()
	for len(in.cmds) >= in.limit && !in.closed {
		if in.room == nil {
			in.room = make(chan struct{})
		}
		room := in.room
		in.mu.Unlock()
		select {
		case <-room:
		case <-done:
			return false
		}
		in.mu.Lock()
	}
	if in.closed {
		in.mu.Unlock()
		return false
	}
	in.cmds = append(in.cmds, c)
	first := len(in.cmds) == 1
	in.mu.Unlock()
	if first {
		select {
		case in.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// take returns every command waiting, in order. The caller hands the slice back with recycle
// once it has applied them.
func (in *inbox) take() []command {
	in.mu.Lock()
	batch := in.cmds
	in.cmds = in.spare[:0]
	in.spare = nil
	if in.room != nil {
		close(in.room)
		in.room = nil
	}
	in.mu.Unlock()
	return batch
}

// recycle keeps a batch's slice for a later one, unless it grew large in a burst.
func (in *inbox) recycle(batch []command) {
	if cap(batch) > 1024 {
		return
	}
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
