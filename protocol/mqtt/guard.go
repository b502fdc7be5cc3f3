package mqtt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// errMalformed reports bytes that are not a well-formed MQTT packet.
var errMalformed = errors.New("mqtt: malformed packet")

// guardConn frames the client's byte stream into packets before mochi decodes them, and
// refuses the few malformed packets mochi's decoders would panic on (a SUBSCRIBE of MQTT 5
// whose last filter has no options byte indexes past the packet). A refused packet is a read
// error: mochi ends that connection, as for any other malformed packet. The packet size limit
// is checked here as well, before anything is allocated for the packet.
//
// Its read buffer costs an idle connection almost nothing: a read that may block (the
// previous one did not fill its buffer, so the socket had nothing more) goes into the small
// array inside the struct; only when a read fills its buffer, so that more bytes are likely
// waiting, does the next one borrow a readBufSize buffer from a pool, given back as soon as it
// is empty. A connection that only sends PINGREQ every keep-alive never holds one. The rest
// of a packet larger than what is buffered is read straight into the packet.
type guardConn struct {
	net.Conn
	buf     []byte // buffered bytes are buf[r:w]; small[:] or a pooled buffer
	r, w    int
	pooled  *[]byte // the pooled buffer buf is, if it is one
	full    bool    // the last read filled its buffer
	pending []byte  // the current packet, handed to mochi as it reads
	version byte    // from CONNECT
	max     uint32
	err     error
	// tooLarge, when set, is called (where next runs) before an over-size packet ends
	// the connection, so an MQTT 5 client is told why with DISCONNECT 0x95.
	tooLarge func()
	// sess is the connection's session once CONNECT opened it (set while a packet is handled,
	// see conn): its PUBACKs are settled before each read that may wait.
	sess *session
	// Writes. While held (a burst of the client's packets is being handled, conn.burst), what
	// mochi writes (PUBACK, PUBREC, SUBACK, ...) is appended to wbuf and goes out in one write
	// when the burst ends (flushHeld): ten publishers' PUBACKs were one write system call each,
	// about a third of Parley's CPU in QoS 1 fan-in. wmu orders every write to the socket.
	// held and holding are atomics so that the reader does not wait for wmu, which the session
	// writer holds while a write to a slow client blocks, unless the burst wrote something.
	wmu     sync.Mutex
	held    atomic.Bool // writes are held back
	holding atomic.Bool // wbuf has bytes (set under wmu)
	wbuf    *[]byte     // from writeBufs while bytes are held; wmu
	small   [smallReadSize]byte
}

const (
	// smallReadSize holds a PINGREQ, an acknowledgement or a small PUBLISH with its header.
	smallReadSize = 64
	readBufSize   = 16 << 10 // 4 KiB: two reads per 1 KB publish in fan-in (docs/performance.md, "MQTT fan-in")
)

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// heldWriteMax bounds what a burst holds back: a larger write, or one that would overflow it,
// sends what is held and itself at once.
const heldWriteMax = 4096

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, heldWriteMax); return &b }}

// closeFlushTimeout bounds the write of held bytes when another goroutine closes the
// connection (the DISCONNECT of a take-over, written while the connection's own burst runs).
const closeFlushTimeout = time.Second

// Write is how mochi writes a packet (cl.Net.Conn is the guardConn): held back while a burst
// runs, written at once otherwise.
func (g *guardConn) Write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if g.held.Load() && len(p) <= heldWriteMax {
		if g.wbuf == nil {
			g.wbuf = writeBufs.Get().(*[]byte)
		}
		if len(*g.wbuf)+len(p) <= heldWriteMax {
			*g.wbuf = append(*g.wbuf, p...)
			g.holding.Store(true)
			return len(p), nil
		}
	}
	if err := g.flushLocked(); err != nil {
		return 0, err
	}
	return g.Conn.Write(p)
}

// writeNow writes p at once, after what is held: the session writer's PUBLISH batches are not
// held back by a burst of the client's packets (a client that also subscribes), and a CONNACK
// held by the burst that read the CONNECT goes out before the first delivery.
func (g *guardConn) writeNow(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if err := g.flushLocked(); err != nil {
		return 0, err
	}
	return g.Conn.Write(p)
}

