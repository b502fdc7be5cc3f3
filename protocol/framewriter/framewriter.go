package framewriter

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// HighWater is the unwritten output above which Overloaded reports true: consumers stop
// receiving until the client reads, or the core would fill our memory for a client that does
// not read. RabbitMQ gets the same effect from its writer's credit flow.
const HighWater = 4 << 20

// writeChunk is the most one write call takes, so that pending (and Overloaded) follows what a
// slow client reads: a 4 MB output written in one call to a client reading 4 MB/s showed no
// progress for a second, the queues feeding it (woken by OnDrain) delivered nothing
// meanwhile, and publisher flow control (broker.FlowGate) took the consumer for stalled. At
// 64 KiB a client reading 64 KB/s or more shows progress every second; a chunk costs one system
// call, which a flooded consumer connection spreads over some 60 deliveries of 1 KB.
const writeChunk = 64 << 10

// keepSpare bounds the buffers an idle writer keeps: a burst must not pin its memory once it
// is over. While output keeps coming, both buffers (the one being written and the one being
// appended to) are kept whatever their size, for releaseAfter: under a flood the pending output
// sits near HighWater, and dropping the written buffer after each write made every round grow
// a new one from nothing by append's doubling, which was most of a flooded consumer
// connection's CPU (runtime.memmove, memclr and the GC they cause; docs/performance.md run 10).
const keepSpare = 1 << 20

// releaseAfter is how often a writer holding a buffer above keepSpare checks whether it still
// needs it: it gives back what a burst grew once a whole period passed without a write above
// keepSpare, and keeps it otherwise (what is still in use is kept and checked again as long
// later). Giving the buffers back every period even while the flood went on made every period
// grow new ones from nothing by append's doubling, 10 % of a flooded 1p/1c consumer
// connection's CPU (docs/performance.md, brief E).
const releaseAfter = time.Second

// Options configure a Writer. Every field may be left zero.
type Options struct {
	// Framed writes each frame (each Lock/Unlock) with its own Write call.
	Framed bool
	// Heartbeat appends one heartbeat frame to b; SetHeartbeat uses it.
	Heartbeat func(b []byte) []byte
	// BeforeFlush runs on the writer goroutine, without the lock, before each write takes what
	// is pending: the place to append frames that are cheaper to emit together (AMQP publisher
	// confirms that complete close together leave as one basic.ack multiple=true).
	BeforeFlush func()
	// OnDrain runs on the writer goroutine after a write that took unwritten output from above
	// HighWater to below it, so consumers paused by Overloaded can resume.
	OnDrain func()
	// OnHeartbeatCheck runs on the writer goroutine at every heartbeat check (SetHeartbeat's
	// interval), the connection's one periodic timer: the place for the reader's liveness
	// check, so the reader needs no clock per frame.
	OnHeartbeatCheck func()
}

// Writer is a connection's socket writer; Run is its goroutine.
type Writer struct {
	conn net.Conn
	opt  Options

	mu     sync.Mutex
	buf    []byte
	ends   []int // framed: end offset of each frame in buf
	closed bool  // no more appends accepted; the goroutine drains then stops
	wake   chan struct{}

	done      chan struct{}
	heartbeat chan [2]time.Duration
	lastWrite atomic.Int64 // unix nanoseconds of the last socket write
	pending   atomic.Int64 // bytes appended and not yet written
	err       atomic.Value // first write error
}

// New returns a Writer for conn; start its goroutine with go w.Run().
func New(conn net.Conn, opt Options) *Writer {
	w := &Writer{
		conn:      conn,
		opt:       opt,
		buf:       make([]byte, 0, 4096),
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		heartbeat: make(chan [2]time.Duration, 1),
	}
	w.lastWrite.Store(time.Now().UnixNano())
	return w
}

// Lock returns the buffer to append one frame to; Unlock must follow with the extended buffer.
func (w *Writer) Lock() []byte {
	w.mu.Lock()
	return w.buf
}

// Unlock stores the buffer extended by one frame and wakes the goroutine. A frame appended
// after Close is dropped; what was pending before Close is still written. Nothing appended
// makes it a plain unlock (Lock then serves as the lock of state that encoding reads).
func (w *Writer) Unlock(b []byte) {
	if w.closed || len(b) == len(w.buf) {
		w.buf = b[:len(w.buf)]
		w.mu.Unlock()
		return
	}
	w.pending.Add(int64(len(b) - len(w.buf)))
	w.buf = b
	if w.opt.Framed {
		w.ends = append(w.ends, len(b))
	}
	w.mu.Unlock()
	w.Wake()
}

