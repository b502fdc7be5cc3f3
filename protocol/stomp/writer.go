package stomp

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleymq/parley/protocol/stomp/wire"
)

// writer owns the write side of a connection's socket, as protocol/amqp091's writer does:
// anyone appends encoded frames under mu and wakes the goroutine, which writes everything
// pending in one call. In framed mode (WebSocket) it remembers where each frame ends and
// writes one frame per call instead, since each write becomes one WebSocket message.
type writer struct {
	conn   net.Conn
	framed bool

	mu     sync.Mutex
	buf    []byte
	ends   []int // framed: end offset of each frame in buf
	closed bool
	wake   chan struct{}

	done      chan struct{}
	heartbeat chan time.Duration
	lastWrite atomic.Int64
	pending   atomic.Int64
	failed    atomic.Bool
	onDrain   func()
}

// highWater is the unwritten output above which subscriptions stop receiving until the client
// reads: the core would otherwise fill our memory for a client that does not read.
const highWater = 4 << 20

func newWriter(conn net.Conn, framed bool) *writer {
	w := &writer{
		conn:      conn,
		framed:    framed,
		buf:       make([]byte, 0, 4096),
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		heartbeat: make(chan time.Duration, 1),
	}
	w.lastWrite.Store(time.Now().UnixNano())
	return w
}

// lock returns the buffer to append one frame to; unlock must follow.
func (w *writer) lock() []byte {
	w.mu.Lock()
	return w.buf
}

// unlock stores the buffer extended by one frame and wakes the writer.
func (w *writer) unlock(b []byte) {
	if w.closed {
		w.buf = b[:len(w.buf)]
		w.mu.Unlock()
		return
	}
	w.pending.Add(int64(len(b) - len(w.buf)))
	w.buf = b
	if w.framed {
		w.ends = append(w.ends, len(b))
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// setHeartbeat makes the writer send a heart-beat after d of write silence.
func (w *writer) setHeartbeat(d time.Duration) {
	select {
	case w.heartbeat <- d:
	default:
	}
}

// close stops accepting frames; the goroutine writes what is pending, then stops.
func (w *writer) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *writer) overloaded() bool { return w.pending.Load() > highWater }

func (w *writer) run() {
	defer close(w.done)
	var spare []byte
	var spareEnds []int
	var tick <-chan time.Time
	var interval time.Duration
	for {
		select {
		case <-w.wake:
		case d := <-w.heartbeat:
			if d > 0 {
				interval = d
				t := time.NewTicker(d / 2)
				defer t.Stop()
				tick = t.C
			}
			continue
		case <-tick:
			if time.Since(time.Unix(0, w.lastWrite.Load())) >= interval-interval/4 {
				b := w.lock()
				w.unlock(wire.AppendHeartbeat(b))
			}
			continue
		}
		w.mu.Lock()
		out, ends := w.buf, w.ends
		w.buf, w.ends = spare[:0], spareEnds[:0]
		closed := w.closed
		w.mu.Unlock()
		if len(out) > 0 && !w.failed.Load() {
			var err error
			if w.framed {
				start := 0
				for _, e := range ends {
					if _, err = w.conn.Write(out[start:e]); err != nil {
						break
					}
					start = e
				}
			} else {
				_, err = w.conn.Write(out)
			}
			if err != nil {
				w.failed.Store(true)
				// Unblock the reader: the connection is dead.
				_ = w.conn.Close()
			}
			w.lastWrite.Store(time.Now().UnixNano())
		}
		before := w.pending.Add(-int64(len(out))) + int64(len(out))
		if before > highWater && w.onDrain != nil && !w.overloaded() {
			w.onDrain()
		}
		if cap(out) > 1<<20 {
			out = nil
		}
		spare, spareEnds = out, ends
		if closed {
			w.mu.Lock()
			empty := len(w.buf) == 0
			w.mu.Unlock()
			if empty {
				return
			}
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}
}