// hold starts holding writes back, for a burst.
func (g *guardConn) hold() { g.held.Store(true) }

// flushHeld ends the hold and writes what it kept. A failed write ends the connection, which
// its reader sees. (A write from another goroutine that saw the hold just before it ended may
// leave its bytes held after this: the next write, burst or Close sends them. Such writes are
// the DISCONNECT of a take-over or a shutdown, which a Close follows.)
func (g *guardConn) flushHeld() {
	g.held.Store(false)
	if !g.holding.Load() {
		return
	}
	g.wmu.Lock()
	_ = g.flushLocked()
	g.wmu.Unlock()
}

func (g *guardConn) flushLocked() error {
	if g.wbuf == nil {
		return nil
	}
	b := g.wbuf
	g.wbuf = nil
	g.holding.Store(false)
	var err error
	if len(*b) > 0 {
		_, err = g.Conn.Write(*b)
	}
	*b = (*b)[:0]
	writeBufs.Put(b)
	return err
}

// Close writes what is held (within closeFlushTimeout), then closes. A write in progress
// elsewhere (a session writer blocked on a client that does not read) is not waited for: the
// close is what ends it.
func (g *guardConn) Close() error {
	if g.wmu.TryLock() {
		g.held.Store(false)
		if g.wbuf != nil && len(*g.wbuf) > 0 {
			_ = g.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		}
		_ = g.flushLocked()
		g.wmu.Unlock()
	}
	return g.Conn.Close()
}

func newGuardConn(c net.Conn, maxPacket uint32) *guardConn {
	return &guardConn{Conn: c, max: maxPacket}
}

func (g *guardConn) Read(p []byte) (int, error) {
	if len(g.pending) == 0 {
		if g.err != nil {
			return 0, g.err
		}
		if err := g.next(); err != nil {
			g.err = err
			g.release()
			if len(g.pending) == 0 {
				return 0, err
			}
		}
	}
	n := copy(p, g.pending)
	g.pending = g.pending[n:]
	return n, nil
}

// release gives the pooled buffer back once nothing is buffered in it.
func (g *guardConn) release() {
	if g.pooled != nil && g.r == g.w {
		readBufs.Put(g.pooled)
		g.pooled, g.buf, g.r, g.w = nil, nil, 0, 0
	}
}

