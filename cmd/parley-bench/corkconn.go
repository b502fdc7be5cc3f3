package main

import (
	"net"
	"sync"
)

// corkConn coalesces the load generator's own socket writes. amqp091-go flushes its buffered
// writer after every publish and every ack, so each message cost the client one write system
// call on the publishing connection and one on the consuming connection: half of
// parley-bench's CPU in a persistent-with-confirms run, taken from the broker it measures on
// the same cores. The broker receives exactly the same frames in the same order (every
// basic.publish, every single basic.ack); only the number of write calls that carry them
// changes, as Nagle's algorithm would do for a slower client.
//
// Writes made while the owner holds the cork (around its own publish or ack calls) are
// buffered; the owner calls flush before it waits for anything (a confirm window slot, the
// next delivery, a pacing nap), so nothing it wrote waits on the broker, and the buffer is
// also written out when it passes corkLimit. A message's latency starts at its stamp, before
// it is buffered, so any time it spends in the buffer is counted against the run, never
// hidden. Writes made without the cork held (the library's heartbeats, channel and
// connection methods, which may wait for a reply) go out at once, after what was buffered.
// Reads go through a readConn.
type corkConn struct {
	*readConn
	mu      sync.Mutex
	holding bool
	buf     []byte
	err     error // the first write error, returned by every later write and flush
}

const (
	// corkLimit bounds what a cork holds: about 15 messages of 1 KiB or 700 acks.
	corkLimit = 16 << 10
	readBuf   = 64 << 10
)

func newCorkConn(c net.Conn) *corkConn {
	return &corkConn{readConn: newReadConn(c), buf: make([]byte, 0, corkLimit)}
}

// readConn reads through a 64 KiB buffer: a burst of deliveries or confirms takes one read
// system call instead of one per three or four 1 KiB messages with amqp091-go's 4 KiB
// bufio.Reader, or three per packet with paho, which reads a packet's fixed header a byte at
// a time straight from the connection. A read returns as soon as anything has arrived, so
// nothing waits for the buffer to fill. Not for idle connections: the buffer is per connection.
type readConn struct {
	net.Conn
	// rbuf[r:w] is read from the socket but not yet by the library; only the library's reader
	// goroutine reads, so these need no lock.
	rbuf []byte
	r, w int
}

func newReadConn(c net.Conn) *readConn { return &readConn{Conn: c, rbuf: make([]byte, readBuf)} }

func (c *readConn) Read(p []byte) (int, error) {
	if c.r == c.w {
		if len(p) >= len(c.rbuf) {
			return c.Conn.Read(p)
		}
		n, err := c.Conn.Read(c.rbuf)
		if n <= 0 {
			return 0, err
		}
		c.r, c.w = 0, n
	}
	n := copy(p, c.rbuf[c.r:c.w])
	c.r += n
	return n, nil
}

// corkDial wraps dial so every connection it makes is a *corkConn, reported through made.
func corkDial(dial func(network, addr string) (net.Conn, error), made func(*corkConn)) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		c, err := dial(network, addr)
		if err != nil {
			return nil, err
		}
		cc := newCorkConn(c)
		made(cc)
		return cc, nil
	}
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.holding && len(c.buf)+len(p) <= corkLimit {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.err = err
	}
	return n, err
}

// hold runs f (a publish or an ack) with the cork held, so what it writes is buffered.
func (c *corkConn) hold(f func() error) error {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
	err := f()
	c.mu.Lock()
	c.holding = false
	c.mu.Unlock()
	return err
}

// flush writes out what the cork holds.
func (c *corkConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

func (c *corkConn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		c.err = err
	}
	return err
}
