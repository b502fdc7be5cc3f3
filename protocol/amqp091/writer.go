package amqp091

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleymq/parley/protocol/amqp091/wire"
)

// writer owns the write side of a connection's socket. Anyone may append encoded frames to its
// buffer (lock, append, unlock); unlock wakes the writer goroutine, which swaps the buffer for
// its spare and writes everything pending in one call. Frames appended while a write is in
// flight are written together by the next one, so a busy connection makes few large writes
// and an idle one flushes at once: nothing is delayed waiting for company.
type writer struct {
	conn net.Conn

	mu     sync.Mutex
	buf    []byte
	closed bool       // no more appends accepted; the goroutine drains then stops
	dirty  []*channel // channels with publisher confirms to emit
	wake   chan struct{}

	done      chan struct{} // closed when the goroutine has stopped
	heartbeat chan time.Duration
	lastWrite atomic.Int64 // unix nanoseconds of the last socket write
	pending   atomic.Int64 // bytes appended and not yet written, for consumer back-pressure
	err       atomic.Value // first write error
	onDrain   func()       // called by the goroutine after a write that emptied a large buffer
}

// highWater is the amount of unwritten output above which no-ack consumers stop receiving: the
// client is not reading and the core would otherwise fill our memory. RabbitMQ gets the same
// effect from its writer's credit flow.
const highWater = 4 << 20

func newWriter(conn net.Conn) *writer {
	w := &writer{
		conn:      conn,
		buf:       make([]byte, 0, 4096),
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		heartbeat: make(chan time.Duration, 1),
	}
	w.lastWrite.Store(time.Now().UnixNano())
	return w
}

// lock returns the buffer to append to; unlock must follow with the extended buffer.
func (w *writer) lock() []byte {
	w.mu.Lock()
	return w.buf
}

// unlock stores the extended buffer and wakes the writer. Appends after close are dropped.
func (w *writer) unlock(b []byte) {
	if w.closed {
		w.buf = b[:0]
		w.mu.Unlock()
		return
	}
	w.pending.Add(int64(len(b) - len(w.buf)))
	w.buf = b
	w.mu.Unlock()
	w.signal()
}

func (w *writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// markConfirms schedules ch's pending publisher confirms for the next write, so confirms that
// complete close together leave as one basic.ack multiple=true.
func (w *writer) markConfirms(ch *channel) {
	w.mu.Lock()
	if !w.closed {
		w.dirty = append(w.dirty, ch)
	}
	w.mu.Unlock()
	w.signal()
}

// setHeartbeat starts heartbeat frames every d/2 of write silence (AMQP 0-9-1 §4.2.7).
func (w *writer) setHeartbeat(d time.Duration) {
	select {
	case w.heartbeat <- d:
	default:
	}
}

// close stops accepting frames; the goroutine writes what is pending, then stops. It does not
// close the socket.
func (w *writer) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.signal()
}

// overloaded reports whether unwritten output exceeds the high-water mark.
func (w *writer) overloaded() bool { return w.pending.Load() > highWater }

// run is the writer goroutine.
func (w *writer) run() {
	defer close(w.done)
	var spare []byte
	var dirty []*channel
	var tick <-chan time.Time
	var interval time.Duration
	for {
		select {
		case <-w.wake:
		case d := <-w.heartbeat:
			if d > 0 {
				interval = d / 2
				t := time.NewTicker(interval)
				defer t.Stop()
				tick = t.C
			}
		case <-tick:
			if time.Since(time.Unix(0, w.lastWrite.Load())) >= interval {
				b := w.lock()
				w.unlock(wire.AppendHeartbeat(b))
			}
			continue
		}
		w.mu.Lock()
		dirty, w.dirty = w.dirty, dirty[:0]
		w.mu.Unlock()
		for i, ch := range dirty {
			ch.confirms.emit(ch)
			dirty[i] = nil
		}
		w.mu.Lock()
		out := w.buf
		w.buf = spare[:0]
		closed := w.closed
		w.mu.Unlock()
		if len(out) > 0 && w.err.Load() == nil {
			if _, err := w.conn.Write(out); err != nil {
				w.err.Store(err)
				// Unblock the reader: the connection is dead.
				_ = w.conn.Close()
			}
			w.lastWrite.Store(time.Now().UnixNano())
		}
		before := w.pending.Add(-int64(len(out))) + int64(len(out))
		if before > highWater && w.onDrain != nil && !w.overloaded() {
			w.onDrain()
		}
		// Do not keep a huge buffer alive after a burst.
		if cap(out) > 1<<20 {
			out = nil
		}
		spare = out
		if closed {
			w.mu.Lock()
			empty := len(w.buf) == 0
			w.mu.Unlock()
			if empty {
				return
			}
			w.signal()
		}
	}
}