// Wake makes the goroutine run a flush (and BeforeFlush) soon.
func (w *Writer) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// SetHeartbeat makes the goroutine check the write silence every check and send a heartbeat
// frame (Options.Heartbeat) once it has lasted silence. Zero check turns nothing on.
func (w *Writer) SetHeartbeat(check, silence time.Duration) {
	select {
	case w.heartbeat <- [2]time.Duration{check, silence}:
	default:
	}
}

// Close stops accepting frames; the goroutine writes what is pending, then stops. It does not
// close the socket.
func (w *Writer) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.Wake()
}

// Done is closed when the goroutine has stopped.
func (w *Writer) Done() <-chan struct{} { return w.done }

// Overloaded reports whether unwritten output exceeds HighWater.
func (w *Writer) Overloaded() bool { return w.pending.Load() > HighWater }

// Err is the first write error, or nil.
func (w *Writer) Err() error {
	err, _ := w.err.Load().(error)
	return err
}

// LastWrite is when the socket was last written to.
func (w *Writer) LastWrite() time.Time { return time.Unix(0, w.lastWrite.Load()) }

// Run is the writer goroutine: it returns after Close once everything pending is written (or
// a write failed).
func (w *Writer) Run() {
	defer close(w.done)
	var spare []byte
	var spareEnds []int
	var tick <-chan time.Time
	var release <-chan time.Time // armed while a buffer above keepSpare is kept
	busy := false                // a write above keepSpare since release was armed
	var silence time.Duration
	for {
		select {
		case <-w.wake:
		case hb := <-w.heartbeat:
			if hb[0] > 0 && w.opt.Heartbeat != nil && tick == nil {
				t := time.NewTicker(hb[0])
				defer t.Stop()
				tick, silence = t.C, hb[1]
			}
			continue
		case <-release:
			release = nil
			if busy {
				// The flood goes on: keep the buffers, look again a period later.
				busy = false
				release = time.After(releaseAfter)
				continue
			}
			if cap(spare) > keepSpare {
				spare, spareEnds = nil, nil
			}
			w.mu.Lock()
			if len(w.buf) == 0 && cap(w.buf) > keepSpare {
				w.buf, w.ends = nil, nil
			}
			w.mu.Unlock()
			continue
		case <-tick:
			if w.opt.OnHeartbeatCheck != nil {
				w.opt.OnHeartbeatCheck()
			}
			if time.Since(w.LastWrite()) >= silence {
				b := w.Lock()
				w.Unlock(w.opt.Heartbeat(b))
			}
			continue
		}
		if w.opt.BeforeFlush != nil {
			w.opt.BeforeFlush()
		}
		w.mu.Lock()
		out, ends := w.buf, w.ends
		w.buf, w.ends = spare[:0], spareEnds[:0]
		closed := w.closed
		w.mu.Unlock()
		left := len(out)
		if left > 0 && w.Err() == nil {
			var err error
			if left, err = w.write(out, ends); err != nil {
				w.err.Store(err)
				// Unblock the reader: the connection is dead.
				_ = w.conn.Close()
			}
			w.lastWrite.Store(time.Now().UnixNano())
		}
		if left > 0 {
			w.wrote(left) // not written, and never will be
		}
		spare, spareEnds = out, ends
		if len(out) > keepSpare {
			busy = true
		}
		if release == nil && cap(spare) > keepSpare {
			// Give a burst's buffers back once it is over. Not at the first empty moment: a
			// flooded connection has one after every write (the queue refills the buffer only
			// once OnDrain has woken it), and dropping then was the churn keepSpare describes.
			release = time.After(releaseAfter)
		}
		if closed {
			w.mu.Lock()
			empty := len(w.buf) == 0
			w.mu.Unlock()
			if empty {
				return
			}
			w.Wake()
		}
	}
}

// write writes out, writeChunk at a time, or framed, one call per frame ending at ends. It
// returns how much of out it did not write (after an error).
func (w *Writer) write(out []byte, ends []int) (int, error) {
	if !w.opt.Framed {
		for len(out) > 0 {
			n := min(len(out), writeChunk)
			if _, err := w.conn.Write(out[:n]); err != nil {
				return len(out), err
			}
			w.wrote(n)
			out = out[n:]
		}
		return 0, nil
	}
	start := 0
	for _, e := range ends {
		if _, err := w.conn.Write(out[start:e]); err != nil {
			return len(out) - start, err
		}
		w.wrote(e - start)
		start = e
	}
	return 0, nil
}

// wrote takes n written bytes off pending, and runs OnDrain when that brings it below
// HighWater.
func (w *Writer) wrote(n int) {
	before := w.pending.Add(-int64(n)) + int64(n)
	if before > HighWater && w.opt.OnDrain != nil && !w.Overloaded() {
		w.opt.OnDrain()
	}
}