// fill reads more bytes from the connection into an empty buffer. (The acknowledgements of
// what was read before have been settled by then: conn.burst settles them before it hands back
// to the reader.)
func (g *guardConn) fill() error {
	g.release()
	if g.full && g.pooled == nil {
		g.pooled = readBufs.Get().(*[]byte)
		g.buf = *g.pooled
	} else if g.pooled == nil {
		g.buf = g.small[:]
	}
	g.r, g.w = 0, 0
	n, err := g.Conn.Read(g.buf)
	g.w = n
	g.full = n == len(g.buf)
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

func (g *guardConn) readByte() (byte, error) {
	if g.r == g.w {
		if err := g.fill(); err != nil {
			return 0, err
		}
	}
	b := g.buf[g.r]
	g.r++
	return b, nil
}

// packetAllocStep is how much of a packet's declared size is allocated before its bytes come:
// a larger packet's buffer grows as they arrive (at most doubling), so a client that declares
// the maximum packet size and sends nothing more costs this, not the maximum.
const packetAllocStep = 64 << 10

// readPacket returns the header followed by the n bytes after it: what is buffered, then
// straight from the connection.
//
//go:noinline
func (g *guardConn) readPacket(hdr []byte, n int) ([]byte, error) {
	pk := make([]byte, len(hdr), len(hdr)+min(n, packetAllocStep))
	copy(pk, hdr)
	want := len(hdr) + n
	m := min(n, g.w-g.r)
	pk = append(pk, g.buf[g.r:g.r+m]...)
	g.r += m
	if len(pk) == want {
		return pk, nil
	}
	// The packet was larger than the buffer: more is likely on its way.
	g.full = true
	for len(pk) < want {
		step := min(want-len(pk), max(len(pk), packetAllocStep))
		pk = slices.Grow(pk, step)
		if _, err := io.ReadFull(g.Conn, pk[len(pk):len(pk)+step]); err != nil {
			return nil, err
		}
		pk = pk[:len(pk)+step]
	}
	return pk, nil
}

// next reads one whole packet into pending. On a malformed packet it returns the error and
// passes on nothing of that packet.
func (g *guardConn) next() error {
	defer g.release()
	first, err := g.readByte()
	if err != nil {
		return err
	}
	// Malformed flags end the connection before its body is waited for, as mochi's reader did.
	var fh packets.FixedHeader
	if err := fh.Decode(first); err != nil {
		return err
	}
	var hdr [5]byte
	hdr[0] = first
	h := 1
	var remaining uint32
	for i := 0; ; i++ {
		b, err := g.readByte()
		if err != nil {
			return err
		}
		hdr[h] = b
		h++
		remaining |= uint32(b&0x7F) << (7 * i)
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return errLengthOverFour()
		}
	}
	if g.max > 0 && uint64(remaining)+uint64(h) > uint64(g.max) {
		if g.tooLarge != nil && g.version == 5 {
			g.tooLarge() // [MQTT-3.1.2-24] [MQTT-4.13.1-1]
		}
		return errOverMaximum(uint64(remaining) + uint64(h))
	}
	pk, err := g.readPacket(hdr[:h], int(remaining))
	if err != nil {
		return err
	}
	if err := g.inspect(first, pk[h:]); err != nil {
		return err
	}
	g.pending = pk
	return nil
}

// The error paths of next are functions of their own, and so are readPacket and inspect, so
// that next's frame stays small: it is on the stack of every idle connection (conn).

//go:noinline
func errLengthOverFour() error {
	return fmt.Errorf("%w: remaining length over four bytes", errMalformed)
}

//go:noinline
func errOverMaximum(n uint64) error {
	return fmt.Errorf("%w: packet of %d bytes over the maximum packet size", errMalformed, n)
}

// inspect reads the protocol version from a CONNECT and refuses the SUBSCRIBE shapes mochi's
// decoder mis-handles.
//
//go:noinline
func (g *guardConn) inspect(first byte, body []byte) error {
	switch first >> 4 {
	case 1: // CONNECT: protocol name, then the level
		if len(body) >= 2 {
			n := int(binary.BigEndian.Uint16(body))
			if len(body) > 2+n {
				g.version = body[2+n]
			}
		}
	case 8: // SUBSCRIBE
		if g.version == 5 && !wellFormedSubscribe5(body) {
			return fmt.Errorf("%w: SUBSCRIBE", errMalformed)
		}
	}
	return nil
}

// buffered reports whether a whole packet (or a header that next refuses without reading on)
// is already buffered, so that next returns without waiting for the client.
func (g *guardConn) buffered() bool {
	b := g.buf[g.r:g.w]
	var remaining uint64
	for i := 1; i < len(b); i++ {
		remaining |= uint64(b[i]&0x7F) << (7 * (i - 1))
		if b[i]&0x80 == 0 {
			h := uint64(i + 1)
			return uint64(len(b)) >= h+remaining || (g.max > 0 && h+remaining > uint64(g.max))
		}
		if i == 4 {
			return true // a length over four bytes: refused by next as it stands
		}
	}
	return false
}

// wellFormedSubscribe5 checks an MQTT 5 SUBSCRIBE body: packet id, properties, then filters
// each followed by its options byte [MQTT-3.8.3].
func wellFormedSubscribe5(b []byte) bool {
	if len(b) < 2 {
		return false
	}
	b = b[2:]
	n, used := binary.Uvarint(b)
	if used <= 0 || used > 4 || uint64(len(b)-used) < n {
		return false
	}
	b = b[used+int(n):]
	for len(b) > 0 {
		if len(b) < 2 {
			return false
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l+1 {
			return false
		}
		b = b[2+l+1:]
	}
	return true
}
